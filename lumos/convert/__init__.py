"""Released Lumos-1 / Chameleon weights and tokenizers → our checkpoint format (LUMOS_SPEC §2–§5, §13).

* :mod:`lumos.convert.hf_model` — HF state dict + config.json → :class:`~lumos.model.LumosModel`;
* :mod:`lumos.convert.chameleon_text` — the merged ``text_tokenizer.json`` and the upstream prompt ids;
* :mod:`lumos.convert.package` — write a converted checkpoint directory (CLI: ``python -m workflows.convert_hf``).
"""

from lumos.convert.chameleon_text import ChameleonTextTokenizer, digit_tokens, load_chameleon_tokenizer
from lumos.convert.hf_model import load_hf_model, load_hf_state, model_config_from_hf
from lumos.convert.package import convert_hf_checkpoint

__all__ = ["ChameleonTextTokenizer", "convert_hf_checkpoint", "digit_tokens", "load_chameleon_tokenizer",
           "load_hf_model", "load_hf_state", "model_config_from_hf"]
