"""Shapes world: sampling, rendering, captions, splits; metrics recover ground truth and score noise at chance."""

import json

import numpy as np
import pytest

from lumos.shapes import metrics
from lumos.shapes.world import (
    COLORS,
    REGIONS,
    Scene,
    caption_split,
    render_clip,
    render_frame,
    sample_scene,
    scene_rng,
)


def test_sampling_is_seeded_and_scenes_are_well_formed():
    a = [sample_scene(scene_rng(7, i)) for i in range(50)]
    b = [sample_scene(scene_rng(7, i)) for i in range(50)]
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    for s in a:
        assert 1 <= len(s.objects) <= 3
        assert len({o.color for o in s.objects}) == len(s.objects)
        assert len({o.region for o in s.objects}) == len(s.objects)
        assert all(o.region in REGIONS and o.color in COLORS for o in s.objects)
    assert {len(s.objects) for s in a} == {1, 2, 3}


def test_caption_grammar_and_json_round_trip():
    s = sample_scene(np.random.default_rng(0), num_objects=2)
    cap = s.caption()
    parts = cap.split(", and ")
    assert len(parts) == 2 and all(p.startswith("a ") for p in parts)
    for o, p in zip(s.objects, parts):
        assert o.color in p and o.shape in p and o.region in p
        assert ("staying still" in p) if o.motion == "still" else (f"moving {o.motion}" in p)
    assert "moving" not in s.caption(with_motion=False) and "still" not in s.caption(with_motion=False)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["caption"] == cap and d["split"] == s.split
    assert Scene.from_dict(d).to_dict() == s.to_dict()


def test_train_and_heldout_splits_never_share_a_caption():
    rng = np.random.default_rng(1)
    train = {sample_scene(rng, split="train").caption() for _ in range(300)}
    held = {sample_scene(rng, split="heldout").caption() for _ in range(100)}
    assert train and held and not (train & held)
    assert all(caption_split(c) == "heldout" for c in held)
    share = np.mean([sample_scene(rng).split == "heldout" for _ in range(400)])
    assert 0.03 < share < 0.2


def test_render_sizes_and_background():
    s = sample_scene(np.random.default_rng(2), num_objects=1)
    for size in (32, 64):
        clip = render_clip(s, size=size, fps=8)
        assert clip.shape == (17, size, size, 3) and clip.dtype == np.uint8
    frame = render_frame(s, 0.0, size=64)
    assert tuple(frame[0, 0]) == (24, 24, 32)
    assert render_clip(s, size=32, fps=4, num_frames=5).shape == (5, 32, 32, 3)
    with pytest.raises(ValueError, match="fps"):
        render_clip(s, fps=0)


def test_objects_bounce_off_borders_in_long_renders():
    s = sample_scene(np.random.default_rng(3), num_objects=1)
    o = s.objects[0]
    o.motion, o.vx, o.vy = "right", 0.5, 0.0
    xs = [o.position(t)[0] for t in np.linspace(0, 6, 200)]
    assert min(xs) >= o.half - 1e-9 and max(xs) <= 1 - o.half + 1e-9
    assert np.any(np.diff(xs) < 0) and np.any(np.diff(xs) > 0)


@pytest.mark.parametrize("size,scenes,need", [(64, 200, 0.99), (32, 100, 0.95)])
def test_metrics_recover_ground_truth(size, scenes, need):
    rng = np.random.default_rng(11)
    right = total = 0
    for _ in range(scenes):
        s = sample_scene(rng)
        clip = render_clip(s, size=size, fps=8)
        got = {o["color"]: o for o in metrics.recover_scene(clip[[0, -1]])}
        total += len(s.objects) + 1
        right += len(got) == len(s.objects)
        for o in s.objects:
            want = {"shape": o.shape, "color": o.color, "size": o.size, "region": o.region, "motion": o.motion}
            right += got.get(o.color) == want
    assert right / total >= need


