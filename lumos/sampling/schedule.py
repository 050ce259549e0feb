"""Unmasking schedule of AR-DF inference (LUMOS_SPEC §8.2 step 4, §14.4).

* :func:`keep_masked_count` — how many tokens stay masked after step s of S (cosine schedule);
* :class:`NoiseTemperature` — the Gumbel noise temperature tau of the confidence per step, with upstream's exact
  decay (before the confidence, no reset between frames) as an option.

References: upstream ``inference_solver_vid.py`` / ``model/sampling.py`` (spec §8.2), MaskGIT's cosine schedule.
"""

from __future__ import annotations

import math


def keep_masked_count(num_tokens: int, step: int, steps: int, num_masked: int) -> int:
    """Tokens that remain masked after ``step`` (0-based) of ``steps``.

    m = floor(N · cos(π/2 · (s+1)/S)), then ``max(1, min(num_masked − 1, m))`` as upstream (so at least one token
    is revealed and one stays masked per step while more than one is left), and 0 at the last step.

    Args:
        num_tokens: N content tokens of the frame (h · w).
        step: s in 0..steps-1.
        steps: S steps per frame.
        num_masked: tokens still masked before this step.

    Returns:
        m, the number of lowest-confidence positions to re-mask.
    """
    if steps < 1 or not 0 <= step < steps:
        raise ValueError(f"step={step} must lie in [0, steps={steps})")
    if step == steps - 1 or num_masked <= 0:
        return 0
    m = math.floor(num_tokens * math.cos(math.pi / 2 * (step + 1) / steps))
    return max(1, min(num_masked - 1, m))


class NoiseTemperature:
    """Gumbel temperature tau used in ``confidence = log p(x) + tau · Gumbel``; call :meth:`for_step` once per step.

    Within a frame tau is annealed by ``tau ← tau · (1 − (s+1)/S)`` at every step s. Two variants (spec §8.2 step 4):

    * default: tau restarts at ``tau0`` at the start of every frame and is annealed AFTER step s's confidence, so
      step 0 uses ``tau0``, step 1 ``tau0·(1 − 1/S)``, …;
    * ``upstream_decay=True``: upstream's code exactly — annealed BEFORE the confidence (step 0 already uses
      ``tau0·(1 − 1/S)``, 0.98 for tau0 = 1 and S = 50; then 0.9408, …) and never reset, so it is 0 from the first
      frame's last step on (every later frame runs without noise).

    Args:
        tau0: starting temperature (``SamplerConfig.gumbel_tau``).
        upstream_decay: reproduce upstream's order (decay first) and its missing reset.
    """

    def __init__(self, tau0: float, upstream_decay: bool = False):
        self.tau0 = float(tau0)
        self.upstream_decay = upstream_decay
        self.value = self.tau0
        """The temperature that the next :meth:`for_step` call starts from."""

    def start_frame(self) -> None:
        """Called before the first step of every frame."""
        if not self.upstream_decay:
            self.value = self.tau0

    def for_step(self, step: int, steps: int) -> float:
        """The tau of step ``step`` (0-based) of ``steps``; advances the anneal by one step."""
        if not 0 <= step < steps:
            raise ValueError(f"step={step} must lie in [0, steps={steps})")
        decay = 1.0 - (step + 1) / steps
        if self.upstream_decay:
            self.value *= decay
            return self.value
        tau = self.value
        self.value *= decay
        return tau


__all__ = ["NoiseTemperature", "keep_masked_count"]
