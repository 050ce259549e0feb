"""Clip decoding: clip planning, the seek-vs-sequential cost model, both decord strategies against PyAV, the PyAV
and image paths, and the child-process worker with its timeout (tokenize_jobs/decode.py, readers.py, worker.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tj_media import one_frame_video, pyav_frames, truncated_copy, write_image, write_video

from lumos.buckets import resize_center_crop
from tokenize_jobs.decode import (
    ClipSettings,
    InputError,
    VideoInfo,
    choose_strategy,
    clip_starts,
    plan_clips,
    seek_cost,
    sequential_cost,
)
from tokenize_jobs.readers import DecordReader, decoder_scale, open_reader, probe
from tokenize_jobs.worker import DecodeWorker


@pytest.mark.parametrize("fps,seconds,frames", [(12, 2, 25), (8, 1, 9), (4, 1, 5), (10, 1, 13), (6, 0.5, 5),
                                                (12, 0, 1), (3, 1, 5)])
def test_frames_per_clip_is_fps_times_seconds_plus_one_rounded_to_1_plus_4k(fps, seconds, frames):
    assert ClipSettings(fps=fps, seconds=seconds).frames_per_clip == frames


@pytest.mark.parametrize("kwargs,name", [({"fps": 0}, "fps"), ({"fps": 2.5}, "fps"), ({"seconds": -1}, "seconds"),
                                         ({"clip_policy": "middle"}, "clip_policy"), ({"patch": 0}, "patch"),
                                         ({"target_size": 8, "patch": 16}, "target_size"),
                                         ({"timeout_s": 0}, "timeout_s")])
def test_bad_settings_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ClipSettings(**kwargs)


def test_clip_starts_per_policy():
    assert clip_starts(10.0, 2.0, "center") == [4.0]
    assert clip_starts(10.0, 2.0, "first") == [0.0]
    assert clip_starts(10.0, 2.0, "all") == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert clip_starts(10.0, 2.0, "all", max_clips=2) == [0.0, 2.0]
    assert clip_starts(2.0, 2.0, "all") == [0.0]
    with pytest.raises(InputError) as e:
        clip_starts(1.9, 2.0, "center")
    assert e.value.stage == "sample" and "too short" in e.value.message


def test_plan_samples_at_the_target_fps_without_overlap():
    info = VideoInfo(640, 272, 250, 25.0, 10.0, "decord", [0, 30, 76])
    plans = plan_clips(info, ClipSettings(fps=5, seconds=1.6, clip_policy="all"))  # 9 frames, 1.8 s windows
    assert len(plans) == 5
    for p in plans:
        assert len(p.indices) == 9
        assert np.all(np.diff(p.indices) == 5)  # 25 fps source, 5 fps samples
    last_of = [p.indices[-1] for p in plans]
    first_of = [p.indices[0] for p in plans]
    assert all(a < b for a, b in zip(last_of, first_of[1:]))  # non-overlapping
    image = VideoInfo(50, 40, 1, 1.0, 1.0, "image")
    assert [p.indices for p in plan_clips(image, ClipSettings())] == [[0]]


def test_upsampling_repeats_frames():
    info = VideoInfo(64, 48, 10, 5.0, 2.0, "decord")
    (plan,) = plan_clips(info, ClipSettings(fps=10, seconds=1, clip_policy="first"))
    assert plan.indices == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6][:len(plan.indices)]


def test_cost_model_prefers_seeks_for_sparse_samples_and_reading_for_dense_ones():
    sparse = list(range(0, 400, 25))  # 16 samples, one every 25 frames
    short_gops = list(range(0, 400, 12))
    assert choose_strategy(sparse, short_gops) == "seek"
    assert seek_cost(sparse, short_gops) < sequential_cost(sparse, short_gops)
    dense = list(range(100, 140))  # every frame, GOPs of 2: a seek per GOP costs more than decoding through
    tiny_gops = list(range(0, 400, 2))
    assert choose_strategy(dense, tiny_gops) == "sequential"
    one_gop = [0]
    # one GOP: get_batch never seeks and converts only the samples
    assert choose_strategy(sparse, one_gop) == "seek"
    # from the current position inside the same GOP, reading on costs no seek
    assert sequential_cost([50, 51], [0, 40], pos=45) < sequential_cost([50, 51], [0, 40], pos=0)


@pytest.mark.parametrize("gop", [None, 6])
def test_both_decord_strategies_return_the_pyav_reference_frames(clip_medium, tmp_path, gop):
    src = clip_medium if gop is None else write_video(tmp_path / "g.mp4", pyav_frames(clip_medium)[:120], gop=gop)
    ref = pyav_frames(src)
    reader = DecordReader(str(src))
    info = reader.info()
    assert (info.width, info.height, info.num_frames) == (ref.shape[2], ref.shape[1], len(ref))
    if gop:
        assert info.keyframes[:3] == [0, 6, 12]
    plans = plan_clips(info, ClipSettings(fps=5, seconds=1.6, clip_policy="all"))
    for strategy in ("seek", "sequential"):
        reader = DecordReader(str(src))
        for p in plans:
            np.testing.assert_array_equal(reader.read(p.indices, strategy), ref[p.indices])


@pytest.fixture(scope="module")
def worker():
    w = DecodeWorker(ClipSettings(fps=4, seconds=1, clip_policy="all", target_size=64, patch=16, timeout_s=20))
    yield w
    w.close()


def test_worker_reads_resized_clips(worker, clip_small):
    info = worker.open(str(clip_small))
    assert (info.backend, info.width, info.height, info.num_frames) == ("decord", 176, 144, 120)
    plans = plan_clips(info, worker.settings)
    assert len(plans) == 3  # 4.0 s of video, 1.25 s windows
    frames, decode_s = worker.read(plans[1], "sequential", (64, 48))
    assert frames.shape == (5, 48, 64, 3) and decode_s > 0
    # exactly what the same readers give in this process ...
    reader = open_reader(str(clip_small), str(clip_small), worker.settings)
    np.testing.assert_array_equal(frames, resize_center_crop(reader.read(plans[1].indices, "seek"), (64, 48)))
    # ... and, with decord scaling inside the decoder, close to PyAV full frames + the Pillow recipe
    ref = resize_center_crop(pyav_frames(clip_small)[plans[1].indices], (64, 48))
    assert np.abs(frames.astype(int) - ref).mean() < 4


def test_decoder_scale_is_the_box_halving_size(clip_hd):
    settings = ClipSettings(target_size=64, patch=16)
    p = probe(str(clip_hd))
    assert (p.width, p.height, p.rotation) == (1280, 720, 0)
    assert decoder_scale(p, settings) == (160, 90)  # 3 halvings for the 80x48 bucket
    reader = open_reader(str(clip_hd), str(clip_hd), settings)
    assert reader.info().width == 1280 and reader.read([0, 40], "seek").shape == (2, 90, 160, 3)


def test_rotated_video_is_read_upright_through_pyav(worker, tmp_path):
    frames = np.zeros((12, 48, 80, 3), np.uint8)
    frames[:, :, :40] = 255  # left half white in the stored frames
    path = write_video(tmp_path / "rot.mp4", frames, fps=8, rotation=90)
    info = worker.open(str(path))
    assert (info.backend, info.width, info.height) == ("pyav", 48, 80)  # display orientation
    (plan,) = plan_clips(info, ClipSettings(fps=4, seconds=1, clip_policy="first"))
    out, _ = worker.read(plan, "sequential", (48, 80))
    # 90° counter-clockwise: the stored left half ends up at the bottom
    assert out.shape == (5, 80, 48, 3) and out[:, 44:].mean() > 250 and out[:, :36].mean() < 5


def test_mpeg_program_stream_goes_through_pyav(worker, clip_mpeg2):
    info = worker.open(str(clip_mpeg2))
    assert info.backend == "pyav" and (info.width, info.height) == (720, 405)
    ref = pyav_frames(clip_mpeg2)
    assert info.num_frames == len(ref)
    plans = plan_clips(info, worker.settings)
    frames, _ = worker.read(plans[-1], "sequential", (80, 48))
    np.testing.assert_array_equal(frames, resize_center_crop(ref[plans[-1].indices], (80, 48)))


def test_images_are_one_frame_clips_with_alpha_on_white(worker, tmp_path):
    png = write_image(tmp_path / "a.png", (120, 80), rgba=True)
    info = worker.open(str(png))
    assert info.is_image and plan_clips(info, worker.settings)[0].indices == [0]
    frames, _ = worker.read(plan_clips(info, worker.settings)[0], "sequential", (120 // 2 * 2, 80))
    assert frames.shape == (1, 80, 120, 3)
    assert (frames[0, :, :50] == 255).all()  # transparent half composited on white


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,stage,match", [
    (lambda d, c: d / "missing.mp4", "read", "no such file"),
    (lambda d, c: _write(d / "zero.mp4", b""), "read", "empty file"),
    (lambda d, c: _write(d / "text.mp4", b"not a video\n"), "open", "not a readable video"),
    (lambda d, c: truncated_copy(c, d / "trunc.mp4"), "open", "not a readable video"),
    (lambda d, c: one_frame_video(d / "one.mp4"), "sample", "too short"),
    (lambda d, c: _write(d / "bad.png", b"\x89PNG junk"), "open", "not a readable image"),
])
def test_bad_inputs_raise_input_errors_with_their_stage(worker, tmp_path, clip_medium, make, stage, match):
    path = make(tmp_path, clip_medium)
    with pytest.raises(InputError) as e:
        info = worker.open(str(path))
        plan_clips(info, worker.settings)
    assert e.value.stage == stage and match in e.value.message
    assert "\n" not in e.value.message


def test_resolution_limit_is_checked_before_decoding(clip_small):
    w = DecodeWorker(ClipSettings(max_resolution=100, timeout_s=20))
    try:
        with pytest.raises(InputError, match="over the limit 100"):
            w.open(str(clip_small))
    finally:
        w.close()


def test_a_hanging_input_times_out_and_the_worker_recovers(worker, tmp_path, clip_small):
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # opening a FIFO with no writer blocks forever: a real hang in the child
    hanging = DecodeWorker(ClipSettings(timeout_s=2))
    try:
        hanging.start()  # the child is up: the 2 s deadline below times the hang alone
        with pytest.raises(InputError) as e:
            hanging.open(str(fifo))
        assert e.value.stage == "open" and "timed out after 2 s" in e.value.message
        assert hanging.open(str(clip_small)).num_frames == 120  # a fresh child took over
    finally:
        hanging.close()
