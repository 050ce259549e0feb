"""Write a released HF checkpoint as our checkpoint directory (DESIGN §4.5), with its tokenizers wired in.

Output (local or s3://), usable unchanged by generate / serve / fine-tuning:

* ``model.safetensors`` — the decoder weights under our names (source dtype unless ``dtype`` is given);
* ``config.json`` — ``{"model": ModelConfig, "layout": VocabLayout, "video_tokenizer": URI, "text_tokenizer": URI,
  "resolution": [W, H], "source": {...}}``; written last, so a directory without it is an unfinished conversion;
* ``text_tokenizer.json`` — the merged Lumos-1 tokenizer, sanitized to load with HF ``tokenizers``
  (:mod:`lumos.convert.chameleon_text`); ``config.json`` points at it;
* ``tokenizer/`` — optional copy of the Cosmos DV4x8x8 TorchScript directory (``copy_video_tokenizer``);
  otherwise ``video_tokenizer`` names the Cosmos directory where it is.
"""

from __future__ import annotations

import logging
import os

import pyarrow.fs as pafs
import torch

from lumos import storage
from lumos.checkpoint import save_checkpoint
from lumos.config import ModelConfig
from lumos.convert.chameleon_text import ChameleonTextTokenizer
from lumos.convert.hf_model import load_hf_state
from lumos.model import LumosModel

log = logging.getLogger(__name__)

TEXT_TOKENIZER_NAME = "text_tokenizer.json"
VIDEO_TOKENIZER_DIR = "tokenizer"
COSMOS_FILES = ("encoder.jit", "decoder.jit")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RESOLUTIONS = {"256p": (448, 256), "384p": (672, 384)}
"""Default (width, height) of the released stages (upstream inference scripts); ``-384p`` folders are 384p."""


def default_resolution(hf: str) -> tuple[int, int]:
    """(width, height) recorded as ``resolution`` in config.json: 672×384 for a ``*384p*`` checkpoint, else
    448×256 (the 256p stages)."""
    return RESOLUTIONS["384p"] if "384p" in str(hf) else RESOLUTIONS["256p"]


def check_resolution(resolution: tuple[int, int], cfg: ModelConfig) -> tuple[int, int]:
    """Validate (width, height): both multiples of spatial_compression × grid_unit (32 px for Lumos-1)."""
    unit = cfg.spatial_compression * cfg.layout.grid_unit
    w, h = (int(v) for v in resolution)
    if w <= 0 or h <= 0 or w % unit or h % unit:
        raise ValueError(f"resolution {w}x{h} must be positive multiples of {unit} pixels")
    return w, h


def check_cosmos_dir(uri: str, cfg: ModelConfig, load: bool = True) -> None:
    """Raise ValueError unless ``uri`` is a Cosmos TorchScript tokenizer matching ``cfg``.

    Args:
        uri: directory with ``encoder.jit`` and ``decoder.jit`` (local or s3://).
        cfg: the converted model's config (codebook size, compression factors).
        load: also open it (:func:`lumos.tokenizers.load_video_tokenizer`) and compare its codebook and strides.
    """
    for name in COSMOS_FILES:
        if not storage.exists(storage.join(uri, name)):
            raise ValueError(f"--cosmos {uri}: no {name} (expected the Cosmos-Tokenizer-DV4x8x8 directory)")
    if not load:
        return
    from lumos.tokenizers import load_video_tokenizer

    tok = load_video_tokenizer(uri)
    got = (tok.codebook_size, tok.temporal_compression, tok.spatial_compression)
    want = (cfg.codebook_size, cfg.temporal_compression, cfg.spatial_compression)
    if got != want:
        raise ValueError(f"--cosmos {uri}: codebook/temporal/spatial = {got}, the model expects {want}")


def _copy_dir(src: str, dst: str) -> None:
    """Copy a directory between URIs (local or s3://), streaming."""
    (src_fs, src_path), (dst_fs, dst_path) = storage.resolve(src), storage.resolve(dst)
    if isinstance(dst_fs, pafs.LocalFileSystem):
        os.makedirs(dst_path, exist_ok=True)
    pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)


