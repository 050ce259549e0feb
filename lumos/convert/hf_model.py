"""Released Lumos-1 / Chameleon weights in the HF layout → :class:`~lumos.model.LumosModel` (LUMOS_SPEC §2, §13).

Upstream checkpoints (``Alibaba-DAMO-Academy/Lumos-1``, saved by ``ChameleonXLLMXForConditionalGeneration``) and
HF transformers' ``ChameleonForConditionalGeneration`` / ``ChameleonModel`` share one state-dict layout:

| HF name (``model.`` prefix optional) | ours |
|---|---|
| ``model.embed_tokens.weight`` | ``tok_embeddings.weight`` |
| ``model.layers.N.self_attn.{q,k,v,o}_proj.weight`` | ``layers.N.attention.w{q,k,v,o}.weight`` |
| ``model.layers.N.self_attn.{q,k}_norm.{weight,bias}`` | ``layers.N.attention.{q,k}_norm.{weight,bias}`` |
| ``model.layers.N.mlp.{gate,up,down}_proj.weight`` | ``layers.N.feed_forward.w{1,3,2}.weight`` |
| ``model.layers.N.{input,post_attention}_layernorm.weight`` | ``layers.N.{attention,ffn}_norm.weight`` |
| ``model.norm.weight`` / ``lm_head.weight`` | ``norm.weight`` / ``lm_head.weight`` (untied) |
| ``model.vqmodel.*``, ``*.rotary_emb.inv_freq`` | skipped (Chameleon's image VQGAN; RoPE tables) |

QK-norm: upstream stores one LayerNorm weight/bias per model-parallel rank, ``[model_parallel_size, head_dim]``,
repeated over the heads of each rank; HF transformers stores ``[n_heads | n_kv_heads, head_dim]``. When every row
is equal (Lumos-1: model_parallel_size 1) they load into our shared ``[head_dim]`` parameters; otherwise rows are
repeat-interleaved to one per head and ``ModelConfig.qk_norm_per_head`` is set. Both compute LayerNorm statistics
over head_dim only with eps 1e-5, as ours does with ``norm_eps``.

``config.json`` → :class:`~lumos.config.ModelConfig`: vocab_size 129,536 is the ``chameleon`` layout (visual code k
↦ 65,536 + k); rope_theta from ``rope_theta`` (transformers 4.x) or ``rope_parameters`` (5.x); MM-RoPE unless the
config says ``mm_rope: false`` (plain Chameleon configs of other vocab sizes default to 1D RoPE).
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Iterator

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file as load_safetensors_file
from tqdm.auto import tqdm

from lumos import storage
from lumos.config import ModelConfig
from lumos.model import LumosModel
from lumos.vocab import chameleon_layout, compact_layout

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
QK_NORM_EPS = 1e-5
"""Chameleon's QK LayerNorm eps (hard-coded upstream and in transformers)."""

_TOP = {"embed_tokens.weight": "tok_embeddings.weight", "norm.weight": "norm.weight",
        "lm_head.weight": "lm_head.weight"}
_LAYER = {
    "self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
    "self_attn.q_norm.weight": "attention.q_norm.weight", "self_attn.q_norm.bias": "attention.q_norm.bias",
    "self_attn.k_norm.weight": "attention.k_norm.weight", "self_attn.k_norm.bias": "attention.k_norm.bias",
    "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "input_layernorm.weight": "attention_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
}
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)")
_SKIP_RE = re.compile(r"^(model\.)?vqmodel\.|rotary_emb\.inv_freq$")


# ---------------------------------------------------------------------------------------------------------------
# config.json → ModelConfig
# ---------------------------------------------------------------------------------------------------------------

def hf_dir(uri: str) -> str:
    """The checkpoint directory of ``uri`` (a directory, or a single weights file inside one)."""
    uri = str(uri).rstrip("/")
    return posixpath.dirname(uri) if uri.endswith((".safetensors", ".bin")) else uri


def read_hf_config(uri: str) -> dict:
    """The ``config.json`` of a HF checkpoint directory (local or s3://)."""
    path = storage.join(hf_dir(uri), CONFIG_NAME)
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise ValueError(f"--hf {uri}: no {CONFIG_NAME} found at {path}") from None


