"""Input checks and pixel conversions shared by every video tokenizer (LUMOS_SPEC §3.1).

Tokenizers take uint8 RGB video ``[N, H, W, 3]`` (or a batch ``[B, N, H, W, 3]``), scale pixels to [−1, 1] and
work channels-first ``[B, 3, N, H, W]``. Codes are int64 ``[F, h, w]`` (or ``[B, F, h, w]``) with
F = 1 + ceil((N − 1)/4), h = H/8, w = W/8. Bad input fails here with one ``ValueError`` naming the argument.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange


def as_tensor(x) -> torch.Tensor:
    """A numpy array or tensor as a tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"video must be a numpy array or torch tensor, got {type(x).__name__}")


def latent_frames(num_frames: int, temporal_compression: int = 4) -> int:
    """Causal temporal compression: N RGB frames → 1 + ceil((N − 1)/t) latent frames."""
    return 1 + -(-(int(num_frames) - 1) // temporal_compression)


def rgb_frames(num_latent: int, temporal_compression: int = 4) -> int:
    """Frames a decoder returns for ``num_latent`` latent frames: 1 + t·(F − 1)."""
    return 1 + temporal_compression * (int(num_latent) - 1)


def check_video(video, spatial_compression: int = 8) -> tuple[torch.Tensor, bool]:
    """Validate a uint8 RGB video and add a batch axis.

    Args:
        video: uint8 [N, H, W, 3] or [B, N, H, W, 3] (numpy or torch).
        spatial_compression: H and W must be multiples of this.

    Returns:
        (uint8 tensor [B, N, H, W, 3], whether the input had a batch axis).
    """
    x = as_tensor(video)
    if x.dtype != torch.uint8:
        raise ValueError(f"video must be uint8 RGB in [0, 255], got dtype {x.dtype}")
    if x.ndim not in (4, 5):
        raise ValueError(f"video must have shape [N,H,W,3] or [B,N,H,W,3], got {tuple(x.shape)}")
    if x.shape[-1] != 3:
        raise ValueError(f"video must have 3 (RGB) channels in its last axis, got shape {tuple(x.shape)}")
    batched = x.ndim == 5
    x = x if batched else x.unsqueeze(0)
    _, n, h, w, _ = x.shape
    if n < 1:
        raise ValueError("video must have at least one frame")
    if h % spatial_compression or w % spatial_compression or h == 0 or w == 0:
        raise ValueError(f"video height and width must be positive multiples of {spatial_compression}, "
                         f"got {h}x{w} (resize or crop first)")
    return x, batched


def check_codes(codes, codebook_size: int) -> tuple[torch.Tensor, bool]:
    """Validate integer codes and add a batch axis.

    Args:
        codes: int [F, h, w] or [B, F, h, w] (numpy or torch), values in [0, codebook_size).

    Returns:
        (int64 tensor [B, F, h, w], whether the input had a batch axis).
    """
    c = as_tensor(codes)
    if c.dtype.is_floating_point or c.dtype == torch.bool or c.is_complex():
        raise ValueError(f"codes must be an integer tensor, got dtype {c.dtype}")
    if c.ndim not in (3, 4):
        raise ValueError(f"codes must have shape [F,h,w] or [B,F,h,w], got {tuple(c.shape)}")
    c = c.long()
    if c.numel() == 0:
        raise ValueError(f"codes must not be empty, got shape {tuple(c.shape)}")
    lo, hi = int(c.min()), int(c.max())
    if lo < 0 or hi >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got values in [{lo}, {hi}]")
    batched = c.ndim == 4
    return (c if batched else c.unsqueeze(0)), batched


def in_chunks(fn, x: torch.Tensor, batch_size: int, batched: bool) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``batch_size`` along dim 0, concatenated; the batch dim dropped unless
    ``batched`` (the input was a single video or code grid)."""
    out = torch.cat([fn(chunk) for chunk in x.split(batch_size)])
    return out if batched else out[0]


def to_unit(video_u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, N, H, W, 3] → float [B, 3, N, H, W] in [−1, 1]."""
    x = rearrange(video_u8, "b n h w c -> b c n h w")  # (B, 3, N, H, W)
    return x.to(dtype) / 127.5 - 1.0


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """float [B, 3, N, H, W] in [−1, 1] → uint8 [B, N, H, W, 3] (clamped, rounded)."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "b c n h w -> b n h w c")  # (B, N, H, W, 3)
