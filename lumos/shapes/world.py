"""The shapes world: a tiny procedural video domain with exact ground truth, for CPU-sized experiments.

A scene holds 1–3 objects (circle, square, triangle) in 7 well-separated colours and 2 sizes on a plain dark
background. Each object starts in one cell of a 3×3 region grid ("top left", "center", ...) and moves left,
right, up or down at a constant speed (bouncing off the borders) or stays still. Scenes are sampled so that objects
never touch during the scene's duration and never start moving towards the border they sit against, so the
caption's motion is also the net motion between the first and last frames. Rendering is numpy only, at any square
size and fps (objects live in normalized coordinates). Captions come from a small grammar; the ``train`` and
``heldout`` splits never share a caption (split = hash of the caption).

The GenEval/VBench-like scores that read rendered or generated frames back live in :mod:`lumos.shapes.metrics`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLORS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 90, 230), "yellow": (240, 210, 40),
    "purple": (160, 60, 200), "cyan": (40, 200, 210), "white": (240, 240, 240),
}
BACKGROUND = (24, 24, 32)
SIZES = {"small": 0.135, "large": 0.21}
"""Half-extent of an object (radius / half side) as a fraction of the frame size. 1.5× the first world's
(0.09 / 0.14): at 64 px an 8×-downsampling tokenizer then gives a small object ~2 latent cells across instead of
~1.4, enough for its shape to survive tokenization (docs/results.md, tokenizer ceiling)."""
REGION_ROWS = ("top", "middle", "bottom")
REGION_COLS = ("left", "center", "right")
MOTIONS = ("left", "right", "up", "down", "still")
MOTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
SPEED = 0.12
"""Speed of moving objects, in frame widths per second (lower for long scenes, see ``MAX_TRAVEL``)."""
MAX_TRAVEL = 0.24
"""Longest distance (frame fractions) an object travels during the scene's duration."""
JITTER = 0.04
"""Maximum offset of an object's start from its region's centre (frame fractions)."""
HELDOUT_FRACTION = 0.1
SPLITS = ("train", "heldout")


def region_name(row: int, col: int) -> str:
    """Name of a 3×3 grid cell: "top left", "top center", ..., "center", ..., "bottom right"."""
    if (row, col) == (1, 1):
        return "center"
    return f"{REGION_ROWS[row]} {REGION_COLS[col]}"


REGIONS = tuple(region_name(r, c) for r in range(3) for c in range(3))


def region_of(x: float, y: float) -> str:
    """Grid cell of a normalized point (x right, y down, both in [0, 1])."""
    col = min(int(np.clip(x, 0, 1) * 3), 2)
    row = min(int(np.clip(y, 0, 1) * 3), 2)
    return region_name(row, col)


@dataclass(kw_only=True)
class ShapeObject:
    """One object. Coordinates are fractions of the frame (x right, y down)."""

    shape: str
    color: str
    size: str
    region: str
    """Grid cell of the start position."""
    motion: str
    x: float
    y: float
    vx: float = 0.0
    """Velocity in frame fractions per second."""
    vy: float = 0.0

    @property
    def half(self) -> float:
        return SIZES[self.size]

    def position(self, t: float) -> tuple[float, float]:
        """Centre at time ``t`` seconds, bouncing off the borders."""
        return (_bounce(self.x + self.vx * t, self.half), _bounce(self.y + self.vy * t, self.half))

    def phrase(self, with_motion: bool = True) -> str:
        """Caption fragment, e.g. "a small red circle moving right in the top left"."""
        motion = ""
        if with_motion:
            motion = " staying still" if self.motion == "still" else f" moving {self.motion}"
        return f"a {self.size} {self.color} {self.shape}{motion} in the {self.region}"


@dataclass(kw_only=True)
class Scene:
    """A shapes-world scene: objects plus the duration its sampling guaranteed (no contacts, no bounces)."""

    objects: list[ShapeObject] = field(default_factory=list)
    seconds: float = 2.0

    def caption(self, with_motion: bool = True) -> str:
        """Caption from the grammar; ``with_motion=False`` for still images."""
        return join_phrases([o.phrase(with_motion) for o in self.objects])

    @property
    def split(self) -> str:
        return caption_split(self.caption())

    def to_dict(self) -> dict:
        """JSON-able ground truth (what the manifest's ``gt`` column holds)."""
        return {"seconds": self.seconds, "objects": [asdict(o) for o in self.objects],
                "caption": self.caption(), "split": self.split}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(objects=[ShapeObject(**o) for o in d["objects"]], seconds=float(d.get("seconds", 2.0)))


