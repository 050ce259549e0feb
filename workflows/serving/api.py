"""The HTTP contract of the sampler (DESIGN §4.6): request schema, validation into a :class:`Job`, response bodies.

``POST /v1/generate`` takes ``{"prompt", "mode", "image", "num_frames", "steps", "cfg_scale", "seed", "format",
"width", "height", "stream", "timeout_s"}``; ``num_frames`` counts LATENT frames (as ``workflows.generate
--frames``): a video has 1 + 4·(num_frames − 1) RGB frames; ``timeout_s`` shortens the server's
``limits.request_timeout_s`` for this request. Every check here runs in the ingress before any sampler work:

* 400 — the body is not JSON, the image is not base64 or not a readable image;
* 413 — the body or the image is too large (bytes or pixels, also images too large for Pillow to open);
* 422 — schema errors (unknown field, wrong type, unknown mode/format) and limit violations (prompt length,
  frames, steps, guidance range, size, work = frames × steps × tokens), i2v without an image, t2i with several
  frames.

The limits ``GET /v1/models`` advertises are :func:`advertised_limits`: exactly the values enforced here.

Every error body is ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import secrets
import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from lumos.sequence import sequence_length
from workflows.serving.config import ServeConfig
from workflows.serving.engine import ModelInfo
from workflows.serving.jobs import Job, JobResult

FORMATS = ("gif", "mp4", "png", "tokens")
CONTENT_TYPES = {"gif": "image/gif", "mp4": "video/mp4", "png": "image/png", "tokens": "application/json"}
DEFAULT_FPS, DEFAULT_SECONDS = 12, 2
"""The fps / duration tokens of a video prompt when the checkpoint records none (``lumos.sampler.plan_video``)."""
MAX_SEED = 2**63 - 1


class RequestError(Exception):
    """A request the API refuses: HTTP status + one-line message (+ headers, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class GenerateRequest(BaseModel):
    """The JSON body of ``POST /v1/generate`` (strict types, unknown fields rejected)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    mode: Literal["t2i", "t2v", "i2v"] = "t2v"
    image: str | None = None
    """i2v: base64 (or a ``data:image/...;base64,`` URL) of a PNG/JPEG/GIF/WebP image."""
    num_frames: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    format: Literal["gif", "mp4", "png", "tokens"] | None = None
    width: int | None = None
    height: int | None = None
    stream: bool = False
    timeout_s: float | None = None
    """This request's deadline in seconds (at most ``limits.request_timeout_s``, which is the default)."""


def describe(error: ValidationError) -> tuple[int, str]:
    """(status, one line) for a pydantic error: 400 for broken JSON, 422 for the first schema error."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return 400, f"body is not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})"
    where = ".".join(str(p) for p in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return 422, f"unknown field {where!r}"
    if first["type"] == "model_type":
        return 422, "body must be a JSON object"
    return 422, f"{where}: {first['msg']}"


def parse_request(body: bytes) -> GenerateRequest:
    """Parse a JSON body (raises :class:`RequestError` 400/422)."""
    try:
        return GenerateRequest.model_validate_json(body)
    except ValidationError as e:
        raise RequestError(*describe(e)) from None


def _check_range(name: str, value, lo, hi) -> None:
    if not lo <= value <= hi:
        raise RequestError(422, f"{name}={value} must be in [{lo}, {hi}]")


def decode_image(text: str, cfg: ServeConfig, size: tuple[int, int]) -> np.ndarray:
    """Base64 (or data URL) → uint8 [H, W, 3] resized + centre-cropped to ``size`` = (width, height).

    Raises:
        RequestError: 413 too large, 400 bad base64 / not an image.
    """
    from PIL import Image

    from lumos.buckets import resize_center_crop
    from lumos.media import read_image

    if text.startswith("data:"):
        text = text.partition(",")[2]
    limit = cfg.limits.max_image_bytes
    if len(text) > 4 * math.ceil(limit / 3) + 4:
        raise RequestError(413, f"image is larger than limits.max_image_bytes={limit}")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "image is not valid base64") from None
    if not data:
        raise RequestError(400, "image is empty")
    try:
        w, h = Image.open(io.BytesIO(data)).size  # header only: no decompression bomb is expanded
    except Image.DecompressionBombError:  # more pixels than Pillow agrees to open: far over any pixel limit
        raise RequestError(413, "image has more pixels than limits.max_image_pixels="
                                f"{cfg.limits.max_image_pixels}") from None
    except Exception:  # Pillow raises several unrelated types for non-images
        raise RequestError(400, "image is not a readable image (PNG, JPEG, GIF, WebP, ...)") from None
    if w * h > cfg.limits.max_image_pixels:
        raise RequestError(413, f"image is {w}x{h}, more than limits.max_image_pixels={cfg.limits.max_image_pixels}")
    try:
        pixels = read_image(data)
    except ValueError as e:
        raise RequestError(400, f"image: {e}") from None
    return resize_center_crop(pixels, size)


def _first(*values):
    return next(v for v in values if v is not None)


def max_side(cfg: ServeConfig, info: ModelInfo) -> int:
    """The largest width/height enforced: ``limits.max_side`` rounded down to the size unit, and at most what the
    vocabulary's grid tokens can say (``max_number`` grid units)."""
    unit = info.size_unit
    return max(unit, min(cfg.limits.max_side // unit * unit, info.max_number * unit))


def advertised_limits(cfg: ServeConfig, info: ModelInfo) -> dict:
    """``limits`` of ``GET /v1/models``: the configured limits with ``max_side`` as enforced for this checkpoint."""
    from dataclasses import asdict

    return {**asdict(cfg.limits), "max_side": max_side(cfg, info), "size_unit": info.size_unit}


def output_size(req: GenerateRequest, cfg: ServeConfig, info: ModelInfo) -> tuple[int, int]:
    """(width, height) of the request, checked against the size unit and :func:`max_side`."""
    width = _first(req.width, cfg.defaults.width, info.resolution[0])
    height = _first(req.height, cfg.defaults.height, info.resolution[1])
    unit, top = info.size_unit, max_side(cfg, info)
    for name, v in (("width", width), ("height", height)):
        if v < unit or v % unit or v > top:
            raise RequestError(422, f"{name}={v} must be a multiple of {unit} in [{unit}, {top}] (max_side)")
    return width, height


def check_work(req: GenerateRequest, frames: int, steps: int, size: tuple[int, int], cfg: ServeConfig,
               info: ModelInfo) -> int:
    """Work of a request (generated latent frames × steps × latent tokens per frame) vs ``limits.max_token_steps``;
    returns it."""
    tokens = (size[0] // info.spatial) * (size[1] // info.spatial)
    generated = frames - (1 if req.mode == "i2v" else 0)
    work = generated * steps * tokens
    limit = cfg.limits.max_token_steps
    if work > limit:
        raise RequestError(422, f"request needs {work} token-steps ({generated} frames x {steps} steps x {tokens} "
                                f"tokens), more than limits.max_token_steps={limit}: ask for fewer frames, steps or "
                                "pixels")
    return work


def video_tokens(info: ModelInfo) -> tuple[int, int]:
    """(fps, seconds) tokens of a video request: the checkpoint's recorded ``sampling`` fps / duration (what the
    engine's ``GenerationBundle.plan`` uses too), else the sampler's defaults."""
    return int(info.sampling.get("fps") or DEFAULT_FPS), int(info.sampling.get("duration") or DEFAULT_SECONDS)


def latent_frames(req: GenerateRequest, cfg: ServeConfig, info: ModelInfo) -> int:
    """Latent frames of the request (defaults per mode and checkpoint), checked against ``limits.max_frames``."""
    if req.mode == "t2i":
        if req.num_frames not in (None, 1):
            raise RequestError(422, f"num_frames={req.num_frames}: t2i makes exactly one frame")
        return 1
    fps, seconds = video_tokens(info)
    default = cfg.defaults.frames or 1 + math.ceil((fps * seconds - 1) / 4)
    frames = req.num_frames if req.num_frames is not None else min(default, cfg.limits.max_frames)
    _check_range("num_frames", frames, 2 if req.mode == "i2v" else 1, cfg.limits.max_frames)
    return frames


def check_sequence(req: GenerateRequest, frames: int, size: tuple[int, int], info: ModelInfo) -> None:
    """Upper bound of the sampled sequence length (prompt bytes + 64 for the template, then the frames) vs the
    model's max."""
    h, w = size[1] // info.spatial, size[0] // info.spatial
    need = sequence_length(len(req.prompt.encode()) + 64, frames, h, w)
    if need > info.max_seq_len:
        raise RequestError(422, f"request needs up to {need} tokens, the model's max_seq_len is {info.max_seq_len}")


def build_job(req: GenerateRequest, cfg: ServeConfig, info: ModelInfo) -> Job:
    """Validate a parsed request against the limits and turn it into a :class:`Job` (no sampler work).

    Raises:
        RequestError: 4xx with one line.
    """
    limits = cfg.limits
    prompt = req.prompt.strip()
    if not prompt:
        raise RequestError(422, "prompt must not be empty")
    if len(req.prompt) > limits.max_prompt_chars:
        raise RequestError(422, f"prompt has {len(req.prompt)} characters, limit is {limits.max_prompt_chars}")
    if req.mode == "i2v" and not req.image:
        raise RequestError(422, "mode 'i2v' needs an image (base64)")
    if req.mode != "i2v" and req.image is not None:
        raise RequestError(422, f"image is only used by mode 'i2v', not {req.mode!r}")
    if req.mode == "t2i" and req.format == "mp4":
        raise RequestError(422, "mode 't2i' makes one image: use format png, gif or tokens")
    frames = latent_frames(req, cfg, info)
    # unset: the service's sampler settings, else the checkpoint's sampling entry, else upstream's (one rule)
    default = cfg.sampler.with_defaults(info.sampling)
    steps = req.steps if req.steps is not None else min(default.steps, limits.max_steps)
    _check_range("steps", steps, 1, limits.max_steps)
    cfg_scale = req.cfg_scale if req.cfg_scale is not None else default.cfg_scale
    if cfg_scale is not None:
        if not math.isfinite(cfg_scale):
            raise RequestError(422, "cfg_scale must be a finite number")
        _check_range("cfg_scale", cfg_scale, limits.min_cfg, limits.max_cfg)
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    _check_range("seed", seed, 0, MAX_SEED)
    if req.mode != "t2i" and max(video_tokens(info)) > info.max_number:
        raise RequestError(422, f"layout {info.layout} cannot say fps/duration {video_tokens(info)}")
    timeout = limits.request_timeout_s if req.timeout_s is None else req.timeout_s
    if not 0 < timeout <= limits.request_timeout_s:
        raise RequestError(422, f"timeout_s={timeout} must be in (0, {limits.request_timeout_s}]")
    size = output_size(req, cfg, info)
    check_sequence(req, frames, size, info)
    check_work(req, frames, steps, size, cfg, info)
    image = decode_image(req.image, cfg, size) if req.mode == "i2v" else None
    return Job(prompt=prompt, mode=req.mode, frames=frames, steps=steps, cfg_scale=cfg_scale, seed=seed,
               width=size[0], height=size[1], image=image, deadline=time.time() + timeout)


def output_format(req: GenerateRequest) -> str:
    """The requested format, else png for t2i and gif for videos."""
    return req.format or ("png" if req.mode == "t2i" else "gif")


def encode_result(result: JobResult, fmt: str, job: Job) -> bytes:
    """Response body of a finished job: media bytes, or JSON ``{"codes", "shape", ...}`` for ``tokens``."""
    if fmt == "tokens":
        return json.dumps({"codes": result.codes.tolist(), "shape": list(result.codes.shape), "seed": job.seed,
                           "mode": job.mode, "fps": result.fps}).encode()
    from lumos.media import encode_video

    frames = result.frames
    return encode_video(frames, fps=result.fps, format=fmt, png_strip=fmt == "png" and frames.shape[0] > 1)


def result_headers(result: JobResult, job: Job) -> dict[str, str]:
    """``X-Lumos-*`` headers: the seed (to reproduce), output frames, rows of the batched call, sampler seconds."""
    n = 0 if result.frames is None else int(result.frames.shape[0])
    return {"X-Lumos-Seed": str(job.seed), "X-Lumos-Frames": str(n), "X-Lumos-Batch-Rows": str(result.rows),
            "X-Lumos-Seconds": f"{result.seconds:.3f}"}


def sse(event: str, data: dict) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


__all__ = ["CONTENT_TYPES", "FORMATS", "GenerateRequest", "RequestError", "advertised_limits", "build_job",
           "check_work", "decode_image", "describe", "encode_result", "max_side", "output_format", "parse_request",
           "result_headers", "sse"]
