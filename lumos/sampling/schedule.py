"""Unmasking schedule of AR-DF inference (LUMOS_SPEC §8.2 step 4, §14.4).

* :func:`keep_masked_count` — how many tokens stay masked after step s of S (cosine schedule);
* :class:`NoiseTemperature` — the Gumbel noise temperature tau of the confidence, with upstream's decay quirk as an
  option.

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
    """Gumbel temperature tau used in ``confidence = log p(x) + tau · Gumbel``.

    Within a frame tau is annealed after every step: ``tau ← tau · (1 − (s+1)/S)`` (so it reaches 0 at the last
    step). Upstream never resets it between frames, so every frame after the first runs without noise; that quirk
    is ``upstream_decay=True``. By default tau restarts at ``tau0`` at the start of every frame.

    Args:
        tau0: starting temperature (``SamplerConfig.gumbel_tau``).
        upstream_decay: reproduce upstream's missing reset.
    """

    def __init__(self, tau0: float, upstream_decay: bool = False):
        self.tau0 = float(tau0)
        self.upstream_decay = upstream_decay
        self.value = self.tau0

    def start_frame(self) -> None:
        """Called before the first step of every frame."""
        if not self.upstream_decay:
            self.value = self.tau0

    def after_step(self, step: int, steps: int) -> None:
        """Anneal after step ``step`` of ``steps``: tau ← tau · (1 − (step+1)/steps)."""
        self.value *= 1.0 - (step + 1) / steps


__all__ = ["NoiseTemperature", "keep_masked_count"]