def _rope_theta(hf: dict) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    kind = params.get("rope_type") or params.get("type") or (scaling or {}).get("type") or "default"
    if kind != "default" or scaling:
        raise ValueError(f"config.json: RoPE scaling {kind!r} is not supported (plain RoPE only)")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _check_supported(hf: dict) -> None:
    """One-line errors for architecture options our decoder does not implement."""
    unsupported = {"swin_norm": True, "attention_bias": True, "mlp_bias": True}
    for key, bad in unsupported.items():
        if hf.get(key) == bad:
            raise ValueError(f"config.json: {key}={bad} is not supported by the Lumos decoder")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"config.json: hidden_act={act!r} is not supported (SwiGLU with silu only)")
    if float(hf.get("rms_norm_eps", 1e-5)) != QK_NORM_EPS:
        log.warning("config.json rms_norm_eps=%s: Chameleon's QK-norm eps is %s but ours uses norm_eps for both",
                    hf.get("rms_norm_eps"), QK_NORM_EPS)


def _vocab_fields(vocab_size: int, vocab: str | None) -> dict:
    chameleon = chameleon_layout()
    if vocab is None:
        if vocab_size != chameleon.vocab_size:
            raise ValueError(f"config.json vocab_size={vocab_size} is not the Lumos-1 vocabulary "
                             f"({chameleon.vocab_size}); pass vocab='compact' to map it onto the compact layout")
        vocab = "chameleon"
    if vocab == "chameleon":
        if vocab_size != chameleon.vocab_size:
            raise ValueError(f"vocab='chameleon' needs vocab_size={chameleon.vocab_size}, config.json has {vocab_size}")
        return {"vocab": "chameleon", "codebook_size": chameleon.codebook_size}
    if vocab == "compact":
        offset = compact_layout(1).visual_offset
        if vocab_size <= offset:
            raise ValueError(f"vocab='compact' needs vocab_size > {offset}, config.json has {vocab_size}")
        return {"vocab": "compact", "codebook_size": vocab_size - offset}
    raise ValueError(f"vocab={vocab!r} must be None, 'chameleon' or 'compact'")


def model_config_from_hf(hf: dict, *, vocab: str | None = None, rope_variant: str | None = None,
                         qk_norm_per_head: bool = False) -> ModelConfig:
    """Translate a Chameleon/Lumos-1 ``config.json`` into a :class:`ModelConfig`.

    Args:
        hf: the parsed config.json.
        vocab: ``None`` (vocab_size must be 129,536 → ``chameleon``), ``"chameleon"`` or ``"compact"`` (any other
            vocab_size; visual codes = vocab_size − 512).
        rope_variant: override; default ``mm`` unless the config says ``mm_rope: false`` (or, for non-Lumos
            vocabularies, does not say ``mm_rope: true``).
        qk_norm_per_head: one QK-norm weight/bias per head (see module docstring).

    Returns:
        The ModelConfig; raises ValueError naming the first unsupported or inconsistent field.
    """
    _check_supported(hf)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if key not in hf:
            raise ValueError(f"config.json lacks {key!r}")
    fields = _vocab_fields(int(hf["vocab_size"]), vocab)
    if rope_variant is None:
        default_mm = fields["vocab"] == "chameleon"
        rope_variant = "mm" if hf.get("mm_rope", default_mm) else "1d"
    return ModelConfig(
        dim=int(hf["hidden_size"]), n_layers=int(hf["num_hidden_layers"]), n_heads=int(hf["num_attention_heads"]),
        n_kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        ffn_dim=int(hf["intermediate_size"]), norm_eps=float(hf.get("rms_norm_eps", 1e-5)), qk_norm=True,
        qk_norm_per_head=qk_norm_per_head, rope_theta=_rope_theta(hf), rope_variant=rope_variant,
        max_seq_len=int(hf.get("max_position_embeddings") or 65536), **fields,
    )


# ---------------------------------------------------------------------------------------------------------------
# weight files
# ---------------------------------------------------------------------------------------------------------------