def join_phrases(phrases: list[str]) -> str:
    """"A", "A, and B", "A, B, and C"."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + ", and " + phrases[-1]


def caption_split(caption: str) -> str:
    """``heldout`` for a fixed ~10% of captions (by sha256), ``train`` otherwise."""
    h = int.from_bytes(hashlib.sha256(caption.encode("utf-8")).digest()[:8], "big")
    return "heldout" if (h % 1000) < HELDOUT_FRACTION * 1000 else "train"


def _bounce(p: float | np.ndarray, half: float):
    """Reflect a 1D coordinate into [half, 1 − half] (a triangle wave)."""
    lo, span = half, 1.0 - 2 * half
    q = np.mod(np.asarray(p) - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _allowed_motions(row: int, col: int) -> list[str]:
    """Motions that do not start towards the border the region touches."""
    banned = {(0, "up"), (2, "down")}
    out = [m for m in MOTIONS if (row, m) not in banned]
    return [m for m in out if (col, m) not in {(0, "left"), (2, "right")}]


def _sample_object(rng: np.random.Generator, row: int, col: int, color: str, speed: float) -> ShapeObject:
    motion = str(rng.choice(_allowed_motions(row, col)))
    dx, dy = MOTION_VECTORS[motion]
    x, y = (col + 0.5) / 3 + rng.uniform(-JITTER, JITTER), (row + 0.5) / 3 + rng.uniform(-JITTER, JITTER)
    return ShapeObject(shape=str(rng.choice(SHAPES)), color=color, size=str(rng.choice(list(SIZES))),
                       region=region_name(row, col), motion=motion, x=float(x), y=float(y),
                       vx=float(dx * speed), vy=float(dy * speed))


def _valid(objects: list[ShapeObject], seconds: float, margin: float = 0.03) -> bool:
    """No object reaches a border or touches another one within ``seconds``."""
    ts = np.linspace(0.0, seconds, 33)
    for o in objects:
        end = np.array([o.x + o.vx * seconds, o.y + o.vy * seconds])
        if end.min() < o.half or end.max() > 1 - o.half:
            return False
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            ax, ay = a.x + a.vx * ts, a.y + a.vy * ts
            bx, by = b.x + b.vx * ts, b.y + b.vy * ts
            gap = np.maximum(np.abs(ax - bx), np.abs(ay - by)) - a.half - b.half
            if gap.min() < margin:
                return False
    return True


def sample_scene(rng: np.random.Generator, num_objects: int | None = None, max_objects: int = 3,
                 seconds: float = 2.0, split: str | None = None) -> Scene:
    """Sample a valid scene.

    Args:
        rng: numpy generator (the only source of randomness).
        num_objects: exact object count (1–3); ``None`` = uniform in 1..max_objects.
        seconds: duration over which objects must not touch or bounce (renders may be longer); objects move at
            ``SPEED`` frame widths per second, slower when that would carry them over ``MAX_TRAVEL``.
        split: ``train`` / ``heldout`` to resample until the caption falls in that split; ``None`` = any.

    Returns:
        a :class:`Scene` with distinct colours and distinct start regions.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if num_objects is not None and not 1 <= num_objects <= 3:
        raise ValueError(f"num_objects must be 1..3, got {num_objects}")
    if not 1 <= max_objects <= 3:
        raise ValueError(f"max_objects must be 1..3, got {max_objects}")
    if not 0 < seconds <= 600:
        raise ValueError(f"seconds must be in (0, 600], got {seconds}")
    speed = min(SPEED, MAX_TRAVEL / seconds)
    for _ in range(10_000):
        n = num_objects or int(rng.integers(1, max_objects + 1))
        cells = rng.choice(9, size=n, replace=False)
        colors = rng.choice(list(COLORS), size=n, replace=False)
        objs = [_sample_object(rng, int(c) // 3, int(c) % 3, str(k), speed) for c, k in zip(cells, colors)]
        scene = Scene(objects=objs, seconds=float(seconds))
        if _valid(objs, seconds) and (split is None or scene.split == split):
            return scene
    raise RuntimeError("could not sample a valid scene")  # pragma: no cover - probability ~0


def _object_mask(o: ShapeObject, cx: float, cy: float, size: int, ss: int) -> np.ndarray:
    """Coverage in [0, 1] of one object on a size×size grid, supersampled ss×ss per pixel."""
    n = size * ss
    coords = (np.arange(n) + 0.5) / n
    xx, yy = coords[None, :], coords[:, None]
    h = o.half
    if o.shape == "circle":
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= h * h
    elif o.shape == "square":
        m = (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    else:  # triangle pointing up, inscribed in the object's bounding square
        rel = (yy - (cy - h)) / (2 * h)  # 0 at the apex, 1 at the base
        m = (rel >= 0) & (rel <= 1) & (np.abs(xx - cx) <= h * rel)
    return m.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render_frame(scene: Scene, t: float, size: int = 64, antialias: int = 2) -> np.ndarray:
    """Render the scene at time ``t`` seconds.

    Args:
        size: frame height = width in pixels.
        antialias: supersampling factor per axis (1 = hard edges).

    Returns:
        uint8 [size, size, 3].
    """
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = BACKGROUND
    for o in scene.objects:
        cx, cy = o.position(t)
        cov = _object_mask(o, float(cx), float(cy), size, antialias)[..., None]
        img = img * (1 - cov) + np.asarray(COLORS[o.color], dtype=np.float32) * cov
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_clip(scene: Scene, size: int = 64, fps: float = 8.0, num_frames: int | None = None,
                antialias: int = 2) -> np.ndarray:
    """Render a clip.

    Args:
        size: frame size in pixels (square).
        fps: frames per second.
        num_frames: frame count; ``None`` = ``round(scene.seconds * fps) + 1``.

    Returns:
        uint8 [N, size, size, 3].
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = int(round(scene.seconds * fps)) + 1 if num_frames is None else int(num_frames)
    if n < 1:
        raise ValueError(f"num_frames must be >= 1, got {n}")
    return np.stack([render_frame(scene, i / fps, size, antialias) for i in range(n)])


def caption(scene: Scene, with_motion: bool = True) -> str:
    """The scene's caption (see :meth:`Scene.caption`)."""
    return scene.caption(with_motion)


def scene_rng(seed: int, index: int = 0) -> np.random.Generator:
    """The generator for scene ``index`` of a seeded corpus (independent of how many scenes are drawn)."""
    return np.random.default_rng([int(seed), int(index)])
