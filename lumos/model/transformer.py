"""LumosModel: the Chameleon/Llama-style decoder over the merged text + visual vocabulary (LUMOS_SPEC §2).

token embedding (untied) → n_layers × TransformerBlock → final RMSNorm → lm_head (no bias), with MM-RoPE
(:mod:`lumos.rope`) and causal ∪ same-frame attention (:mod:`lumos.model.attention`). Weight init follows nanoGPT:
N(0, 0.02) everywhere, residual projections (attention ``wo``, MLP ``w2``) scaled by 1/sqrt(2 n_layers).

References: upstream ``ChameleonMMRoPEForConditionalGeneration`` (spec §2); nanoGPT ``GPT``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lumos.config import ModelConfig
from lumos.model.attention import AttentionPlan
from lumos.model.block import RMSNorm, TransformerBlock
from lumos.model.kv_cache import KVCache
from lumos.rope import RotaryEmbedding
from lumos.sequence import TokenSequence, collate_sequences

INPUT_NAMES = ("ids", "frame_ids", "coords", "visual", "pos1d", "p0")


class LumosModel(nn.Module):
    """The Lumos-1 backbone.

    Args:
        cfg: model configuration (sizes, vocabulary layout, RoPE variant, activation checkpointing).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_variant, cfg.temporal_compression,
                                    cfg.spatial_compression)
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, init_std) for linear/embedding weights; residual projections / sqrt(2 n_layers); norms 1/0."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers))
            elif name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith("norm.bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, std)

    def compile_blocks(self, **kwargs) -> None:
        """``torch.compile`` (Inductor) each decoder layer in place: fuses RMSNorm, QK-norm, MM-RoPE and SwiGLU's
        elementwise work around the matmuls. Parameter names and the state dict stay as they are. Training only
        (the sampler's cached calls change shape every step); the first steps pay for the compilation, and on CPU
        Inductor needs a C++ compiler. ``kwargs`` go to ``nn.Module.compile``."""
        for layer in self.layers:
            layer.compile(**kwargs)

    def new_cache(self) -> KVCache:
        """An empty :class:`KVCache` for this model."""
        return KVCache(self.cfg.n_layers)

    def forward(self, ids: torch.Tensor, frame_ids: torch.Tensor, coords: torch.Tensor, visual: torch.Tensor,
                pos1d: torch.Tensor, p0: torch.Tensor | int, cache: KVCache | None = None,
                return_hidden: bool = False) -> torch.Tensor:
        """Run the decoder over new tokens (appended to ``cache`` when given).

        Args:
            ids: int [B, L] token ids.
            frame_ids: int [B, L] latent frame index per token, -1 outside frame segments (and for padding).
            coords: int [B, L, 3] (f, r, c) of visual tokens.
            visual: bool [B, L] frame content + newline tokens.
            pos1d: int [B, L] global sequence index (continues the cached prefix).
            p0: int [B] (or an int) index of the first visual token of each row.
            cache: optional KVCache; new queries see every cached key plus the new tokens under
                causal ∪ same-frame, and the new keys/values are appended.
            return_hidden: return the final-norm hidden states instead of logits.

        Returns:
            float32 logits [B, L, V], or hidden states [B, L, D] (after the final RMSNorm, so that
            ``lm_head(hidden) == logits``) when ``return_hidden``.
        """
        p0 = self._check_inputs(ids, frame_ids, coords, visual, pos1d, p0)
        x = self.tok_embeddings(ids)  # (B, L, D)
        cos, sin = self.rope(pos1d, coords, visual, p0)  # (B, L, hd) each, float32
        plan = self._plan(frame_ids, cache)
        ckpt = self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled() and cache is None
        for i, layer in enumerate(self.layers):
            if ckpt:
                x = checkpoint(layer, x, cos, sin, plan, use_reentrant=False)
            else:
                x = layer(x, cos, sin, plan, cache, i)
        if cache is not None:
            cache.commit(frame_ids)
        x = self.norm(x)
        return x if return_hidden else self.lm_head(x).float()

    def _plan(self, frame_ids: torch.Tensor, cache: KVCache | None) -> AttentionPlan:
        if cache is None or cache.length == 0:
            return AttentionPlan.build(frame_ids, 0)
        if cache.batch_size != frame_ids.shape[0]:
            raise ValueError(f"cache holds batch size {cache.batch_size}, got ids with {frame_ids.shape[0]} rows")
        keys = torch.cat([cache.frame_ids.to(frame_ids.device), frame_ids.long()], 1)  # (B, Lc + L)
        return AttentionPlan.build(keys, cache.length)

    def _check_inputs(self, ids, frame_ids, coords, visual, pos1d, p0) -> torch.Tensor:
        if ids.dim() != 2:
            raise ValueError(f"ids must be [B, L], got shape {tuple(ids.shape)}")
        for name, t in (("frame_ids", frame_ids), ("visual", visual), ("pos1d", pos1d)):
            if t.shape != ids.shape:
                raise ValueError(f"{name} must have the shape of ids {tuple(ids.shape)}, got {tuple(t.shape)}")
        if coords.shape != (*ids.shape, 3):
            raise ValueError(f"coords must be [B, L, 3], got shape {tuple(coords.shape)}")
        p0 = torch.as_tensor(p0, dtype=torch.long, device=ids.device)
        if p0.dim() == 0:
            p0 = p0.expand(ids.shape[0])
        if p0.shape != (ids.shape[0],):
            raise ValueError(f"p0 must be [B]={ids.shape[0]}, got shape {tuple(p0.shape)}")
        return p0

    def visual_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the visual codebook only: hidden [..., D] (final-norm states) -> float32 [..., C].

        Multiplies by the ``codebook_size`` visual rows of ``lm_head`` only (never the full vocabulary).
        """
        lo = self.layout.visual_offset
        w = self.lm_head.weight[lo:lo + self.layout.codebook_size]  # (C, D)
        return torch.nn.functional.linear(hidden, w).float()

    def forward_sequences(self, seqs: list[TokenSequence], cache: KVCache | None = None,
                          return_hidden: bool = False) -> torch.Tensor:
        """Convenience: right-pad ``seqs`` with :func:`lumos.sequence.collate_sequences` and run :meth:`forward`.

        Returns:
            logits [B, Lmax, V] (positions beyond a row's length are padding).
        """
        device = self.lm_head.weight.device
        batch = collate_sequences(seqs, pad_id=self.layout.pad)
        inputs = {k: batch[k].to(device) for k in INPUT_NAMES}
        return self(**inputs, cache=cache, return_hidden=return_hidden)


__all__ = ["INPUT_NAMES", "LumosModel"]
