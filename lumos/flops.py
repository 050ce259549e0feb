"""Parameter and FLOP counts of the Lumos backbone, for MFU reporting (Kaplan et al. 2020; PaLM appendix B).

Training FLOPs per token = ``6 N + 6 · n_layers · dim · seq_len``:

* ``6 N``: forward (2 N) + backward (4 N) of every weight matrix, N = parameters excluding the input embedding
  table (a lookup, no FLOPs); the lm_head is counted in full even though the AR-DF loss multiplies only masked
  positions by the visual rows — the usual convention, so MFU stays comparable across codebases.
* attention scores and the weighted sum of values: per layer and query, ``2 · dim · ctx`` each forward, with the
  average visible context ``ctx ≈ seq_len / 2`` (causal; the intra-frame bidirectional part, ≤ half a frame per
  query, is ignored) ⇒ ``2 · dim · seq_len`` forward, ×3 with the backward ⇒ ``6 · n_layers · dim · seq_len``.
"""

from __future__ import annotations

from torch import nn

from lumos.config import ModelConfig


def _config_params(cfg: ModelConfig) -> int:
    D, hd, V = cfg.dim, cfg.head_dim, cfg.vocab_size
    attn = D * cfg.n_heads * hd + 2 * D * cfg.n_kv_heads * hd + cfg.n_heads * hd * D
    qk_heads = cfg.n_heads + cfg.n_kv_heads if cfg.qk_norm_per_head else 2
    qk_norm = 2 * qk_heads * hd if cfg.qk_norm else 0  # weight + bias for q and for k (shared or per head)
    layer = attn + qk_norm + 3 * D * cfg.ffn_dim + 2 * D  # + two RMSNorm weights
    return V * D + cfg.n_layers * layer + D + V * D  # embedding, layers, final norm, lm_head


def num_params(model_or_cfg: nn.Module | ModelConfig, non_embedding: bool = False) -> int:
    """Parameter count of a model (counted) or a config (computed).

    Args:
        model_or_cfg: a :class:`~lumos.model.LumosModel` (or any module) or a :class:`ModelConfig`.
        non_embedding: exclude the input embedding table (vocab_size × dim).
    """
    if isinstance(model_or_cfg, ModelConfig):
        cfg, total = model_or_cfg, _config_params(model_or_cfg)
    else:
        cfg = getattr(model_or_cfg, "cfg", None)
        total = sum(p.numel() for p in model_or_cfg.parameters())
        if non_embedding and cfg is None:
            raise ValueError("non_embedding=True needs a model with a .cfg (a LumosModel)")
    return total - cfg.vocab_size * cfg.dim if non_embedding else total


def flops_per_token(cfg: ModelConfig | nn.Module, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token at sequence length ``seq_len`` (see module docstring)."""
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be >= 1")
    model_cfg = cfg if isinstance(cfg, ModelConfig) else cfg.cfg
    n = num_params(model_cfg, non_embedding=True)
    return 6.0 * n + 6.0 * model_cfg.n_layers * model_cfg.dim * seq_len


__all__ = ["flops_per_token", "num_params"]
