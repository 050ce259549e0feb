"""Adapter for NVIDIA Cosmos-Tokenizer-DV4x8x8 (the tokenizer of upstream Lumos-1, LUMOS_SPEC §3.1).

The released tokenizer is two TorchScript files, ``encoder.jit`` and ``decoder.jit``. Get them from the Hugging
Face repo ``nvidia/Cosmos-Tokenizer-DV4x8x8`` (e.g. ``huggingface-cli download nvidia/Cosmos-Tokenizer-DV4x8x8
--local-dir ckpts/Cosmos-Tokenizer-DV4x8x8``; accept the NVIDIA Open Model License first) and point
:func:`lumos.tokenizers.load_video_tokenizer` at that directory (local or a copy on s3://).

The JIT signatures, as used by the Cosmos-Tokenizer library's ``CausalVideoTokenizer``:

* ``encoder(x)`` with x float/bf16 ``[B, 3, T, H, W]`` in [−1, 1], T = 1 + 4k → a tuple whose first two items are
  ``indices`` int ``[B, 1 + k, H/8, W/8]`` (FSQ levels [8,8,8,5,5,5] ⇒ 64,000 codes) and ``codes``
  ``[B, 6, 1 + k, H/8, W/8]`` (later items, if any, are ignored);
* ``decoder(indices)`` → ``[B, 3, T, H, W]`` in [−1, 1].

Upstream runs both in bf16 on GPU; here the dtype defaults to bf16 on CUDA and fp32 on CPU. Clips whose frame count
is not 1 + 4k are padded by repeating the last frame (so F = 1 + ceil((N − 1)/4) as for every tokenizer here) and
the decoder returns 1 + 4(F − 1) frames.
"""

from __future__ import annotations

import hashlib
import io

import torch

from lumos import storage
from lumos.tokenizers.frames import check_codes, check_video, from_unit, in_chunks, rgb_frames, to_unit
from lumos.tokenizers.fsq import FSQ_LEVELS, codebook_size

COSMOS_KIND = "cosmos_jit"


def _load_jit(data: bytes, name: str, device) -> torch.jit.ScriptModule:
    try:
        return torch.jit.load(io.BytesIO(data), map_location=device).eval()
    except RuntimeError as e:
        raise ValueError(f"{name} is not a TorchScript module ({str(e).splitlines()[0]})") from None


class CosmosTokenizer:
    """Cosmos DV TorchScript encoder/decoder behind the :class:`~lumos.tokenizers.video.VideoTokenizer` protocol.

    Args:
        encoder_bytes, decoder_bytes: the ``encoder.jit`` / ``decoder.jit`` files.
        device: where to run. dtype: compute dtype (default bf16 on CUDA, fp32 otherwise).
        levels: FSQ levels of the checkpoint (DV: [8,8,8,5,5,5]).
        batch_size: clips per call.
    """

    temporal_compression = 4
    spatial_compression = 8

    def __init__(self, encoder_bytes: bytes, decoder_bytes: bytes, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, levels=FSQ_LEVELS["full"], batch_size: int = 1):
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.levels = [int(v) for v in levels]
        self.codebook_size = codebook_size(self.levels)
        self.batch_size = batch_size
        self._bytes = (encoder_bytes, decoder_bytes)
        self.encoder = _load_jit(encoder_bytes, "encoder.jit", self.device)
        self.decoder = _load_jit(decoder_bytes, "decoder.jit", self.device)
        self.metrics: dict = {}

    @classmethod
    def from_dir(cls, uri: str, device: str | torch.device = "cpu", **kwargs) -> CosmosTokenizer:
        """Load ``encoder.jit`` + ``decoder.jit`` from a local directory or s3:// prefix."""
        enc = storage.read_bytes(storage.join(uri, "encoder.jit"))
        dec = storage.read_bytes(storage.join(uri, "decoder.jit"))
        return cls(enc, dec, device=device, **kwargs)

    def jit_bytes(self) -> tuple[bytes, bytes]:
        """The two TorchScript files (for :func:`~lumos.tokenizers.video.save_video_tokenizer`)."""
        return self._bytes

    @property
    def identity(self) -> dict:
        digest = hashlib.sha256(self._bytes[0] + self._bytes[1]).hexdigest()
        return {"kind": COSMOS_KIND, "levels": list(self.levels), "codebook_size": self.codebook_size,
                "temporal_compression": 4, "spatial_compression": 8, "sha256": digest}

    def _indices(self, out, x: torch.Tensor) -> torch.Tensor:
        idx = out[0] if isinstance(out, tuple | list) else out
        f, h, w = x.shape[2] // 4 + 1, x.shape[3] // 8, x.shape[4] // 8
        if idx.shape != (x.shape[0], f, h, w):
            raise ValueError(f"encoder.jit returned indices of shape {tuple(idx.shape)}, expected "
                             f"{(x.shape[0], f, h, w)} (is this a DV4x8x8 tokenizer?)")
        return idx.long().cpu()

    @torch.inference_mode()
    def encode(self, video) -> torch.Tensor:
        """uint8 [N,H,W,3] or [B,N,H,W,3] → int64 [F,h,w] or [B,F,h,w] (CPU)."""
        v, batched = check_video(video, self.spatial_compression)
        n = v.shape[1]
        target = rgb_frames(1 + -(-(n - 1) // 4))
        if target > n:  # pad to 1 + 4k frames with the last frame
            v = torch.cat([v, v[:, -1:].expand(-1, target - n, -1, -1, -1)], dim=1)

        def encode_chunk(chunk: torch.Tensor) -> torch.Tensor:
            x = to_unit(chunk.to(self.device), self.dtype)
            return self._indices(self.encoder(x), x)

        return in_chunks(encode_chunk, v, self.batch_size, batched)

    @torch.inference_mode()
    def decode(self, codes) -> torch.Tensor:
        """int [F,h,w] or [B,F,h,w] → uint8 [N,H,W,3] or [B,N,H,W,3] (CPU), N = 1 + 4(F − 1)."""
        c, batched = check_codes(codes, self.codebook_size)
        return in_chunks(lambda chunk: from_unit(self.decoder(chunk.to(self.device)).float()).cpu(), c,
                         self.batch_size, batched)
