"""Held-out prompt sets of the shapes world for ``workflows.eval`` (GenEval-like T2I, VBench-like T2V / I2V).

Every item is a :class:`~lumos.shapes.world.Scene` from the world's ``heldout`` split, so no prompt of a set is
ever a training caption (the split is a hash of the caption, :func:`lumos.shapes.world.caption_split`):

* ``t2i`` prompts are still captions (``Scene.caption(with_motion=False)``, what ``tokenize_jobs.synth --format png``
  writes), and the *still* caption must hash to ``heldout``. Note that ``sample_scene(split=...)`` splits by the
  motion caption, so a training corpus of stills must also be filtered by the still caption
  (:func:`is_heldout_prompt`; ``workflows.ablate`` does this) for the two sets to be disjoint.
* ``t2v`` / ``i2v`` prompts are motion captions; the scene's (motion) caption hashes to ``heldout``. I2V
  conditions on the scene's first frame rendered by the world (:func:`first_frames`).

Object counts cycle 1, 2, 3 so that every GenEval-like category (single object / colours need one object; two
objects / colour attribution need several) has items. Item ``i`` of a set depends only on (suite, seed, i).

The scene of each item is also the reference for the scores (:mod:`lumos.shapes.metrics`), and
:func:`reference_videos` renders the reference clips: the ground truth itself, and a *chance* clip that ignores
the prompt (t2i/t2v: an independent held-out scene; i2v: the same first frame with motions drawn at random) — the level
a model reaches that makes valid shapes-world media but does not follow the text — and a *noise* clip
(:func:`noise_videos`: colour noise and scattered blobs in the world's colours, what a model that has learnt the
palette but not objects draws). A metric that credits noise above chance is fooled by clutter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lumos.shapes.world import (
    BACKGROUND,
    COLORS,
    MAX_TRAVEL,
    MOTION_VECTORS,
    SPEED,
    Scene,
    ShapeObject,
    _allowed_motions,
    caption_split,
    render_clip,
    sample_scene,
    scene_rng,
)

SUITES = ("t2i", "t2v", "i2v")
_SUITE_SEED = {"t2i": 101, "t2v": 202, "i2v": 303}
"""Offsets so that the three suites draw different scenes from one ``seed``."""
REFERENCES = ("ground_truth", "chance", "noise")


@dataclass(frozen=True)
class EvalItem:
    """One held-out prompt and the scene it describes."""

    suite: str
    index: int
    scene: Scene
    prompt: str

    @property
    def num_objects(self) -> int:
        return len(self.scene.objects)

    def to_dict(self) -> dict:
        return {"suite": self.suite, "index": self.index, "prompt": self.prompt, "num_objects": self.num_objects,
                "gt": self.scene.to_dict()}


def is_heldout_prompt(prompt: str) -> bool:
    """True when ``prompt`` belongs to the world's held-out split (never used for training)."""
    return caption_split(prompt) == "heldout"


def _still_heldout_scene(rng: np.random.Generator, num_objects: int, seconds: float) -> Scene:
    """A scene whose still caption (no motion words) is held out."""
    for _ in range(10_000):
        scene = sample_scene(rng, num_objects=num_objects, seconds=seconds)
        if is_heldout_prompt(scene.caption(with_motion=False)):
            return scene
    raise RuntimeError("could not sample a held-out still scene")  # pragma: no cover - probability ~0


def prompt_set(suite: str, num: int, seed: int = 0, seconds: float = 2.0) -> list[EvalItem]:
    """The first ``num`` items of a suite's held-out set.

    Args:
        suite: ``t2i``, ``t2v`` or ``i2v``.
        num: number of items (>= 1).
        seed: set seed; item i depends only on (suite, seed, i).
        seconds: scene duration (the clip length the model generates; objects never touch or bounce in it).

    Returns:
        ``num`` items with object counts 1, 2, 3, 1, 2, 3, ...
    """
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r} must be one of {SUITES}")
    if num < 1:
        raise ValueError(f"num={num} must be >= 1")
    items = []
    for i in range(num):
        rng = scene_rng(seed * 1000 + _SUITE_SEED[suite], i)
        k = 1 + i % 3
        if suite == "t2i":
            scene = _still_heldout_scene(rng, k, seconds)
            prompt = scene.caption(with_motion=False)
        else:
            scene = sample_scene(rng, num_objects=k, seconds=seconds, split="heldout")
            prompt = scene.caption()
        items.append(EvalItem(suite, i, scene, prompt))
    return items


