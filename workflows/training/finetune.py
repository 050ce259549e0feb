"""Fine-tuning from a consolidated checkpoint: ``python -m workflows.pretrain ... model.init_from=URI``.

``URI`` (local or s3://) is a checkpoint directory in our layout — ``config.json`` + ``model.safetensors``, as
written by ``workflows.convert_hf`` (the released Lumos-1 weights) or by a run (``<run>/final``). The run's model
config comes from that ``config.json`` (:meth:`workflows.training.train_config.ModelSection.build`).

* Driver, before Ray starts (:func:`prepare_init`): local paths made absolute, the checkpoint's config read, the
  ``model.safetensors`` header (names and shapes only, a ranged read) checked against the model it describes, the
  token shards' vocabulary layout and codebook checked against the model, and the text tokenizer inherited from
  the checkpoint when ``data.text_tokenizer`` is unset (so the fine-tuned ``final/`` still encodes prompts). Each
  failure is one line. The video tokenizer recorded in the new checkpoints follows the usual rule
  (``data.video_tokenizer``, else the shards' manifest).
* Every worker, before ``deepspeed.initialize`` (:func:`load_init_weights`): the weights are loaded into the
  freshly built model; under ZeRO-3 with ``zero.Init`` (parameters already partitioned) rank 0 reads the file and
  each parameter is written through ``deepspeed.zero.GatheredParameters(modifier_rank=0)``, which re-partitions it.
  A relaunched run that has a Ray Train checkpoint skips this: resuming takes precedence over ``init_from``.
"""

from __future__ import annotations

import json
import logging
import struct

import torch

from lumos import storage
from lumos.checkpoint import WEIGHTS_NAME, read_weights, resolve_ref
from lumos.config import ModelConfig
from tokenize_jobs.shards import ShardManifest
from workflows.training.train_config import PretrainConfig

