"""Model checkpoints (DESIGN §4.5, docs/internals.md): ``config.json`` + ``model.safetensors`` under a directory URI
(local path or ``s3://``, through :mod:`lumos.storage`).

``config.json`` = ``{"model": ModelConfig.to_dict(), "layout": VocabLayout.to_dict(), **extra}`` — extra carries
e.g. the video/text tokenizer references and training step. DeepSpeed resume state (``ds/``) is written by the
training workflow beside these files, not here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save as save_safetensors
from torch import nn

from lumos import storage
from lumos.config import ModelConfig
from lumos.model import LumosModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_RESERVED = ("model", "layout")
ASSETS = Path(__file__).resolve().parent / "assets"
NAMED_PREFIX = "model_"
"""A committed checkpoint ``lumos/assets/model_<name>/`` loads by its bare name (e.g. ``--checkpoint small``)."""


def checkpoint_uri(name_or_uri: str) -> str:
    """The directory of a committed checkpoint named ``name_or_uri`` (``small`` → ``lumos/assets/model_small``)
    when there is one and no local directory of that name exists; any other URI as it is."""
    ref = str(name_or_uri)
    if ref and "/" not in ref and ":" not in ref and not Path(ref).exists():
        named = ASSETS / f"{NAMED_PREFIX}{ref}"
        if (named / CONFIG_NAME).exists():
            return str(named)
    return ref


def named_checkpoints() -> list[str]:
    """Names of the committed checkpoints under ``lumos/assets``."""
    return sorted(p.name[len(NAMED_PREFIX):] for p in ASSETS.glob(f"{NAMED_PREFIX}*") if (p / CONFIG_NAME).exists())


def unwrap(model: nn.Module) -> nn.Module:
    """The LumosModel inside a wrapper (DeepSpeed engine, DDP, torch.compile) — or the model itself."""
    while not isinstance(model, LumosModel) and hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_checkpoint(dir_uri: str, model: nn.Module, model_cfg: ModelConfig, extra: dict | None = None,
                    dtype: torch.dtype | None = None) -> str:
    """Write ``config.json`` and ``model.safetensors`` under ``dir_uri``.

    Args:
        dir_uri: local directory or ``s3://bucket/prefix``.
        model: the model (wrappers with ``.module`` are unwrapped).
        model_cfg: its configuration.
        extra: more JSON-able top-level keys for config.json (must not be ``model``/``layout``).
        dtype: cast floating weights (e.g. ``torch.bfloat16``); default keeps their dtype.

    Returns:
        ``dir_uri``.
    """
    extra = dict(extra or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise ValueError(f"extra key {clash[0]!r} is reserved in config.json")
    state = {k: _export(v, dtype) for k, v in unwrap(model).state_dict().items()}
    config = {"model": model_cfg.to_dict(), "layout": model_cfg.layout.to_dict(), **extra}
    storage.write_bytes(storage.join(dir_uri, WEIGHTS_NAME), save_safetensors(state))
    storage.write_text(storage.join(dir_uri, CONFIG_NAME), json.dumps(config, indent=2, sort_keys=True))
    return dir_uri


def _export(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    t = t.detach().cpu()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous()


def read_config(uri: str) -> tuple[ModelConfig, dict]:
    """(ModelConfig, the rest of config.json) of a checkpoint directory (or committed checkpoint name)."""
    uri = checkpoint_uri(uri)
    config = json.loads(storage.read_text(storage.join(uri, CONFIG_NAME)))
    if "model" not in config:
        raise ValueError(f"{uri}/{CONFIG_NAME} has no 'model' section")
    cfg = ModelConfig.from_dict(config["model"])
    meta = {k: v for k, v in config.items() if k != "model"}
    if "layout" in meta and meta["layout"] != cfg.layout.to_dict():
        raise ValueError(f"{uri}/{CONFIG_NAME}: 'layout' does not match the layout of model.vocab={cfg.vocab!r}")
    return cfg, meta


def resolve_ref(checkpoint: str, ref: str) -> str:
    """A tokenizer reference from a checkpoint's config.json as a URI: ``s3://``, ``file://`` and absolute paths as
    they are, relative ones inside the checkpoint directory."""
    ref = str(ref)
    if storage.is_s3(ref) or ref.startswith("file://") or ref.startswith("/"):
        return ref
    return storage.join(checkpoint_uri(checkpoint), ref)


def read_weights(uri: str) -> dict[str, torch.Tensor]:
    """The state dict in ``<uri>/model.safetensors`` (a local file is memory-mapped; s3:// is read into memory)."""
    path = storage.join(checkpoint_uri(uri), WEIGHTS_NAME)
    if storage.is_s3(path):
        return load_safetensors(storage.read_bytes(path))
    return load_safetensors_file(storage.resolve(path)[1])


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first missing, unexpected or mis-shaped tensor."""
    for name, t in expected.items():
        if name not in found:
            raise ValueError(f"checkpoint lacks tensor {name!r} (expected shape {tuple(t.shape)})")
        if tuple(found[name].shape) != tuple(t.shape):
            raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(found[name].shape)}, "
                             f"model expects {tuple(t.shape)}")
    for name in found:
        if name not in expected:
            raise ValueError(f"checkpoint has unexpected tensor {name!r}")


def load_checkpoint(uri: str, device: str | torch.device = "cpu") -> tuple[LumosModel, ModelConfig, dict]:
    """Rebuild the model of a checkpoint directory.

    Args:
        uri: directory written by :func:`save_checkpoint` (local or ``s3://``), or the name of a committed one
            (:func:`checkpoint_uri`).
        device: where to put the model.

    Returns:
        (model in eval mode, float32 weights; its ModelConfig; the other config.json keys incl. ``layout``).
    """
    cfg, meta = read_config(uri)
    state = read_weights(uri)
    model = LumosModel(cfg)
    check_state_dict(model.state_dict(), state)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, meta


__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "check_state_dict", "checkpoint_uri", "load_checkpoint",
           "named_checkpoints", "read_config", "read_weights", "resolve_ref", "save_checkpoint", "unwrap"]
