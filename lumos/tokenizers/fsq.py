"""Finite Scalar Quantization (FSQ) with a straight-through estimator.

Implements the quantizer of the discrete Cosmos tokenizers (LUMOS_SPEC §3.1: levels [8,8,8,5,5,5] ⇒ 64,000 codes)
after Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple" (arXiv 2309.15505): each latent channel i is
squashed with tanh to ``levels[i]`` values and rounded; the code index is the mixed-radix number of the per-channel
digits (channel 0 is the least significant digit).

Presets (what ``lumos/config.py``'s model presets expect): ``debug`` [8,6,5] = 240 codes, ``small`` [8,5,5,5] =
1,000 codes, ``full`` [8,8,8,5,5,5] = 64,000 codes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FSQ_LEVELS = {"debug": (8, 6, 5), "small": (8, 5, 5, 5), "full": (8, 8, 8, 5, 5, 5)}


def codebook_size(levels: tuple[int, ...] | list[int]) -> int:
    """Number of codes of an FSQ with these levels (the product of the levels)."""
    return math.prod(int(v) for v in levels)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient (identity in the backward pass)."""
    return x + (torch.round(x) - x).detach()


class FSQ(nn.Module):
    """Finite scalar quantizer over the channel dimension (last axis).

    Args:
        levels: number of quantization levels per channel, each ≥ 2.
        eps: keeps tanh away from its asymptotes so every level is reachable.
    """

    def __init__(self, levels: tuple[int, ...] | list[int], eps: float = 1e-3):
        super().__init__()
        if not levels or any(int(v) < 2 for v in levels):
            raise ValueError(f"levels must be a non-empty list of integers >= 2, got {list(levels)}")
        self.levels = tuple(int(v) for v in levels)
        self.eps = eps
        lv = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), dim=0)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    @property
    def dim(self) -> int:
        """Number of latent channels the quantizer expects."""
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return codebook_size(self.levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash ``z`` so that rounding yields ``levels[i]`` integer values per channel.

        Args:
            z: float [..., dim].

        Returns:
            float [..., dim], in (−L/2, L/2) (shifted by half a step for even L).
        """
        half_l = (self._levels - 1) * (1 - self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Quantize with a straight-through estimator.

        Args:
            z: float [..., dim] unbounded latents.

        Returns:
            float [..., dim], each channel on the grid {−1, …, 1} (``q / (L // 2)``).
        """
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must have {self.dim} channels in its last axis, got shape {tuple(z.shape)}")
        half_width = (self._levels // 2).to(z.dtype)
        return round_ste(self.bound(z.float())).to(z.dtype) / half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized codes [..., dim] (values from :meth:`quantize`) → int64 indices [...]."""
        half_width = self._levels // 2
        digits = torch.round(codes.float() * half_width + half_width).long()
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """int indices [...] in [0, codebook_size) → float codes [..., dim]."""
        idx = indices.long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        digits = (idx.unsqueeze(-1) // self._basis) % self._levels.long()
        half_width = self._levels // 2
        return (digits - half_width).float() / half_width

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize and index.

        Args:
            z: float [..., dim].

        Returns:
            (codes float [..., dim] with straight-through gradients, indices int64 [...]).
        """
        codes = self.quantize(z)
        return codes, self.codes_to_indices(codes.detach())
