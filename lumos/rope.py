"""MM-RoPE and the rotary ablation variants (LUMOS_SPEC §5, §14.1–14.2).

Convention (HF "rotate_half", needed to load released weights, spec §2): channel i is paired with channel
i + hd/2, and the cos/sin tables are ``cat(freqs, freqs)``. Each rotary frequency index j in 0..hd/2-1 is owned
by one position axis (t, h or w); its angle is ``pos[axis(j)] * omega_j`` with ``omega_j = theta**(-2j/hd)``.

Every token carries three positions (t, h, w):

* non-visual tokens (text, BOS, separators, frame headers, EOI, padding): ``t = h = w = pos1d`` — so every
  channel sees the 1D index and the text path is bit-identical to vanilla 1D RoPE;
* visual tokens (frame content + row newlines), coords (f, r, c): depends on the variant:

| variant | channel → axis | visual (t, h, w) |
|---|---|---|
| ``mm`` (MM-RoPE, default) | distributed: j mod 16 ∈ {0-3}→t, {4,5,8,9,12,13}→h, {6,7,10,11,14,15}→w | p0 + (4f, 8r, 8c) |
| ``mm_noscale`` | distributed | p0 + (f, r, c) |
| ``mm_nodist`` | contiguous 2:3:3 (low j → t) | p0 + (4f, 8r, 8c) |
| ``3d`` (naive 3D RoPE) | contiguous 2:3:3 | (f, r, c) — from 0, no offset, no scale |
| ``mrope`` (Qwen2-VL M-RoPE) | contiguous 2:3:3 | p0 + (f, r, c) |
| ``1d`` | — | pos1d on every channel |

Strides 4/8/8 are ``ModelConfig.temporal_compression`` / ``spatial_compression``. ``p0`` is the sequence index of
the first visual token (:attr:`lumos.sequence.TokenSequence.p0`). For ``mrope`` the special tokens after a frame
keep their global 1D index (Qwen2-VL would restart text at max(position)+1); only relative positions among text
tokens matter, and this keeps positions a pure function of per-token inputs, as the KV cache needs.

References: upstream ``ChameleonRotaryEmbedding`` / ``generate_mm_position_ids`` (spec §5); Qwen2-VL M-RoPE.
"""

from __future__ import annotations

import torch

_T_SLOTS = {0, 1, 2, 3}
_H_SLOTS = {4, 5, 8, 9, 12, 13}
_AXIS_INDEX = {"t": 0, "h": 1, "w": 2}
DISTRIBUTED = ("mm", "mm_noscale")
CONTIGUOUS = ("3d", "mrope", "mm_nodist")
SCALED = ("mm", "mm_nodist")


