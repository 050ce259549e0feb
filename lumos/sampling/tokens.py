"""Token-choice helpers of the samplers: classifier-free guidance, temperature / top-k, multinomial sampling,
Gumbel confidence and re-masking (LUMOS_SPEC §8.2 step 4, §14.4).

Small pure functions over logits restricted to the visual codebook (the samplers only ever compute the
``codebook_size`` visual columns of the head, which is the spec's "non-visual vocabulary set to −inf"). Every random
draw takes an explicit ``torch.Generator``.

References: lucidrains ``muse-maskgit-pytorch`` (``gumbel_noise``, ``top_k``), upstream ``model/sampling.py``.
"""

from __future__ import annotations

import torch


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor | None, scale: float) -> torch.Tensor:
    """Classifier-free guidance l = l_u + g · (l_c − l_u).

    Written as ``l_c + (g − 1) · (l_c − l_u)`` (the same value) so that g = 1 returns ``cond`` bit-exactly.

    Args:
        cond: float [..., C] conditional logits.
        uncond: float [..., C] unconditional logits, or ``None`` (no guidance: returns ``cond``).
        scale: guidance scale g.

    Returns:
        float [..., C].
    """
    if uncond is None:
        return cond
    return cond + (scale - 1.0) * (cond - uncond)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """Divide by ``temperature`` and keep only the ``top_k`` largest logits per row (others −inf).

    Args:
        logits: float [..., C].
        temperature: > 0.
        top_k: keep this many per row; ``None`` or ≥ C keeps all.

    Returns:
        float [..., C].
    """
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    out = logits / temperature if temperature != 1.0 else logits
    if top_k is not None and top_k < out.shape[-1]:
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        kth = out.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        out = out.masked_fill(out < kth, float("-inf"))
    return out


def sample_tokens(logits: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial sample per row (inverse CDF of one uniform draw per row) and its log-probability.

    Inverse-CDF sampling is exact and ~3× cheaper on CPU than ``torch.multinomial`` for thousands of rows.

    Args:
        logits: float [M, C] (−inf allowed, not a whole row).
        generator: randomness (one uniform per row).

    Returns:
        (int64 [M] sampled column, float32 [M] log p of it).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (M, C)
    cdf = logp.exp().cumsum(dim=-1)  # (M, C)
    u = torch.rand(logp.shape[0], 1, generator=generator, device=logp.device) * cdf[:, -1:]  # (M, 1)
    x = torch.searchsorted(cdf, u, right=True).clamp_(max=logp.shape[1] - 1)  # first column with cdf > u
    return x.squeeze(1), logp.gather(1, x).squeeze(1)


def gumbel_noise(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard Gumbel samples −log(−log U), float32 [n]."""
    u = torch.rand(n, generator=generator, device=device).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def remask_lowest(confidence: torch.Tensor, m: int) -> torch.Tensor:
    """Indices of the ``m`` lowest confidences (stable: ties keep the lower index first).

    Args:
        confidence: float [M] confidences of the still-masked positions.
        m: how many to re-mask (0 ≤ m ≤ M).

    Returns:
        int64 [m] indices into ``confidence``.
    """
    if m == 0:
        return torch.zeros(0, dtype=torch.long, device=confidence.device)
    return torch.argsort(confidence, stable=True)[:m]


__all__ = ["filter_logits", "gumbel_noise", "guided_logits", "remask_lowest", "sample_tokens"]
