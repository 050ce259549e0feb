"""Issue 17, serving limits without Ray: the advertised max_side is the one enforced, a bounded amount of work per
request, 413 for an image Pillow refuses as too large, and late jobs dropped before a batch starts (real model)."""

from __future__ import annotations

import base64
import struct
import time
import zlib

import pytest
from serve_helpers import SIZE, debug_checkpoint

from lumos.vocab import compact_layout
from workflows.serving.api import (
    GenerateRequest,
    RequestError,
    advertised_limits,
    build_job,
    decode_image,
    output_size,
)
from workflows.serving.config import ServeConfig, serve_config_from_args
from workflows.serving.engine import ModelInfo, SamplerEngine, model_info
from workflows.serving.jobs import Job


def compact_info(spatial: int = 8) -> ModelInfo:
    layout = compact_layout(1000)
    return ModelInfo(checkpoint="ckpt", preset="small", params=1, model={}, layout="compact", codebook_size=1000,
                     spatial=spatial, size_unit=spatial * layout.grid_unit, resolution=(64, 64), max_seq_len=1 << 20,
                     max_number=layout.num_max)


def test_advertised_max_side_is_the_enforced_one():
    cfg = ServeConfig(checkpoint="ckpt")  # limits.max_side 1024, more than the compact layout's grid tokens say
    info = compact_info()
    top = advertised_limits(cfg, info)["max_side"]
    assert top == 127 * 8 < cfg.limits.max_side
    assert output_size(GenerateRequest(prompt="a", width=top, height=top), cfg, info) == (top, top)
    compact_layout(1000).num_token(top // info.size_unit)  # the sampler can spell that grid
    with pytest.raises(RequestError, match=rf"width=1024 must be a multiple of 8 in \[8, {top}\]") as err:
        output_size(GenerateRequest(prompt="a", width=1024, height=64), cfg, info)
    assert err.value.status == 422
    small = serve_config_from_args({"checkpoint": "ckpt", "limits": {"max_side": 100}})  # rounded down to the size unit
    assert advertised_limits(small, info)["max_side"] == 96


def test_work_per_request_is_bounded_and_advertised():
    cfg = serve_config_from_args({"checkpoint": "ckpt",
                                 "limits": {"max_token_steps": 10_000, "max_frames": 8, "max_steps": 100}})
    info = compact_info()
    assert advertised_limits(cfg, info)["max_token_steps"] == 10_000
    ok = GenerateRequest(prompt="a", mode="t2v", num_frames=2, steps=10, width=64, height=64)  # 2*10*64 tokens
    assert build_job(ok, cfg, info).steps == 10
    big = GenerateRequest(prompt="a", mode="t2v", num_frames=8, steps=100, width=64, height=64)
    with pytest.raises(RequestError, match="51200 token-steps .* limits.max_token_steps=10000") as err:
        build_job(big, cfg, info)
    assert err.value.status == 422


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data: only the header is ever read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5000, 40000])  # over the limit; far over what Pillow agrees to open
def test_image_over_the_pixel_limit_is_413(side):
    cfg = ServeConfig(checkpoint="ckpt")
    with pytest.raises(RequestError, match="max_image_pixels") as err:
        decode_image(base64.b64encode(png_header(side, side)).decode(), cfg, (64, 64))
    assert err.value.status == 413


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> tuple[SamplerEngine, ModelInfo]:
    ckpt = debug_checkpoint(tmp_path_factory.mktemp("serve_limits"))
    return SamplerEngine.load(ckpt, device="cpu"), model_info(ckpt)


def test_jobs_past_their_deadline_are_dropped_before_sampling(engine):
    eng, _ = engine
    live = Job(prompt="a red circle", mode="t2i", frames=1, steps=2, cfg_scale=3.0, seed=1, width=SIZE,
               height=SIZE, deadline=time.time() + 600)
    late = Job(prompt="a red circle", mode="t2i", frames=1, steps=2, cfg_scale=3.0, seed=2, width=SIZE,
               height=SIZE, deadline=time.time() - 1)
    results = eng.run([late, live])
    assert results[0].status == 504 and results[0].rows == 0 and "timed out" in results[0].error
    assert results[1].status == 200 and results[1].rows == 1  # the live job ran alone
    (only_late,) = eng.run([late])
    assert only_late.status == 504 and only_late.frames is None


def test_default_video_frames_follow_the_checkpoints_recorded_fps():
    cfg = ServeConfig(checkpoint="ckpt")
    req = GenerateRequest(prompt="a", mode="t2v", width=64, height=64)
    assert build_job(req, cfg, compact_info()).frames == 7  # nothing recorded: the sampler's 12 fps x 2 s
    info = compact_info()
    info.sampling = {"fps": 8, "duration": 2}  # what the goal recipe records: the clips' 8 fps x 2 s
    assert build_job(req, cfg, info).frames == 5
    assert build_job(GenerateRequest(prompt="a", mode="t2v", num_frames=3), cfg, info).frames == 3
