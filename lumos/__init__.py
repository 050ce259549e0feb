"""Lumos-1 on Ray — the pure-PyTorch library (model, MM-RoPE, masks, AR-DF loss, sampler, tokenizers).

Kept light on purpose: import submodules directly (``from lumos.model import LumosModel``). Nothing under
``lumos`` imports ray or deepspeed.
"""

__version__ = "0.1.0"
