"""Model and AR-DF configuration dataclasses, with named presets (``debug``, ``small``, ``1b``, ``3b``).

Upstream sizes for the 1B/3B checkpoints are UNCONFIRMED (LUMOS_SPEC §2, §13.8); the ``1b``/``3b`` presets are our
choice, sized so that their parameter counts (incl. the 129,536-row untied embedding and lm_head) land near the
published 1B / 3.6B, with head_dim 128 (a multiple of 32, as MM-RoPE needs):

| preset | dim | layers | heads (kv) | ffn | vocab | params |
|---|---|---|---|---|---|---|
| debug | 64 | 2 | 2 (1) | 176 | compact, 240 codes | ~0.1 M |
| small | 256 | 6 | 4 (4) | 688 | compact, 1,000 codes | ~5 M |
| 1b | 2048 | 16 | 16 (16) | 5632 | chameleon 129,536 | ~1.4 B |
| 3b | 3072 | 26 | 24 (8) | 8192 | chameleon 129,536 | ~3.4 B |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lumos.vocab import VocabLayout, build_layout

ROPE_VARIANTS = ("mm", "1d", "3d", "mrope", "mm_noscale", "mm_nodist")
MASK_TYPES = ("tube", "random", "diffusion_forcing")
LOSS_WEIGHTINGS = ("none", "code_frequency")


@dataclass(kw_only=True)
class ModelConfig:
    """Decoder-only Llama/Chameleon-style transformer over the merged vocabulary."""

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    n_kv_heads: int | None = None
    """Key/value heads for GQA; ``None`` = ``n_heads``."""
    ffn_dim: int = 176
    norm_eps: float = 1e-5
    qk_norm: bool = True
    """Chameleon QK-norm: LayerNorm over head_dim with one weight/bias shared by all heads."""
    qk_norm_per_head: bool = False
    """QK-norm weight/bias per head ([n_heads | n_kv_heads, head_dim], the HF transformers Chameleon layout)
    instead of one [head_dim] shared by all heads (Lumos-1, model_parallel_size 1). Set by the HF loader."""
    rope_theta: float = 10000.0
    rope_variant: str = "mm"
    """One of ``mm`` (MM-RoPE, default), ``1d``, ``3d``, ``mrope``, ``mm_noscale``, ``mm_nodist``."""
    temporal_compression: int = 4
    """Position stride per latent frame (Cosmos temporal compression)."""
    spatial_compression: int = 8
    """Position stride per latent row/column (Cosmos spatial compression)."""
    vocab: str = "compact"
    """Vocabulary layout name: ``compact`` or ``chameleon``."""
    codebook_size: int = 240
    """Visual codes of the video tokenizer this model is paired with."""
    max_seq_len: int = 65536
    activation_checkpointing: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.dim % self.n_heads:
            raise ValueError(f"model.dim={self.dim} must be divisible by model.n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads")
        if self.head_dim % 32:
            raise ValueError(f"head_dim={self.head_dim} must be a multiple of 32 for MM-RoPE (16-frequency blocks)")
        if self.rope_variant not in ROPE_VARIANTS:
            raise ValueError(f"model.rope_variant={self.rope_variant!r} not in {ROPE_VARIANTS}")
        _ = self.layout  # validates vocab/codebook_size

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def layout(self) -> VocabLayout:
        return build_layout(self.vocab, self.codebook_size)

    @property
    def vocab_size(self) -> int:
        return self.layout.vocab_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key: model.{unknown[0]}")
        return cls(**d)


@dataclass(kw_only=True)
class ARDFConfig:
    """AR-DF training masks (LUMOS_SPEC §7)."""

    mask_type: str = "tube"
    """``tube`` (AR-DF temporal tube), ``random`` (one ratio, independent positions over the whole video) or
    ``diffusion_forcing`` (independent ratio and positions per frame)."""
    mask_mix: float = 0.0
    """Share of samples masked by ``mask_mix_type`` instead of ``mask_type`` (0: every sample by ``mask_type``, the
    paper). Tube masks hide a masked position in every earlier frame too, so a model trained only on them never
    predicts a position whose history it can see; a share of per-frame masks trains that case (0.25 did not change
    the ``small`` model's motion scores, docs/results.md)."""
    mask_mix_type: str = "diffusion_forcing"
    """The mask type of the ``mask_mix`` share (one of ``mask_type``'s values)."""
    min_mask_ratio: float = 0.7
    """Per-sample ratio = max(cos(pi*U/2), min_mask_ratio)."""
    text_drop_prob: float = 0.1
    """Probability of dropping the whole text prefix (sequence starts at video-begin) for CFG."""
    loss_weighting: str = "none"
    """``none``: plain mean CE over masked codes (the paper). ``code_frequency``: each masked code's CE is weighted
    by how rare its target code is in the training shards (:func:`lumos.loss.code_frequency_weights`), so a few
    codes that cover most of every frame (e.g. a plain background) do not take most of the gradient."""
    loss_weight_power: float = 1.0
    """``code_frequency``: weight = (uniform frequency / code frequency) ** power, clipped to [1, loss_weight_max]."""
    loss_weight_max: float = 5.0
    """``code_frequency``: the largest weight (codes at or above the uniform frequency weigh 1)."""

    def __post_init__(self) -> None:
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"ardf.loss_weighting={self.loss_weighting!r} not in {LOSS_WEIGHTINGS}")
        if self.loss_weight_power < 0 or self.loss_weight_max < 1:
            raise ValueError("ardf.loss_weight_power must be >= 0 and ardf.loss_weight_max >= 1")
        for key in ("mask_type", "mask_mix_type"):
            if getattr(self, key) not in MASK_TYPES:
                raise ValueError(f"ardf.{key}={getattr(self, key)!r} not in {MASK_TYPES}")
        if not 0.0 <= self.mask_mix <= 1.0:
            raise ValueError("ardf.mask_mix must be in [0, 1]")
        if not 0.0 < self.min_mask_ratio <= 1.0:
            raise ValueError("ardf.min_mask_ratio must be in (0, 1]")
        if not 0.0 <= self.text_drop_prob < 1.0:
            raise ValueError("ardf.text_drop_prob must be in [0, 1)")


PRESETS: dict[str, dict] = {
    "debug": dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=176, vocab="compact", codebook_size=240),
    "small": dict(dim=256, n_layers=6, n_heads=4, n_kv_heads=4, ffn_dim=688, vocab="compact",
                  codebook_size=1000),
    "1b": dict(dim=2048, n_layers=16, n_heads=16, n_kv_heads=16, ffn_dim=5632, vocab="chameleon",
               codebook_size=64000, activation_checkpointing=True),
    "3b": dict(dim=3072, n_layers=26, n_heads=24, n_kv_heads=8, ffn_dim=8192, vocab="chameleon",
               codebook_size=64000, activation_checkpointing=True),
}


def model_preset(name: str, **overrides) -> ModelConfig:
    """A named model preset, optionally with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r} (choose from {sorted(PRESETS)})")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


__all__ = ["ARDFConfig", "LOSS_WEIGHTINGS", "MASK_TYPES", "ModelConfig", "PRESETS", "ROPE_VARIANTS", "model_preset"]