def _blur(frame: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Separable Gaussian blur of std ``sigma`` px, or a 3×3 box blur (radius 1) when ``sigma`` is None."""
    if sigma is None:
        k = np.ones(3) / 3
    else:
        x = np.arange(-3, 4)
        k = np.exp(-0.5 * (x / sigma) ** 2)
        k /= k.sum()
    r = len(k) // 2
    f = np.pad(frame.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    f = sum(w * f[i:i + frame.shape[0]] for i, w in enumerate(k))
    f = sum(w * f[:, i:i + frame.shape[1]] for i, w in enumerate(k))
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [1.0, None])
def test_shapes_survive_a_one_pixel_blur(sigma):
    # Tokenizer reconstructions are blurred, with rounded corners; every shape must still read back.
    rng = np.random.default_rng(21)
    shapes = []
    for _ in range(40):
        s = sample_scene(rng)
        frame = render_frame(s, 0.0, 64)
        blurred = _blur(frame, sigma)
        assert np.abs(blurred.astype(int) - frame).max() > 50  # edges really are smeared
        got = {}
        for d in metrics.detect_objects(blurred):
            got.setdefault(d.color, d.shape)
        assert got == {o.color: o.shape for o in s.objects}
        shapes += [o.shape for o in s.objects]
    assert set(shapes) == {"circle", "square", "triangle"}


def test_classify_shape_on_ideal_and_blurred_masks():
    yy, xx = np.mgrid[:20, :20] + 0.5
    ideal = {"circle": (xx - 10) ** 2 + (yy - 10) ** 2 <= 64, "square": (abs(xx - 10) <= 8) & (abs(yy - 10) <= 8),
             "triangle": (yy >= 2) & (yy <= 18) & (abs(xx - 10) <= (yy - 2) / 2)}
    for shape, mask in ideal.items():
        assert metrics.classify_shape(mask) == shape
        soft = _blur(np.repeat(mask[..., None] * 255, 3, axis=-1).astype(np.uint8), 1.0)[..., 0] / 255
        assert metrics.classify_shape(soft) == shape
    with pytest.raises(ValueError, match="coverage"):
        metrics.classify_shape(np.zeros((5, 5)))


def test_scores_are_perfect_on_renders_and_near_chance_on_noise():
    rng = np.random.default_rng(5)
    scenes = [sample_scene(rng) for _ in range(12)]
    clean = [metrics.geneval_scores(render_frame(s, 0.0, 64), s) for s in scenes]
    video = [metrics.vbench_scores(render_clip(s, 64, fps=4), s) for s in scenes]
    assert metrics.summarize(clean)["overall"] == 1.0
    summary = metrics.summarize(video)
    assert summary["motion_direction"] == 1.0 and summary["subject_consistency"] == 1.0
    assert summary["background_stability"] > 0.97
    noise_rng = np.random.default_rng(0)
    noise = [noise_rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8) for _ in scenes]
    g = metrics.summarize([metrics.geneval_scores(n[0], s) for n, s in zip(noise, scenes)])
    v = metrics.summarize([metrics.vbench_scores(n, s) for n, s in zip(noise, scenes)])
    assert g["overall"] <= 0.1
    assert v["motion_direction"] <= metrics.MOTION_CHANCE + 0.05
    assert v["subject_consistency"] <= 0.1 and v["background_stability"] < 0.2


def test_geneval_categories_detect_wrong_attributes():
    s = sample_scene(np.random.default_rng(8), num_objects=2)
    wrong = Scene.from_dict(s.to_dict())
    wrong.objects[0].color = next(c for c in COLORS if c not in {o.color for o in s.objects})
    scores = metrics.geneval_scores(render_frame(wrong, 0.0, 64), s)
    assert scores["two_object"] == 1.0 and scores["color_attr"] == 0.0 and scores["position"] == 0.5


def test_metric_input_errors():
    with pytest.raises(ValueError, match="uint8"):
        metrics.detect_objects(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="frames"):
        metrics.vbench_scores(np.zeros((8, 8, 3), dtype=np.uint8))