log = logging.getLogger("workflows.training.finetune")
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def weights_header(uri: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from the header of ``<uri>/model.safetensors`` (reads only the header bytes)."""
    path_uri = storage.join(uri, WEIGHTS_NAME)
    fs, path = storage.resolve(path_uri)
    try:
        with fs.open_input_file(path) as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 0 < n < 1 << 30:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise ValueError(f"model.init_from={uri}: no {WEIGHTS_NAME}") from None
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"model.init_from={uri}: {WEIGHTS_NAME} is not a safetensors file ({e})") from None
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def check_init_weights(uri: str, model_cfg: ModelConfig) -> None:
    """Raise ValueError naming the first tensor of the checkpoint that does not fit ``model_cfg``."""
    from lumos.checkpoint import check_state_dict
    from lumos.model import LumosModel

    with torch.device("meta"):
        expected = LumosModel(model_cfg).state_dict()
    found = {k: torch.empty(shape, device="meta") for k, shape in weights_header(uri).items()}
    try:
        check_state_dict(expected, found)
    except ValueError as e:
        raise ValueError(f"model.init_from={uri}: {e}") from None


def check_shards_vocab(manifest: ShardManifest, model_cfg: ModelConfig, shards: str, source: str) -> None:
    """Raise ValueError unless the shards' layout and codebook (as far as the manifest says) are the model's.

    Args:
        source: where the model config comes from, for the message (``model.init_from=...``).
    """
    name, codes = manifest.layout_name, manifest.codebook_size
    if name is not None and name != model_cfg.vocab:
        raise ValueError(f"data.shards={shards} were tokenized with the {name!r} vocabulary layout, the model of "
                         f"{source} uses {model_cfg.vocab!r} (re-tokenize with --layout {model_cfg.vocab})")
    if codes is not None and codes != model_cfg.codebook_size:
        hint = " (set model.overrides.codebook_size)" if source.startswith("model.preset") else ""
        raise ValueError(f"data.shards={shards} hold codes of a {codes}-code video tokenizer, the model of "
                         f"{source} expects {model_cfg.codebook_size}{hint}")


def adopt_shard_codebook(cfg: PretrainConfig, manifest: ShardManifest) -> None:
    """A model built from a preset takes its codebook from the shards' video tokenizer (as recorded in their
    manifest) unless ``model.overrides.codebook_size`` names one: nobody has to copy it from the tokenizer by hand.
    An explicit override that disagrees stays an error (:func:`check_shards_vocab`)."""
    codes = manifest.codebook_size
    if codes is None or "codebook_size" in cfg.model.overrides or cfg.model.build().codebook_size == codes:
        return
    log.info("model.preset=%s: codebook_size %d from the shards' video tokenizer (the preset has %d)",
             cfg.model.preset, codes, cfg.model.build().codebook_size)
    cfg.model.overrides = {**cfg.model.overrides, "codebook_size": codes}


def prepare_init(cfg: PretrainConfig, manifest: ShardManifest) -> PretrainConfig:
    """Driver-side checks of the model against the shards, and of ``model.init_from`` (see the module docstring).

    Raises:
        workflows.config_io.ConfigError: an unreadable checkpoint, or ``model.overrides`` that disagree with it.
        ValueError: weights that do not fit the checkpoint's config, or shards of another vocabulary/codebook.
    """
    if not cfg.model.init_from:
        adopt_shard_codebook(cfg, manifest)
        check_shards_vocab(manifest, cfg.model.build(), cfg.data.shards, f"model.preset={cfg.model.preset}")
        return cfg
    cfg.model.init_from = storage.absolute(cfg.model.init_from.rstrip("/"))
    uri = cfg.model.init_from
    model_cfg, meta = cfg.model.init_checkpoint()
    check_init_weights(uri, model_cfg)
    check_shards_vocab(manifest, model_cfg, cfg.data.shards, f"model.init_from={uri}")
    log.info("fine-tuning from %s: %s vocabulary, %d layers, dim %d from its config.json (the architecture of "
             "model.preset=%s is ignored; activation_checkpointing=%s)", uri, model_cfg.vocab, model_cfg.n_layers,
             model_cfg.dim, cfg.model.preset, model_cfg.activation_checkpointing)
    if cfg.data.text_tokenizer is None and meta.get("text_tokenizer"):
        cfg.data.text_tokenizer = resolve_ref(uri, meta["text_tokenizer"])
        log.info("text tokenizer from the checkpoint: %s", cfg.data.text_tokenizer)
    elif cfg.data.text_tokenizer is None and model_cfg.vocab == "chameleon":
        log.warning("model.init_from=%s names no text tokenizer and data.text_tokenizer is unset: the new "
                    "checkpoints cannot encode prompts for generate/serve", uri)
    return cfg


def load_init_weights(model: torch.nn.Module, uri: str, rank: int) -> None:
    """Load ``<uri>/model.safetensors`` into ``model`` (before ``deepspeed.initialize``).

    Whole parameters (no ZeRO-3 ``zero.Init``): every rank loads the file. Partitioned parameters (built under
    ``deepspeed.zero.Init``): rank 0 reads the file and writes each parameter inside
    ``GatheredParameters(modifier_rank=0)``; DeepSpeed re-partitions it to all ranks on exit. All ranks must call.
    """
    from lumos.checkpoint import check_state_dict

    if not any(hasattr(p, "ds_tensor") for p in model.parameters()):
        state = read_weights(uri)
        try:
            check_state_dict(model.state_dict(), state)
        except ValueError as e:
            raise ValueError(f"model.init_from={uri}: {e}") from None
        model.load_state_dict(state)
        return
    import deepspeed

    state = None
    if rank == 0:
        state = read_weights(uri)
        expected = {n: torch.empty(tuple(p.ds_shape), device="meta") for n, p in model.named_parameters()}
        try:
            check_state_dict(expected, state)
        except ValueError as e:
            raise ValueError(f"model.init_from={uri}: {e}") from None
    for name, p in model.named_parameters():
        with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
            if rank == 0:
                with torch.no_grad():
                    p.data.copy_(state[name])


__all__ = ["check_init_weights", "check_shards_vocab", "load_init_weights", "prepare_init", "weights_header"]
