"""The video tokenizer protocol, our FSQ conv tokenizer behind it, and loading/saving (LUMOS_SPEC §3.1).

Every video tokenizer maps uint8 RGB video to int64 codebook indices and back:

* ``encode(video uint8 [N,H,W,3] or [B,N,H,W,3]) -> int64 [F,h,w] or [B,F,h,w]`` with F = 1 + ceil((N−1)/4),
  h = H/8, w = W/8 (first frame alone, then causal groups of 4);
* ``decode(codes int [F,h,w] or [B,F,h,w]) -> uint8 [N,H,W,3] or [B,...]`` with N = 1 + 4(F−1);
* attributes ``codebook_size``, ``temporal_compression`` (4), ``spatial_compression`` (8) and ``identity`` (a
  JSON-able dict: kind, levels, sha256 of the weights — recorded in shard manifests).

Both return CPU torch tensors; inputs may be numpy arrays or tensors. Two implementations ship: our causal conv
tokenizer (a checkpoint directory with ``config.json`` + ``model.safetensors``, see :func:`save_video_tokenizer`)
and the NVIDIA Cosmos-Tokenizer-DV4x8x8 TorchScript adapter (a directory with ``encoder.jit`` + ``decoder.jit``,
see :mod:`lumos.tokenizers.cosmos`). :func:`load_video_tokenizer` opens either, from a local path or s3://.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from lumos import storage
from lumos.tokenizers.causal_conv import (
    SPATIAL,
    TEMPORAL,
    CausalConvAutoencoder,
    ConvTokenizerConfig,
    tokenizer_preset,
)
from lumos.tokenizers.frames import check_codes, check_video, from_unit, in_chunks, to_unit

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CONV_KIND = "fsq_conv"


@runtime_checkable
class VideoTokenizer(Protocol):
    """What the tokenization job, the sampler and serving rely on."""

    codebook_size: int
    temporal_compression: int
    spatial_compression: int

    @property
    def identity(self) -> dict: ...

    def encode(self, video) -> torch.Tensor: ...

    def decode(self, codes) -> torch.Tensor: ...


class ConvVideoTokenizer:
    """Our causal 3D-conv + FSQ tokenizer behind the :class:`VideoTokenizer` protocol.

    Args:
        cfg: model size; ``model`` (optional) an already built :class:`CausalConvAutoencoder` for it.
        batch_size: clips per forward pass inside :meth:`encode` / :meth:`decode` (bounds memory).
    """

    temporal_compression = TEMPORAL
    spatial_compression = SPATIAL

    def __init__(self, cfg: ConvTokenizerConfig, model: CausalConvAutoencoder | None = None, batch_size: int = 8):
        self.cfg = cfg
        self.model = (model or CausalConvAutoencoder(cfg)).eval()
        self.batch_size = batch_size
        self.metrics: dict = {}
        self._identity: dict | None = None

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> ConvVideoTokenizer:
        self.model.to(device)
        return self

    def weights_bytes(self) -> bytes:
        """The weights as safetensors bytes (deterministic for given weights)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        return save_safetensors(state)

    @property
    def identity(self) -> dict:
        """kind, levels, codebook size and sha256 of the weights (cached: call :meth:`refresh_identity` after
        changing the weights)."""
        if self._identity is None:
            self.refresh_identity()
        return dict(self._identity)

    def refresh_identity(self) -> None:
        self._identity = {
            "kind": CONV_KIND, "levels": list(self.cfg.levels), "codebook_size": self.codebook_size,
            "temporal_compression": TEMPORAL, "spatial_compression": SPATIAL,
            "sha256": hashlib.sha256(self.weights_bytes()).hexdigest(),
        }

    @torch.inference_mode()
    def encode(self, video) -> torch.Tensor:
        """uint8 [N,H,W,3] or [B,N,H,W,3] → int64 [F,h,w] or [B,F,h,w] (CPU)."""
        x, batched = check_video(video, SPATIAL)
        return in_chunks(lambda chunk: self.model.encode_latents(to_unit(chunk.to(self.device)))[1].cpu(), x,
                         self.batch_size, batched)

    @torch.inference_mode()
    def decode(self, codes) -> torch.Tensor:
        """int [F,h,w] or [B,F,h,w] → uint8 [N,H,W,3] or [B,N,H,W,3] (CPU), N = 1 + 4(F − 1)."""
        c, batched = check_codes(codes, self.codebook_size)

        def decode_chunk(chunk: torch.Tensor) -> torch.Tensor:
            return from_unit(self.model.decode_codes(self.model.fsq.indices_to_codes(chunk.to(self.device)))).cpu()

        return in_chunks(decode_chunk, c, self.batch_size, batched)


