"""Frame readers for the decode child process: decord, PyAV and Pillow (DESIGN §4; LUMOS_SPEC §3.1).

* :func:`probe` — size and display rotation (PyAV: the header plus the first frame).
* :class:`DecordReader` — the default: ``get_batch`` (seek) or a sequential ``next()`` read of a clip's span, as
  :func:`tokenize_jobs.decode.choose_strategy` decides; it keeps its position between the clips of one input, and
  decord scales frames to the size upstream's box halvings would reach for the bucket while it converts them to
  RGB (converting and then resizing full-size frames costs about as much as decoding them: on bigbuckbunny 720p,
  17 frames cost 389 ms of CPU at full size and 214 ms scaled to 160×90, plus ~70 ms of resizing avoided).
* :class:`PyAVReader` — containers decord cannot open; MPEG program/transport streams (``.mpg``, ``.ts``, ...),
  whose frame index decord gets wrong (on ``cityCC0.mpg`` decord returns the stream shifted by 12 frames and its
  seeks land on other frames than its own sequential read); and videos with a display rotation, for which decord
  0.6 returns 4-channel garbage. PyAV decodes forward from the start and rotates frames upright.
* :class:`ImageReader` — stills as 1-frame videos; RGBA/LA/transparent-palette images composited on white, as
  upstream.

All return uint8 (N, H, W, 3) RGB. Imported only inside the child (decord, PyAV and Pillow load lazily).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lumos.buckets import choose_bucket, halving_factor
from tokenize_jobs.cli import one_line
from tokenize_jobs.decode import ClipSettings, InputError, VideoInfo

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
PYAV_EXTS = frozenset({".mpg", ".mpeg", ".m2v", ".vob", ".ts", ".m2ts", ".mts"})
"""Containers read with PyAV because decord's frame index is wrong for them (see the module docstring)."""

@dataclass(frozen=True)
class Probe:
    """What the container says before decoding more than its first frame (PyAV)."""

    width: int
    height: int
    """Display orientation (after rotation)."""
    rotation: int
    """Display rotation in degrees, counter-clockwise (0, 90, 180, 270)."""


def probe(path: str) -> Probe | None:
    """Size and display rotation of the first video stream (PyAV decodes one frame for the rotation); None when
    PyAV cannot read the file (decord may still)."""
    try:
        import av

        with av.open(path) as c:
            s = c.streams.video[0]
            w, h = int(s.codec_context.width), int(s.codec_context.height)
            frame = next(c.decode(s), None)
    except Exception:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        return None
    rotation = int(round(frame.rotation or 0)) % 360 if frame is not None else 0
    if frame is not None:
        w, h = frame.width, frame.height
    if rotation in (90, 270):
        w, h = h, w
    return Probe(w, h, rotation) if w and h else None


class DecordReader:
    """decord ``VideoReader`` with both read strategies; keeps its position between the clips of one input.

    Args:
        path: local file.
        threads: decoder threads.
        scale_to: (width, height) decord scales frames to while converting them to RGB — the box-halving part of
            the bucket resize done inside the decoder (converting and then resizing full-size frames costs about as
            much as decoding them); None keeps the stored size.
        size: the display size when already probed.
    """

    backend = "decord"

    def __init__(self, path: str, threads: int = 1, scale_to: tuple[int, int] | None = None,
                 size: tuple[int, int] | None = None):
        import decord

        if size is None:
            p = probe(path)
            size = (p.width, p.height) if p else None
        self.size = size
        kwargs = {"width": scale_to[0], "height": scale_to[1]} if scale_to else {}
        self.vr = decord.VideoReader(path, num_threads=threads, **kwargs)
        self.pos = 0

    def info(self) -> VideoInfo:
        vr = self.vr
        n = len(vr)
        fps = float(vr.get_avg_fps() or 0) or 25.0
        w, h = self.size or (0, 0)
        if not self.size and n:
            h, w = vr[0].shape[:2]
            vr.seek(0)
        ts = vr.get_frame_timestamp(range(n))[:, 0].tolist() if n else None
        keys = sorted(int(k) for k in vr.get_key_indices()) or [0]
        return VideoInfo(int(w), int(h), n, fps, _duration(ts, n, fps), self.backend, keys, ts)

    def read(self, indices: list[int], strategy: str) -> np.ndarray:
        """uint8 (len(indices), H, W, 3) frames, by ``get_batch`` or by a sequential read of the span."""
        if strategy == "seek":
            order = sorted(set(indices))
            frames = self.vr.get_batch(order).asnumpy()[_unique_positions(indices)]
            self.pos = order[-1] + 1
            return frames
        first, last = min(indices), max(indices)
        if first != self.pos:
            self.vr.seek_accurate(first)
        wanted, got = set(indices), {}
        for i in range(first, last + 1):
            frame = self.vr.next()
            if i in wanted:
                got[i] = frame.asnumpy()
        self.pos = last + 1
        return np.stack([got[i] for i in indices])