def clip_frames(latent_frames: int, temporal_compression: int = 4) -> int:
    """RGB frames decoded from ``latent_frames`` latent frames (1 + 4(F − 1))."""
    return 1 + temporal_compression * (latent_frames - 1)


def first_frames(items: list[EvalItem], size: int) -> np.ndarray:
    """The world's render of each scene at t = 0: uint8 [B, size, size, 3] (the I2V condition)."""
    return np.stack([render_clip(it.scene, size=size, num_frames=1)[0] for it in items])


def ground_truth(items: list[EvalItem], size: int, fps: float, num_frames: int) -> np.ndarray:
    """The world's renders: uint8 [B, N, size, size, 3]."""
    return np.stack([render_clip(it.scene, size=size, fps=fps, num_frames=num_frames) for it in items])


def _random_motions(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same objects at the same start, each with a motion drawn from those allowed in its region."""
    speed = min(SPEED, MAX_TRAVEL / scene.seconds)  # as sample_scene moves objects
    objects = []
    for o in scene.objects:
        row, col = int(np.clip(o.y, 0, 0.999) * 3), int(np.clip(o.x, 0, 0.999) * 3)
        motion = str(rng.choice(_allowed_motions(row, col)))
        dx, dy = MOTION_VECTORS[motion]
        objects.append(ShapeObject(shape=o.shape, color=o.color, size=o.size, region=o.region, motion=motion,
                                   x=o.x, y=o.y, vx=dx * speed, vy=dy * speed))
    return Scene(objects=objects, seconds=scene.seconds)


def chance_scenes(items: list[EvalItem], seed: int = 0) -> list[Scene]:
    """Prompt-ignoring scenes: t2i/t2v — independent held-out scenes (1–3 objects, uniform, as in training);
    i2v — the item's scene (the given first frame) with random motions."""
    rng = np.random.default_rng([seed, 7])
    if items and items[0].suite == "i2v":
        return [_random_motions(it.scene, rng) for it in items]
    return [sample_scene(scene_rng(seed * 1000 + 999, it.index), seconds=it.scene.seconds, split="heldout")
            for it in items]


NOISE_KINDS = ("pixel_noise", "block_noise", "smooth_noise", "blobs")
"""Flavours of :func:`noise_videos`, cycled over the items."""


def _smooth_noise_frame(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Uniform random RGB on a grid of ``cell``-pixel spacing, bilinearly interpolated (any colour, not only the
    palette's): uint8 [size, size, 3]."""
    n = -(-size // cell) + 1
    grid = rng.uniform(0, 255, (n, n, 3))
    t = (np.arange(size) + 0.5) / cell
    i = np.minimum(t.astype(int), n - 2)
    w = (t - i)[:, None]
    rows = grid[i] * (1 - w[..., None]) + grid[i + 1] * w[..., None]  # (size, n, 3)
    out = rows[:, i] * (1 - w.T[..., None]) + rows[:, i + 1] * w.T[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _noise_frame(rng: np.random.Generator, size: int, cell: int, density: float) -> np.ndarray:
    """Background with a ``density`` share of ``cell``×``cell`` pixel cells set to random palette colours."""
    palette = np.array([BACKGROUND, *COLORS.values()], dtype=np.uint8)
    n = -(-size // cell)
    idx = np.where(rng.random((n, n)) < density, rng.integers(1, len(palette), (n, n)), 0)
    return np.repeat(np.repeat(palette[idx], cell, 0), cell, 1)[:size, :size]


def _blob_clip(rng: np.random.Generator, size: int, fps: float, num_frames: int) -> np.ndarray:
    """3–12 irregular blobs (discs roughened by smooth noise, 0.3–1.3× an object's area) in random palette
    colours at random places, each drifting with its own random velocity: uint8 [N, size, size, 3]."""
    n = int(rng.integers(3, 13))
    colors = np.array([COLORS[c] for c in rng.choice(list(COLORS), size=n)], dtype=np.float32)
    radius = rng.uniform(0.07, 0.22, n)
    pos = rng.uniform(0.05, 0.95, (n, 2))
    vel = rng.normal(0, 0.12, (n, 2))
    # Per blob a radial roughness profile: a few random harmonics of the angle (irregular, not a clean shape).
    harm = rng.normal(0, 0.25, (n, 4, 2)) / np.arange(1, 5)[None, :, None]
    coords = (np.arange(size) + 0.5) / size
    xx, yy = coords[None, :], coords[:, None]
    out = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for f in range(num_frames):
        img = np.empty((size, size, 3), dtype=np.float32)
        img[:] = BACKGROUND
        for b in range(n):
            cx, cy = pos[b] + vel[b] * f / fps
            dx, dy = xx - cx, yy - cy
            ang = np.arctan2(dy, dx)
            k = np.arange(1, 5)[:, None, None]
            rough = 1 + (harm[b, :, 0, None, None] * np.cos(k * ang) + harm[b, :, 1, None, None] * np.sin(k * ang)).sum(0)
            img[np.hypot(dx, dy) <= radius[b] * np.clip(rough, 0.3, 2.0)] = colors[b]
        out[f] = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out


def noise_videos(items: list[EvalItem], size: int, fps: float, num_frames: int, seed: int = 0) -> np.ndarray:
    """Deterministic clutter in the world's colours, one clip per item: uint8 [B, N, size, size, 3].

    Item ``i`` gets flavour ``NOISE_KINDS[i % 4]`` (each object count of :func:`prompt_set` meets each flavour)
    and depends only on (seed, i): ``pixel_noise`` — every pixel background or a palette colour (10–60 %
    coloured), redrawn each frame; ``block_noise`` — the same in cells of 2–8 pixels; ``smooth_noise`` —
    :func:`_smooth_noise_frame` with 4–16 pixel cells, redrawn each frame; ``blobs`` — :func:`_blob_clip`.
    For I2V the first frame is the given one (the world's render), as a model's clip starts from it.
    """
    out = []
    for it in items:
        rng = np.random.default_rng([seed, 4242, it.index])
        kind = NOISE_KINDS[it.index % len(NOISE_KINDS)]  # 4 kinds, counts cycle by 3: every pair occurs
        if kind == "blobs":
            clip = _blob_clip(rng, size, fps, num_frames)
        elif kind == "smooth_noise":
            cell = int(rng.choice([4, 8, 16]))
            clip = np.stack([_smooth_noise_frame(rng, size, cell) for _ in range(num_frames)])
        else:
            cell = 1 if kind == "pixel_noise" else int(rng.choice([2, 4, 8]))
            density = rng.uniform(0.1, 0.6)
            clip = np.stack([_noise_frame(rng, size, cell, density) for _ in range(num_frames)])
        if it.suite == "i2v":
            clip[0] = render_clip(it.scene, size=size, num_frames=1)[0]
        out.append(clip)
    return np.stack(out)


def reference_videos(items: list[EvalItem], kind: str, size: int, fps: float, num_frames: int,
                     seed: int = 0) -> np.ndarray:
    """Reference media for the scores: uint8 [B, N, size, size, 3].

    Args:
        kind: ``ground_truth`` (the world's render of each item), ``chance`` (:func:`chance_scenes`) or ``noise``
            (:func:`noise_videos`).
    """
    if kind == "ground_truth":
        return ground_truth(items, size, fps, num_frames)
    if kind == "chance":
        return np.stack([render_clip(s, size=size, fps=fps, num_frames=num_frames)
                         for s in chance_scenes(items, seed)])
    if kind == "noise":
        return noise_videos(items, size, fps, num_frames, seed)
    raise ValueError(f"kind={kind!r} must be one of {REFERENCES}")


__all__ = ["NOISE_KINDS", "EvalItem", "REFERENCES", "SUITES", "chance_scenes", "clip_frames", "first_frames",
           "ground_truth", "is_heldout_prompt", "noise_videos", "prompt_set", "reference_videos"]
