"""The Lumos-1 transformer (LUMOS_SPEC §2, §6): :class:`LumosModel`, :class:`KVCache`, FLOP/parameter helpers."""

from lumos.flops import flops_per_token, num_params
from lumos.model.attention import Attention, AttentionPlan, dense_attention
from lumos.model.kv_cache import KVCache
from lumos.model.transformer import INPUT_NAMES, LumosModel

__all__ = ["Attention", "AttentionPlan", "INPUT_NAMES", "KVCache", "LumosModel", "dense_attention",
           "flops_per_token", "num_params"]
