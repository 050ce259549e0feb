"""Media I/O round trips (GIF/MP4/PNG) and image reading with alpha, plus input errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lumos.media import read_image, read_video_frames, write_video
from lumos.shapes.world import render_clip, sample_scene


@pytest.fixture(scope="module")
def clip():
    return render_clip(sample_scene(np.random.default_rng(0), num_objects=2), size=64, fps=8, num_frames=9)


def test_gif_round_trip_is_exact_and_keeps_repeated_frames(clip):
    frames = np.concatenate([clip[:3], np.repeat(clip[3:4], 4, axis=0)])  # identical consecutive frames
    out = read_video_frames(write_video(None, frames, fps=8, format="gif"))
    assert out.shape == frames.shape
    assert np.array_equal(out, frames)  # < 256 colours per frame: the palette is exact


def test_mp4_round_trip_decodes_with_decord(clip, tmp_path):
    import decord

    path = tmp_path / "clip.mp4"
    data = write_video(str(path), clip, fps=8)
    assert path.read_bytes() == data
    out = read_video_frames(data)
    assert out.shape == clip.shape
    assert np.abs(out.astype(int) - clip).mean() < 6
    vr = decord.VideoReader(str(path))
    assert len(vr) == len(clip) and vr[0].shape == (64, 64, 3) and abs(vr.get_avg_fps() - 8) < 1e-3


def test_png_first_frame_and_strip(clip):
    first = read_video_frames(write_video(None, clip, format="png"))
    assert first.shape == (1, 64, 64, 3) and np.array_equal(first[0], clip[0])
    strip = read_image(write_video(None, clip, format="png", png_strip=True))
    assert strip.shape == (64, 64 * len(clip), 3)


def test_write_to_buffer_and_torch_input_and_suffix(clip, tmp_path):
    buf = io.BytesIO()
    data = write_video(buf, torch.from_numpy(clip), fps=4, format="gif")
    assert buf.getvalue() == data
    write_video(str(tmp_path / "a.png"), clip)
    assert read_image(str(tmp_path / "a.png")).shape == (64, 64, 3)


def test_odd_sizes_are_padded_for_mp4():
    frames = np.zeros((3, 33, 35, 3), dtype=np.uint8)
    assert read_video_frames(write_video(None, frames, format="mp4")).shape == (3, 34, 36, 3)


def test_read_image_composites_rgba_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    img = read_image(buf.getvalue())
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[7, 7]) == (255, 255, 255)
    gray = io.BytesIO()
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(gray, format="JPEG")
    assert read_image(gray.getvalue()).shape == (4, 4, 3)


def test_media_errors(clip, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(None, clip.astype(np.float32), format="gif")
    with pytest.raises(ValueError, match="format"):
        write_video(None, clip, format="avi")
    with pytest.raises(ValueError, match="format must be given"):
        write_video(str(tmp_path / "x.bin"), clip)
    with pytest.raises(ValueError, match="\\[N,H,W,3\\]"):
        write_video(None, np.zeros((2, 8, 8, 4), np.uint8), format="gif")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(b"definitely not an image")
    with pytest.raises(ValueError, match="not a decodable video"):
        read_video_frames(b"\x00\x01 not a video at all" * 10)