def hf_weight_files(uri: str) -> list[str]:
    """URIs of the weight files of a HF checkpoint: the shards named by an index json, a single
    ``model.safetensors`` / ``pytorch_model.bin``, or ``uri`` itself when it is a weights file."""
    uri = str(uri).rstrip("/")
    if uri.endswith((".safetensors", ".bin")):
        if not storage.exists(uri):
            raise ValueError(f"--hf {uri}: file not found")
        return [uri]
    for index in WEIGHT_INDEXES:
        if storage.exists(storage.join(uri, index)):
            weight_map = json.loads(storage.read_text(storage.join(uri, index))).get("weight_map", {})
            shards = list(dict.fromkeys(weight_map.values()))
            if not shards:
                raise ValueError(f"--hf {uri}: {index} has an empty weight_map")
            return [storage.join(uri, s) for s in shards]
    for name in WEIGHT_FILES:
        if storage.exists(storage.join(uri, name)):
            return [storage.join(uri, name)]
    raise ValueError(f"--hf {uri}: no weights found (expected {WEIGHT_INDEXES[0]} + shards or {WEIGHT_FILES[0]})")


def _load_file(uri: str) -> dict[str, torch.Tensor]:
    if uri.endswith(".bin"):
        import io

        return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    if storage.is_s3(uri):
        return load_safetensors_bytes(storage.read_bytes(uri))
    return load_safetensors_file(storage.resolve(uri)[1])


