"""Media I/O: write generated frames as GIF / MP4 / PNG, read images and videos back (LUMOS_SPEC §3.1).

Frames are uint8 ``[N, H, W, 3]`` (numpy or torch). GIF goes through Pillow (adaptive palette per frame; Pillow
merges identical consecutive frames into one longer frame, which :func:`read_video_frames` expands again),
MP4 through PyAV's bundled FFmpeg (H.264, yuv420p, decodable by decord), PNG is the first frame or a
horizontal strip of all frames. Images are read with Pillow; RGBA is composited on white as upstream does before
tokenization.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from lumos import storage

FORMATS = ("gif", "mp4", "png")
CONTENT_TYPES = {"gif": "image/gif", "mp4": "video/mp4", "png": "image/png"}
GIF_PERIOD_KEY = "lumos-frame-ms="


def check_frames(frames) -> np.ndarray:
    """Validate frames and return them as a contiguous uint8 numpy array [N, H, W, 3]."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    f = np.asarray(frames)
    if f.ndim == 3:
        f = f[None]
    if f.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {f.dtype}")
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < 1:
        raise ValueError(f"frames must have shape [N,H,W,3] with N >= 1, got {f.shape}")
    return np.ascontiguousarray(f)


def _gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    duration = max(int(round(1000.0 / fps)), 10)  # GIF delays are in 10 ms units; browsers clamp below 20 ms
    # Pillow merges identical consecutive frames; the comment records the frame period so readers can undo it.
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                   optimize=False, disposal=1, comment=f"{GIF_PERIOD_KEY}{duration}".encode())
    return buf.getvalue()


def _mp4_bytes(frames: np.ndarray, fps: float, crf: int) -> bytes:
    import av

    n, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes: pad by edge replication
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _png_bytes(frames: np.ndarray, strip: bool) -> bytes:
    img = np.concatenate(list(frames), axis=1) if strip else frames[0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def encode_video(frames, fps: float = 8.0, format: str = "gif", png_strip: bool = False, crf: int = 18) -> bytes:
    """Encode frames to media bytes.

    Args:
        frames: uint8 [N, H, W, 3] (or one frame [H, W, 3]).
        fps: frames per second (GIF/MP4).
        format: ``gif``, ``mp4`` or ``png``.
        png_strip: PNG only — all frames side by side instead of the first frame.
        crf: MP4 only — x264 quality (lower = better, 18 ≈ visually lossless).

    Returns:
        the encoded file as bytes.
    """
    f = check_frames(frames)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if format == "gif":
        return _gif_bytes(f, fps)
    if format == "mp4":
        return _mp4_bytes(f, fps, crf)
    return _png_bytes(f, png_strip)


def write_video(target, frames, fps: float = 8.0, format: str | None = None, png_strip: bool = False,
                crf: int = 18) -> bytes:
    """Write frames to a path/URI (local or s3://), a binary file object, or nowhere (``target=None``).

    Args:
        target: path/URI, writable binary buffer, or None.
        frames: uint8 [N, H, W, 3].
        fps: frames per second.
        format: ``gif``/``mp4``/``png``; ``None`` = from the path's suffix.

    Returns:
        the encoded bytes (also when written).
    """
    if format is None:
        suffix = Path(str(target)).suffix.lower().lstrip(".") if isinstance(target, str | Path) else ""
        if suffix not in FORMATS:
            raise ValueError(f"format must be given (gif|mp4|png) when target {target!r} has no such suffix")
        format = suffix
    data = encode_video(frames, fps=fps, format=format, png_strip=png_strip, crf=crf)
    if isinstance(target, str | Path):
        storage.write_bytes(str(target), data)
    elif target is not None:
        target.write(data)
    return data


def _load_bytes(source) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | Path):
        return storage.read_bytes(str(source))
    if hasattr(source, "read"):
        return source.read()
    raise ValueError(f"source must be bytes, a path/URI or a binary file object, got {type(source).__name__}")


def to_rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image as uint8 [H, W, 3]; transparency is composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(source) -> np.ndarray:
    """Read an image (PNG/JPEG/GIF first frame/...) from bytes, a path/URI or a file object.

    Returns:
        uint8 [H, W, 3], RGBA composited on white.
    """
    data = _load_bytes(source)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # Pillow raises several unrelated types for bad data
        raise ValueError(f"not a readable image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return to_rgb(img)


def _read_gif(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    comment = img.info.get("comment", b"").decode("latin-1")
    period = int(comment[len(GIF_PERIOD_KEY):]) if comment.startswith(GIF_PERIOD_KEY) else 0
    frames, durations = [], []
    for i in range(getattr(img, "n_frames", 1)):
        img.seek(i)
        frames.append(to_rgb(img))
        durations.append(int(img.info.get("duration", 0) or 0))
    base = period or min([d for d in durations if d > 0], default=0)
    if base == 0:
        return np.stack(frames)
    repeats = [max(1, int(round(d / base))) for d in durations]
    return np.stack([f for f, r in zip(frames, repeats) for _ in range(r)])


def _read_av(data: bytes, max_frames: int | None) -> np.ndarray:
    import av

    frames = []
    with av.open(io.BytesIO(data)) as container:
        for f in container.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError("video has no decodable frames")
    return np.stack(frames)


def read_video_frames(source, max_frames: int | None = None) -> np.ndarray:
    """Decode the frames of a GIF / MP4 (any FFmpeg container) / still image.

    GIF frames that Pillow merged (identical consecutive frames) are expanded back using their durations.

    Args:
        source: bytes, a path/URI or a binary file object.
        max_frames: stop after this many frames (``None`` = all).

    Returns:
        uint8 [N, H, W, 3].
    """
    data = _load_bytes(source)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _read_gif(data)[:max_frames]
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        return read_image(data)[None]
    import av

    try:
        return _read_av(data, max_frames)
    except (av.error.FFmpegError, EOFError) as e:  # some FFmpeg errors subclass ValueError: catch them first
        raise ValueError(f"not a decodable video ({type(e).__name__})") from None