def mm_rope_axes(head_dim: int) -> list[str]:
    """Axis owning each rotary frequency index j = 0..head_dim/2-1 under MM-RoPE (spec §5.1).

    Args:
        head_dim: attention head dimension, a multiple of 32 (blocks of 16 frequencies).

    Returns:
        A list of ``head_dim // 2`` strings, each ``"t"``, ``"h"`` or ``"w"``.
    """
    if head_dim <= 0 or head_dim % 32:
        raise ValueError(f"head_dim={head_dim} must be a positive multiple of 32 for MM-RoPE")
    out = []
    for j in range(head_dim // 2):
        m = j % 16
        out.append("t" if m in _T_SLOTS else "h" if m in _H_SLOTS else "w")
    return out


def contiguous_axes(head_dim: int) -> list[str]:
    """Contiguous 2:3:3 split of the head_dim/2 frequencies: lowest indices (highest frequencies) → t, then h,
    then w (naive 3D RoPE / M-RoPE / MM-RoPE w/o distribution)."""
    n = head_dim // 2
    nt = round(n * 2 / 8)
    nh = round(n * 3 / 8)
    return ["t"] * nt + ["h"] * nh + ["w"] * (n - nt - nh)


def axis_table(head_dim: int, variant: str) -> torch.Tensor:
    """Index (0=t, 1=h, 2=w) of the axis owning each frequency, for ``variant``.

    Returns:
        int64 [head_dim // 2].
    """
    if variant in DISTRIBUTED:
        axes = mm_rope_axes(head_dim)
    elif variant in CONTIGUOUS or variant == "1d":
        axes = contiguous_axes(head_dim)  # irrelevant for 1d: all three positions are equal
    else:
        raise ValueError(f"unknown rope_variant {variant!r}")
    return torch.tensor([_AXIS_INDEX[a] for a in axes], dtype=torch.long)


def inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """omega_j = theta^(-2j/head_dim), j = 0..head_dim/2-1 (float32, as in HF Llama/Chameleon)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_positions(pos1d: torch.Tensor, coords: torch.Tensor, visual: torch.Tensor, p0: torch.Tensor, *,
                   variant: str = "mm", temporal_stride: int = 4, spatial_stride: int = 8) -> torch.Tensor:
    """Per-token (t, h, w) rotary positions.

    Args:
        pos1d: int [B, L] global sequence index of each token.
        coords: int [B, L, 3] (f, r, c) of visual tokens (ignored elsewhere).
        visual: bool [B, L] frame content + newline tokens.
        p0: int [B] index of the first visual token of each row.
        variant: one of ``mm``, ``1d``, ``3d``, ``mrope``, ``mm_noscale``, ``mm_nodist``.
        temporal_stride, spatial_stride: position multipliers of the scaled variants.

    Returns:
        int64 [B, L, 3].
    """
    pos = pos1d.long().unsqueeze(-1).expand(*pos1d.shape, 3)  # (B, L, 3)
    if variant == "1d":
        return pos.clone()
    coords = coords.long()
    if variant in SCALED:
        stride = torch.tensor([temporal_stride, spatial_stride, spatial_stride], device=coords.device)
        vis = p0.long().view(-1, 1, 1) + coords * stride
    elif variant == "3d":
        vis = coords
    elif variant in ("mrope", "mm_noscale"):
        vis = p0.long().view(-1, 1, 1) + coords
    else:
        raise ValueError(f"unknown rope_variant {variant!r}")
    return torch.where(visual.unsqueeze(-1), vis, pos)


def rope_angles(positions: torch.Tensor, axes: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """angle[b, l, j] = positions[b, l, axes[j]] * freqs[j] (spec §14.1).

    Args:
        positions: int [B, L, 3] (t, h, w) positions.
        axes: int64 [hd/2] axis index per frequency.
        freqs: float32 [hd/2] inverse frequencies.

    Returns:
        float32 [B, L, hd/2].
    """
    per_freq = positions.index_select(-1, axes.to(positions.device))  # (B, L, hd/2)
    return per_freq.float() * freqs.to(positions.device)


def cos_sin(angles: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half cos/sin tables ``cat(angles, angles)``: [B, L, hd/2] -> two [B, L, hd]."""
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, nh, L, hd] by cos/sin [B, L, hd] (computed in float32, returned in x.dtype)."""
    xf = x.float()
    c, s = cos.unsqueeze(1).float(), sin.unsqueeze(1).float()  # (B, 1, L, hd)
    return (xf * c + rotate_half(xf) * s).to(x.dtype)


class RotaryEmbedding(torch.nn.Module):
    """Builds the cos/sin tables of one model from per-token position inputs (no learnable state)."""

    def __init__(self, head_dim: int, theta: float, variant: str = "mm", temporal_stride: int = 4,
                 spatial_stride: int = 8):
        super().__init__()
        self.variant = variant
        self.temporal_stride = temporal_stride
        self.spatial_stride = spatial_stride
        self.register_buffer("freqs", inv_freq(head_dim, theta), persistent=False)
        self.register_buffer("axes", axis_table(head_dim, variant), persistent=False)

    def forward(self, pos1d: torch.Tensor, coords: torch.Tensor, visual: torch.Tensor,
                p0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin float32 [B, L, hd] for the given tokens (see :func:`rope_positions`)."""
        positions = rope_positions(pos1d, coords, visual, p0, variant=self.variant,
                                   temporal_stride=self.temporal_stride, spatial_stride=self.spatial_stride)
        return cos_sin(rope_angles(positions, self.axes, self.freqs))


__all__ = ["RotaryEmbedding", "apply_rotary", "axis_table", "contiguous_axes", "cos_sin", "inv_freq",
           "mm_rope_axes", "rope_angles", "rope_positions", "rotate_half"]
