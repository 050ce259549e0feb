"""Masks of AR-DF (LUMOS_SPEC §6, §7.2, §8.2): attention dependency, training masks, inference history masks.

Convention: in every boolean mask here ``True`` means "may attend" (attention masks) or "is masked / replaced by
MASK" (token masks). All randomness comes from an explicit ``torch.Generator``; nothing reads global RNG state.

* :func:`attention_mask` — the dense reference of the model's attention (causal everywhere, bidirectional within
  a frame segment BOI..EOI). The model never builds it on the training path (see :mod:`lumos.model.attention`).
* :func:`tube_mask` — AR-DF temporal tube: one spatial pattern repeated in every frame (spec §7.2).
* :func:`random_mask`, :func:`diffusion_forcing_mask` — the ablation masks (spec §7.2, §10.5).
* :func:`sample_mask_ratio` — rho = max(cos(pi U / 2), min_ratio).
* :func:`history_indices` — the inference-time partial-context pattern (spec §8.2 step 5).
"""

from __future__ import annotations

import math

import torch


def attention_mask(frame_ids: torch.Tensor) -> torch.Tensor:
    """Dense causal ∪ same-frame-segment mask (DESIGN §4.7).

    Args:
        frame_ids: int [L] (or [B, L]) latent frame index of each token, -1 outside frame segments.

    Returns:
        bool [L, L] (or [B, L, L]); ``[i, j]`` True when query i may attend key j.
    """
    L = frame_ids.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=frame_ids.device).tril()
    fi, fj = frame_ids.unsqueeze(-1), frame_ids.unsqueeze(-2)  # (..., L, 1), (..., 1, L)
    same_frame = (fi == fj) & (fi >= 0)
    return causal | same_frame


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio={ratio} must be in [0, 1]")


def _num_masked(n: int, ratio: float) -> int:
    """round(n * ratio), at least 1 (spec §7.2) and at most n."""
    return min(n, max(1, round(n * ratio)))


def tube_mask(num_frames: int, tokens_per_frame: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Temporal tube mask: the same round(N * ratio) (≥ 1) positions masked in every frame.

    Args:
        num_frames: F latent frames.
        tokens_per_frame: N maskable positions per frame (content + newline tokens).
        ratio: mask ratio in [0, 1].
        generator: source of randomness.

    Returns:
        bool [F, N], True = masked; every row is identical.
    """
    _check_ratio(ratio)
    if num_frames < 1 or tokens_per_frame < 1:
        raise ValueError(f"need num_frames >= 1 and tokens_per_frame >= 1, got {num_frames}, {tokens_per_frame}")
    perm = torch.randperm(tokens_per_frame, generator=generator)
    pattern = torch.zeros(tokens_per_frame, dtype=torch.bool)
    pattern[perm[:_num_masked(tokens_per_frame, ratio)]] = True
    return pattern.unsqueeze(0).expand(num_frames, tokens_per_frame).clone()


def random_mask(num_frames: int, tokens_per_frame: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Independent positions over the whole video with one global ratio (ablation "random").

    Returns:
        bool [F, N] with round(F * N * ratio) (≥ 1) True entries.
    """
    _check_ratio(ratio)
    n = num_frames * tokens_per_frame
    if n < 1:
        raise ValueError("need num_frames >= 1 and tokens_per_frame >= 1")
    flat = torch.zeros(n, dtype=torch.bool)
    flat[torch.randperm(n, generator=generator)[:_num_masked(n, ratio)]] = True
    return flat.view(num_frames, tokens_per_frame)


def diffusion_forcing_mask(num_frames: int, tokens_per_frame: int, min_ratio: float,
                           generator: torch.Generator) -> torch.Tensor:
    """Independent ratio (same schedule as :func:`sample_mask_ratio`) and positions per frame (ablation
    "DiffForcing").

    Returns:
        bool [F, N].
    """
    rows = []
    for _ in range(num_frames):
        ratio = sample_mask_ratio(generator, min_ratio)
        rows.append(tube_mask(1, tokens_per_frame, ratio, generator)[0])
    if not rows:
        raise ValueError("need num_frames >= 1")
    return torch.stack(rows)


def sample_mask_ratio(generator: torch.Generator, min_ratio: float = 0.7) -> float:
    """rho = max(cos(pi * U / 2), min_ratio), U ~ U(0, 1) (spec §7.2)."""
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio={min_ratio} must be in [0, 1]")
    u = float(torch.rand((), generator=generator))
    return max(math.cos(math.pi * u / 2), min_ratio)


def history_indices(n: int, ratio: float, mode: str = "even", generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Positions of a committed frame's content span replaced by MASK at inference (spec §8.2 step 5).

    Args:
        n: length of the frame's content span (rows * (cols + 1)).
        ratio: fraction to mask; num = round(n * ratio).
        mode: ``"even"`` — evenly spaced round(k * n / num), k = 0..num-1 (upstream, fixed per video);
            ``"random"`` — a random subset (needs ``generator``).
        generator: randomness for ``mode="random"``.

    Returns:
        int64 [num], sorted ascending, unique.
    """
    _check_ratio(ratio)
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    num = round(n * ratio)
    if num == 0:
        return torch.zeros(0, dtype=torch.long)
    if mode == "even":
        idx = torch.round(torch.arange(num, dtype=torch.float64) * n / num).long()
        return idx.clamp_(max=n - 1)
    if mode == "random":
        if generator is None:
            raise ValueError("history_indices(mode='random') needs a generator")
        return torch.randperm(n, generator=generator)[:num].sort().values
    raise ValueError(f"mode={mode!r} must be 'even' or 'random'")


__all__ = ["attention_mask", "diffusion_forcing_mask", "history_indices", "random_mask", "sample_mask_ratio",
           "tube_mask"]