def _unique_positions(indices: list[int]) -> list[int]:
    order = sorted(set(indices))
    pos = {v: j for j, v in enumerate(order)}
    return [pos[i] for i in indices]


def _duration(ts: list[float] | None, n: int, fps: float) -> float:
    if ts and len(ts) >= 2 and ts[-1] > ts[0]:
        step = (ts[-1] - ts[0]) / (len(ts) - 1)
        return ts[-1] - ts[0] + step
    return n / fps


class PyAVReader:
    """PyAV (FFmpeg) sequential reader for containers decord cannot open or indexes wrongly."""

    backend = "pyav"

    def __init__(self, path: str, threads: int = 1, rotation: int = 0):
        import av

        self.path, self.rotation = path, rotation
        with av.open(path) as c:
            if not c.streams.video:
                raise InputError("open", "no video stream")
            s = c.streams.video[0]
            self.width, self.height = s.codec_context.width, s.codec_context.height
            if rotation in (90, 270):
                self.width, self.height = self.height, self.width
            rate = s.average_rate or s.guessed_rate
            self.fps = float(rate) if rate else 25.0
            self.count = int(s.frames) or sum(1 for p in c.demux(s) if p.size)
        self._container = self._frames = None
        self._next = 0

    def info(self) -> VideoInfo:
        n = self.count
        return VideoInfo(self.width, self.height, n, self.fps, n / self.fps, self.backend, [0], None)

    def read(self, indices: list[int], strategy: str) -> np.ndarray:
        """Decode forward from the current position (reopening only to go back), keeping the sampled frames."""
        wanted, got, last = set(indices), {}, max(indices)
        if self._frames is None or min(indices) < self._next:
            self._reopen()
        while self._next <= last:
            frame = next(self._frames, None)
            if frame is None:
                break
            if self._next in wanted:
                got[self._next] = np.rot90(frame.to_ndarray(format="rgb24"), self.rotation // 90)  # CCW
            self._next += 1
        missing = [i for i in indices if i not in got]
        if missing:
            raise InputError("decode", f"stream ended before frame {missing[0]} ({self._next} frames decoded)")
        return np.ascontiguousarray(np.stack([got[i] for i in indices]))

    def _reopen(self) -> None:
        import av

        if self._container is not None:
            self._container.close()
        self._container = av.open(self.path)
        self._frames = self._container.decode(video=0)
        self._next = 0


class ImageReader:
    """A still image as a 1-frame video (RGBA and palette images composited on white)."""

    backend = "image"

    def __init__(self, path: str, threads: int = 1):
        from PIL import Image

        self.image = Image.open(path)
        self.width, self.height = self.image.size

    def info(self) -> VideoInfo:
        return VideoInfo(self.width, self.height, 1, 1.0, 1.0, self.backend, [0], None)

    def read(self, indices: list[int], strategy: str) -> np.ndarray:
        from PIL import Image, ImageOps

        img = ImageOps.exif_transpose(self.image)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img)
        frame = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return np.stack([frame] * len(indices))


def source_ext(source: str) -> str:
    """Lower-case file extension of a path or URI (``.mp4``)."""
    return os.path.splitext(source.split("?")[0])[1].lower()


def open_reader(path: str, source: str, settings: ClipSettings | None = None):
    """A reader for a local file (``source`` is the original URI, used for its extension).

    Videos with a display rotation go to PyAV (decord 0.6 returns 4-channel garbage for them and its
    ``get_batch`` fails), as do MPEG program/transport streams; decord scales frames inside the decoder down to the
    size upstream's box halvings reach for the input's bucket (:func:`decoder_scale`).

    Raises:
        InputError: stage ``open`` when neither decord nor PyAV (nor Pillow, for images) can open it.
    """
    settings = settings or ClipSettings()
    threads = max(1, settings.threads)
    ext = source_ext(source)
    if ext in IMAGE_EXTS:
        try:
            return ImageReader(path, threads)
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
            raise InputError("open", f"not a readable image: {one_line(e)}") from None
    p = probe(path)
    if ext not in PYAV_EXTS and (p is None or p.rotation == 0):
        try:
            return DecordReader(path, threads, decoder_scale(p, settings), (p.width, p.height) if p else None)
        except Exception:  # noqa: BLE001, S110 - decord's messages say little; PyAV's below are reported
            pass
    try:
        return PyAVReader(path, threads, p.rotation if p else 0)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise InputError("open", f"not a readable video: {one_line(e)}") from None


def decoder_scale(p: Probe | None, settings: ClipSettings) -> tuple[int, int] | None:
    """(width, height) for decord to scale to: the input after upstream's box halvings for its bucket, or None."""
    if p is None or max(p.width, p.height) > settings.max_resolution:
        return None  # rejected by the resolution check right after opening
    bucket = choose_bucket(p.width, p.height, settings.target_size, settings.patch, settings.max_aspect)
    f = halving_factor(p.width, p.height, bucket)
    return (p.width // f, p.height // f) if f > 1 else None
