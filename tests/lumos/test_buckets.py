"""Aspect buckets (LUMOS_SPEC §4): candidate sizes, bucket choice, box/bicubic resize + centre crop."""

from __future__ import annotations

import numpy as np
import pytest

from lumos.buckets import (
    area_kept,
    bucket_sizes,
    choose_bucket,
    cover_size,
    fit_to_bucket,
    resize_center_crop,
)


@pytest.mark.parametrize("target,patch", [(352, 32), (528, 32), (656, 32), (64, 16), (128, 32)])
def test_bucket_sizes_obey_the_patch_budget_and_aspect_limit(target, patch):
    sizes = bucket_sizes(target, patch)
    budget = (target // patch) ** 2
    assert sizes and len(set(sizes)) == len(sizes)
    for w, h in sizes:
        assert w % patch == 0 and h % patch == 0
        assert (w // patch) * (h // patch) <= budget
        assert max(w, h) / min(w, h) <= 4.0
    # the square bucket that uses the whole budget is always a candidate
    side = (target // patch) * patch
    assert (side, side) in sizes


def test_spec_default_resolutions_for_16_by_9_video():
    assert choose_bucket(1280, 720, 352) == (448, 256)  # "256p"
    assert choose_bucket(1920, 1080, 528) == (672, 384)  # "384p"
    assert choose_bucket(720, 1280, 528) == (384, 672)  # portrait mirrors landscape


@pytest.mark.parametrize("w,h", [(176, 144), (640, 272), (1280, 720), (720, 405), (100, 1000), (333, 333)])
def test_choice_keeps_the_most_area_of_any_candidate(w, h):
    sizes = bucket_sizes(64, 16)
    chosen = choose_bucket(w, h, 64, 16)
    best = max(area_kept(w, h, s) for s in sizes)
    assert area_kept(w, h, chosen) == pytest.approx(best)


def test_bad_arguments_raise_one_clear_error():
    with pytest.raises(ValueError, match="patch"):
        bucket_sizes(64, 0)
    with pytest.raises(ValueError, match="target"):
        bucket_sizes(16, 32)
    with pytest.raises(ValueError, match="frame size"):
        choose_bucket(0, 10, 64, 16)
    with pytest.raises(ValueError, match="uint8"):
        resize_center_crop(np.zeros((4, 4, 3), np.float32), (4, 4))


def test_resize_shape_dtype_and_single_frame():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 144, 176, 3), dtype=np.uint8)
    out = resize_center_crop(video, (64, 48))
    assert out.shape == (3, 48, 64, 3) and out.dtype == np.uint8
    one = resize_center_crop(video[0], (64, 48))
    np.testing.assert_array_equal(one, out[0])


def test_same_size_is_identity_and_constant_stays_constant():
    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_center_crop(video, (64, 48)), video)
    flat = np.full((1, 300, 500, 3), 77, np.uint8)
    assert (resize_center_crop(flat, (80, 48)) == 77).all()


def test_exact_halving_is_a_2x2_box_average():
    rng = np.random.default_rng(2)
    video = rng.integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
    out = resize_center_crop(video, (48, 32))
    ref = video.astype(np.float64).reshape(1, 32, 2, 48, 2, 3).mean(axis=(2, 4))
    assert np.abs(out - ref).max() <= 1.0  # the box average (Pillow fixed point: within one level)


def test_center_crop_keeps_the_middle_of_a_wide_frame():
    # 3 vertical stripes; a square bucket must keep only the middle stripe's colour in its centre column
    frame = np.zeros((64, 192, 3), np.uint8)
    frame[:, :64] = (255, 0, 0)
    frame[:, 64:128] = (0, 255, 0)
    frame[:, 128:] = (0, 0, 255)
    out = resize_center_crop(frame, (32, 32))
    assert out.shape == (32, 32, 3)
    assert (np.abs(out[:, 8:24].astype(int) - (0, 255, 0)) <= 1).all()


def test_cover_size_covers_the_bucket():
    for w, h in [(176, 144), (1280, 720), (50, 400)]:
        bucket = choose_bucket(w, h, 64, 16)
        cw, ch = cover_size(w, h, bucket)
        assert cw >= bucket[0] and ch >= bucket[1]


def test_fit_to_bucket_matches_explicit_choice():
    img = np.random.default_rng(3).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    out = fit_to_bucket(img, 64, 16)
    np.testing.assert_array_equal(out, resize_center_crop(img, choose_bucket(160, 90, 64, 16)))