def iter_hf_tensors(uri: str, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor of a HF checkpoint, shard by shard (local or s3://)."""
    files = hf_weight_files(uri)
    for f in tqdm(files, desc="reading weight shards", unit="shard", disable=not progress or len(files) < 2):
        log.info("reading %s", f)
        yield from _load_file(f).items()


# ---------------------------------------------------------------------------------------------------------------
# name mapping and QK-norm shapes
# ---------------------------------------------------------------------------------------------------------------

def lumos_name(hf_name: str) -> str | None:
    """Our parameter name for a HF tensor name; ``None`` for tensors we skip (vqmodel, rotary tables).

    Raises:
        ValueError: a tensor that is neither a decoder weight nor skippable.
    """
    if _SKIP_RE.search(hf_name):
        return None
    name = hf_name[len("model."):] if hf_name.startswith("model.") else hf_name
    if name in _TOP:
        return _TOP[name]
    m = _LAYER_RE.fullmatch(name)
    if m and m.group(2) in _LAYER:
        return f"layers.{m.group(1)}.{_LAYER[m.group(2)]}"
    raise ValueError(f"checkpoint has unexpected tensor {hf_name!r} (not a Chameleon decoder weight)")


def rename_hf_state(tensors) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename HF tensors to ours.

    Args:
        tensors: iterable of (HF name, tensor).

    Returns:
        (state under our names, our name → HF name for error messages).
    """
    state, source = {}, {}
    for hf_name, t in tensors:
        name = lumos_name(hf_name)
        if name is None:
            continue
        if name in state:
            raise ValueError(f"checkpoint has tensor {hf_name!r} twice (also as {source[name]!r})")
        state[name], source[name] = t, hf_name
    return state, source


def _is_qk_norm(name: str) -> bool:
    return ".q_norm." in name or ".k_norm." in name


def qk_norm_is_shared(state: dict[str, torch.Tensor]) -> bool:
    """True when every QK-norm weight/bias is one vector repeated over its rows (or already 1-D)."""
    for name, t in state.items():
        if _is_qk_norm(name) and t.dim() == 2 and not torch.equal(t, t[:1].expand_as(t)):
            return False
    return True


def _fit_qk_norm(t: torch.Tensor, heads: int, head_dim: int, per_head: bool, hf_name: str) -> torch.Tensor:
    """A QK-norm tensor [head_dim] or [G, head_dim] (G | heads) → [head_dim] (shared) or [heads, head_dim]."""
    rows = t.unsqueeze(0) if t.dim() == 1 else t
    if rows.dim() != 2 or rows.shape[1] != head_dim or heads % rows.shape[0]:
        raise ValueError(f"checkpoint tensor {hf_name!r} has shape {tuple(t.shape)}, expected [G, {head_dim}] "
                         f"with G dividing {heads} heads")
    if not per_head:
        return rows[0].clone()
    return rows.repeat_interleave(heads // rows.shape[0], dim=0).contiguous()


def fit_qk_norms(state: dict[str, torch.Tensor], source: dict[str, str], cfg: ModelConfig) -> None:
    """Reshape every QK-norm tensor of ``state`` in place to the layout ``cfg.qk_norm_per_head`` asks for."""
    for name, t in state.items():
        if _is_qk_norm(name):
            heads = cfg.n_heads if ".q_norm." in name else cfg.n_kv_heads
            state[name] = _fit_qk_norm(t, heads, cfg.head_dim, cfg.qk_norm_per_head, source.get(name, name))


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of ``LumosModel(cfg)`` (built on the meta device: no memory, no init cost)."""
    with torch.device("meta"):
        model = LumosModel(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_against_config(state: dict[str, torch.Tensor], source: dict[str, str], cfg: ModelConfig) -> None:
    """Raise ValueError naming (by its HF name) the first missing, surplus or mis-shaped tensor."""
    want = expected_shapes(cfg)
    hf_of = {**_expected_hf_names(want), **source}
    for name, shape in want.items():
        if name not in state:
            raise ValueError(f"checkpoint lacks tensor {hf_of[name]!r} (expected shape {shape})")
        if tuple(state[name].shape) != shape:
            raise ValueError(f"checkpoint tensor {hf_of[name]!r} has shape {tuple(state[name].shape)}, "
                             f"config.json implies {shape}")
    for name in state:
        if name not in want:
            raise ValueError(f"checkpoint has tensor {hf_of[name]!r} beyond the {cfg.n_layers} layers of config.json")


def _expected_hf_names(want: dict) -> dict[str, str]:
    inverse_top = {v: k for k, v in _TOP.items()}
    inverse_layer = {v: k for k, v in _LAYER.items()}
    out = {}
    for name in want:
        if name in inverse_top:
            out[name] = ("" if name == "lm_head.weight" else "model.") + inverse_top[name]
            continue
        m = _LAYER_RE.fullmatch(name)
        if m and m.group(2) in inverse_layer:
            out[name] = f"model.layers.{m.group(1)}.{inverse_layer[m.group(2)]}"
    return out


# ---------------------------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------------------------

def load_hf_state(uri: str, *, vocab: str | None = None, rope_variant: str | None = None,
                  progress: bool = True) -> tuple[dict[str, torch.Tensor], ModelConfig, dict]:
    """Read a HF Chameleon/Lumos-1 checkpoint into our parameter names and config (tensors keep their dtype).

    Args:
        uri: checkpoint directory (safetensors shards + index json, or one weights file), local or s3://.
        vocab, rope_variant: see :func:`model_config_from_hf`.
        progress: show a progress bar over shards.

    Returns:
        (state dict for ``LumosModel(cfg)``, cfg, the HF config.json).
    """
    hf = read_hf_config(uri)
    state, source = rename_hf_state(iter_hf_tensors(uri, progress))
    if "lm_head.weight" not in state and hf.get("tie_word_embeddings") and "tok_embeddings.weight" in state:
        state["lm_head.weight"], source["lm_head.weight"] = state["tok_embeddings.weight"], "lm_head.weight"
    per_head = not qk_norm_is_shared(state)
    cfg = model_config_from_hf(hf, vocab=vocab, rope_variant=rope_variant, qk_norm_per_head=per_head)
    fit_qk_norms(state, source, cfg)
    check_against_config(state, source, cfg)
    return state, cfg, hf


def load_hf_model(uri: str, *, vocab: str | None = None, rope_variant: str | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  progress: bool = True) -> tuple[LumosModel, ModelConfig]:
    """A ready :class:`LumosModel` (eval mode) from a HF Chameleon/Lumos-1 checkpoint.

    Args:
        uri: checkpoint directory or weights file, local or s3://.
        vocab, rope_variant: see :func:`model_config_from_hf`.
        device, dtype: where and in which precision to place the weights.

    Returns:
        (model, its ModelConfig).
    """
    state, cfg, _ = load_hf_state(uri, vocab=vocab, rope_variant=rope_variant, progress=progress)
    model = LumosModel(cfg)
    model.load_state_dict(state)
    model = model.to(device)
    for p in model.parameters():  # parameters only: the RoPE frequency buffer stays float32
        p.data = p.data.to(dtype)
    return model.eval(), cfg


__all__ = ["CONFIG_NAME", "QK_NORM_EPS", "check_against_config", "expected_shapes", "fit_qk_norms", "hf_dir",
           "hf_weight_files", "iter_hf_tensors", "load_hf_model", "load_hf_state", "lumos_name",
           "model_config_from_hf", "qk_norm_is_shared", "read_hf_config", "rename_hf_state"]