def build_video_tokenizer(cfg: ConvTokenizerConfig | str = "debug", seed: int = 0) -> ConvVideoTokenizer:
    """A freshly initialised conv tokenizer (deterministic for a seed; global RNG state is left untouched)."""
    cfg = tokenizer_preset(cfg) if isinstance(cfg, str) else cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CausalConvAutoencoder(cfg)
    return ConvVideoTokenizer(cfg, model)


def save_video_tokenizer(dir_uri: str, tok, metrics: dict | None = None) -> None:
    """Write a tokenizer to a directory URI (local or s3://).

    Conv tokenizers: ``config.json`` + ``model.safetensors``. Cosmos adapters: ``encoder.jit`` + ``decoder.jit``.
    """
    if hasattr(tok, "jit_bytes"):
        enc, dec = tok.jit_bytes()
        storage.write_bytes(storage.join(dir_uri, "encoder.jit"), enc)
        storage.write_bytes(storage.join(dir_uri, "decoder.jit"), dec)
        return
    if not isinstance(tok, ConvVideoTokenizer):
        raise ValueError(f"tok must be a ConvVideoTokenizer or a Cosmos adapter, got {type(tok).__name__}")
    tok.metrics = dict(metrics or tok.metrics)
    weights = tok.weights_bytes()
    meta = {"kind": CONV_KIND, "format_version": 1, "config": tok.cfg.to_dict(),
            "codebook_size": tok.codebook_size, "temporal_compression": TEMPORAL, "spatial_compression": SPATIAL,
            "sha256": hashlib.sha256(weights).hexdigest(), "metrics": tok.metrics}
    storage.write_bytes(storage.join(dir_uri, "model.safetensors"), weights)
    storage.write_text(storage.join(dir_uri, "config.json"), json.dumps(meta, indent=2) + "\n")


def _load_conv(dir_uri: str, device) -> ConvVideoTokenizer:
    meta = json.loads(storage.read_text(storage.join(dir_uri, "config.json")))
    if meta.get("kind") != CONV_KIND:
        raise ValueError(f"{dir_uri}/config.json: kind {meta.get('kind')!r} is not a video tokenizer ({CONV_KIND!r})")
    cfg = ConvTokenizerConfig(**meta["config"])
    tok = ConvVideoTokenizer(cfg)
    state = load_safetensors(storage.read_bytes(storage.join(dir_uri, "model.safetensors")))
    tok.model.load_state_dict(state)
    tok.metrics = meta.get("metrics", {})
    return tok.to(device)


def load_video_tokenizer(uri: str, device: str | torch.device = "cpu") -> VideoTokenizer:
    """Open a tokenizer directory: ours (``config.json`` + ``model.safetensors``) or Cosmos (``encoder.jit`` +
    ``decoder.jit``), local or s3://."""
    uri = str(uri)
    if storage.exists(storage.join(uri, "config.json")) and storage.exists(storage.join(uri, "model.safetensors")):
        return _load_conv(uri, device)
    if storage.exists(storage.join(uri, "encoder.jit")) and storage.exists(storage.join(uri, "decoder.jit")):
        from lumos.tokenizers.cosmos import CosmosTokenizer

        return CosmosTokenizer.from_dir(uri, device=device)
    raise ValueError(f"video tokenizer {uri!r}: expected config.json + model.safetensors (ours) or "
                     "encoder.jit + decoder.jit (Cosmos)")


def default_tokenizer_uri(name: str = "small") -> str:
    """Path of a committed tokenizer checkpoint under ``lumos/assets/`` (``small`` or ``debug``)."""
    path = ASSETS / f"tokenizer_{name}"
    if not (path / "config.json").exists():
        have = sorted(p.name.removeprefix("tokenizer_") for p in ASSETS.glob("tokenizer_*") if p.is_dir())
        raise ValueError(f"no committed tokenizer named {name!r} (available: {have})")
    return str(path)
