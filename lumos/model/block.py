"""Decoder layer of the Lumos backbone (LUMOS_SPEC §2): pre-norm RMSNorm (fp32), attention, SwiGLU MLP.

``x + Attn(RMSNorm(x))`` then ``x + MLP(RMSNorm(x))`` with ``MLP = down(silu(gate(x)) * up(x))``, no biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lumos.config import ModelConfig
from lumos.model.attention import Attention, AttentionPlan


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to the input dtype before the (learned) scale."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> [..., D]."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down (residual projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """One pre-norm decoder layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan,
                cache=None, layer: int = 0) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]."""
        x = x + self.attention(self.attention_norm(x), cos, sin, plan, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


__all__ = ["FeedForward", "RMSNorm", "TransformerBlock"]