def write_tokenizers(out: str, cfg: ModelConfig, video_tokenizer: str | None, text_tokenizer: str | None, *,
                     copy_video_tokenizer: bool = False, check_video_tokenizer: bool = True) -> dict:
    """Validate the tokenizers, write the text tokenizer (and optionally a Cosmos copy) under ``out``.

    Returns:
        config.json entries ``video_tokenizer`` and ``text_tokenizer`` (URIs or None).
    """
    refs: dict = {"video_tokenizer": None, "text_tokenizer": None}
    if text_tokenizer:
        if cfg.vocab != "chameleon":
            raise ValueError(f"--text-tokenizer needs the chameleon vocabulary, the model has {cfg.vocab!r}")
        tok = ChameleonTextTokenizer(text_tokenizer, cfg.layout)
        refs["text_tokenizer"] = storage.join(out, TEXT_TOKENIZER_NAME)
        storage.write_text(refs["text_tokenizer"], tok.json)
    elif cfg.vocab == "chameleon":
        log.warning("no text tokenizer given: generate/serve need the merged text_tokenizer.json for prompts")
    if video_tokenizer:
        video_tokenizer = storage.absolute(video_tokenizer.rstrip("/"))
        check_cosmos_dir(video_tokenizer, cfg, load=check_video_tokenizer)
        if copy_video_tokenizer:
            _copy_dir(video_tokenizer, storage.join(out, VIDEO_TOKENIZER_DIR))
            refs["video_tokenizer"], refs["video_tokenizer_source"] = VIDEO_TOKENIZER_DIR, video_tokenizer
        else:
            refs["video_tokenizer"] = video_tokenizer
    else:
        log.warning("no video tokenizer given: generate/serve need the Cosmos DV4x8x8 directory to decode videos")
    return refs


def _meta_model(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> LumosModel:
    """A LumosModel whose parameters ARE the given tensors (no copy, no init)."""
    with torch.device("meta"):
        model = LumosModel(cfg)
    model.load_state_dict(state, assign=True)
    return model


def convert_hf_checkpoint(hf: str, out: str, *, video_tokenizer: str | None = None,
                          text_tokenizer: str | None = None, vocab: str | None = None,
                          rope_variant: str | None = None, dtype: str | None = None,
                          resolution: tuple[int, int] | None = None, copy_video_tokenizer: bool = False,
                          check_video_tokenizer: bool = True, progress: bool = True) -> str:
    """Convert a HF Lumos-1 / Chameleon checkpoint into our checkpoint directory.

    Args:
        hf: HF checkpoint directory or weights file (local or s3://).
        out: output directory (local or s3://).
        video_tokenizer: Cosmos DV4x8x8 TorchScript directory recorded as the video tokenizer.
        text_tokenizer: merged ``text_tokenizer.json`` (chameleon vocabulary only).
        vocab, rope_variant: see :func:`lumos.convert.hf_model.model_config_from_hf`.
        dtype: ``bf16`` / ``fp16`` / ``fp32`` for the written weights (default: as stored).
        resolution: default (width, height) for generate/serve (default: :func:`default_resolution`).
        copy_video_tokenizer: copy the Cosmos files into ``out/tokenizer`` (a self-contained checkpoint).
        check_video_tokenizer: open the Cosmos tokenizer and check its codebook and strides.
        progress: progress bar over weight shards.

    Returns:
        ``out`` (absolute for local paths).
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {sorted(DTYPES)}")
    out = storage.absolute(out.rstrip("/"))
    if storage.exists(storage.join(out, "config.json")):
        raise ValueError(f"--out {out} already holds a checkpoint (config.json); choose a new directory")
    state, cfg, hf_cfg = load_hf_state(hf, vocab=vocab, rope_variant=rope_variant, progress=progress)
    width, height = check_resolution(resolution or default_resolution(hf), cfg)
    refs = write_tokenizers(out, cfg, video_tokenizer, text_tokenizer, copy_video_tokenizer=copy_video_tokenizer,
                            check_video_tokenizer=check_video_tokenizer)
    source = {"kind": "hf", "uri": storage.absolute(hf), "architectures": hf_cfg.get("architectures"),
              "qk_norm": "per_head" if cfg.qk_norm_per_head else "shared"}
    save_checkpoint(out, _meta_model(cfg, state), cfg, extra={**refs, "source": source, "resolution": [width, height]},
                    dtype=DTYPES[dtype] if dtype else None)
    log.info("wrote %s (%d layers, dim %d, vocab %s)", out, cfg.n_layers, cfg.dim, cfg.vocab)
    return out


__all__ = ["COSMOS_FILES", "DTYPES", "RESOLUTIONS", "TEXT_TOKENIZER_NAME", "VIDEO_TOKENIZER_DIR",
           "check_cosmos_dir", "check_resolution", "convert_hf_checkpoint", "default_resolution",
           "write_tokenizers"]
