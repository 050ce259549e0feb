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


def _empty_block(frame: np.ndarray, side: int, margin: int = 3) -> tuple[int, int]:
    """Top-left corner of a side×side block of pure background with ``margin`` pixels of background around it."""
    bg = np.all(frame == (24, 24, 32), axis=-1)
    n = side + 2 * margin
    for y in range(0, frame.shape[0] - n + 1, 2):
        for x in range(0, frame.shape[1] - n + 1, 2):
            if bg[y:y + n, x:x + n].all():
                return y + margin, x + margin
    raise AssertionError("no empty block")


def _largest_cell_below_min_area(size: int = 64) -> int:
    """Side (px) of the largest square palette cell that is still too small to be an object (8 px at 64 px)."""
    side = int(np.sqrt(metrics.MIN_AREA) * size)
    return side - 1 if side * side >= metrics.MIN_AREA * size * size else side


def test_extra_objects_and_clutter_count_against_counting_and_object_categories():
    three = sample_scene(np.random.default_rng(4), num_objects=3)
    cell = _largest_cell_below_min_area()
    assert cell * cell >= metrics.CLUTTER_AREA * 64 * 64
    frame = render_frame(three, 0.0, 64)
    for k, category in ((1, "single_object"), (2, "two_object")):
        asked = Scene(objects=three.objects[:k])
        assert metrics.geneval_scores(render_frame(asked, 0.0, 64), asked)["overall"] == 1.0
        extra = metrics.geneval_scores(frame, asked)  # the prompted objects plus 3 − k objects nobody asked for
        assert extra["counting"] == 0.0 and extra[category] == pytest.approx(k / 3)
        assert extra["position"] == 1.0  # the prompted objects themselves are still right
        clean = render_frame(asked, 0.0, 64)
        y, x = _empty_block(clean, cell)
        cluttered = clean.copy()
        cluttered[y:y + cell, x:x + cell] = COLORS[next(c for c in COLORS if c not in {o.color for o in asked.objects})]
        reading = metrics.read_frame(cluttered)
        assert len(reading.objects) == k and reading.clutter == 1  # a noise cell is clutter, not a small square
        spoilt = metrics.geneval_scores(cluttered, asked)
        assert spoilt["counting"] == 0.0 and spoilt[category] == pytest.approx(k / (k + 1))


def test_noise_like_coverage_is_not_read_as_objects():
    rng = np.random.default_rng(0)
    palette = np.array([(24, 24, 32), *COLORS.values()], dtype=np.uint8)
    for cell in (1, 2, 4, _largest_cell_below_min_area()):  # palette colour noise in cells, 40 % coloured
        n = -(-64 // cell)
        idx = np.where(rng.random((n, n)) < 0.4, rng.integers(1, len(palette), (n, n)), 0)
        frame = np.ascontiguousarray(np.repeat(np.repeat(palette[idx], cell, 0), cell, 1)[:64, :64])
        reading = metrics.read_frame(frame)
        assert reading.objects == [] and reading.clutter >= 1, (cell, reading.objects)
    # Irregular blobs large enough to be objects fit no shape: a plus sign and a ring.
    yy, xx = np.mgrid[:64, :64] + 0.5
    plus = ((abs(xx - 32) < 4) & (abs(yy - 32) < 16)) | ((abs(yy - 32) < 4) & (abs(xx - 32) < 16))
    ring = (np.hypot(xx - 32, yy - 32) < 16) & (np.hypot(xx - 32, yy - 32) > 9)
    for mask in (plus, ring):
        frame = np.where(mask[..., None], np.array(COLORS["red"], np.uint8), palette[0]).astype(np.uint8)
        reading = metrics.read_frame(frame)
        assert reading.objects == [] and reading.clutter == 1


def _scene_of_three() -> Scene:
    """A still red circle in the centre, a green square moving right from the top left, a blue triangle moving up
    from the bottom right (no contacts, no bounces in 2 s, nor in the variants the test draws)."""
    from lumos.shapes.world import ShapeObject, region_of

    objs = [("circle", "red", "still", 0.5, 0.5, 0.0, 0.0), ("square", "green", "right", 0.17, 0.17, 0.12, 0.0),
            ("triangle", "blue", "up", 0.83, 0.83, 0.0, -0.12)]
    return Scene(objects=[ShapeObject(shape=sh, color=c, size="small", region=region_of(x, y), motion=m, x=x, y=y,
                                      vx=vx, vy=vy) for sh, c, m, x, y, vx, vy in objs], seconds=2.0)


def test_motion_outcomes_name_why_an_object_did_not_move_as_prompted():
    scene = _scene_of_three()
    clip = render_clip(scene, 64, fps=4)
    assert metrics.motion_outcomes(clip, scene) == ["ok"] * 3

    drawn = _scene_of_three()
    drawn.objects[0].vy = 0.1  # the still circle drifts down by 0.2 of the frame
    drawn.objects[1].vx, drawn.objects[1].vy = 0.0, 0.12  # the square goes down, not right
    assert metrics.motion_outcomes(render_clip(drawn, 64, fps=4), scene) == ["moving", "wrong_direction", "ok"]

    frozen = _scene_of_three()
    for o in frozen.objects:
        o.vx = o.vy = 0.0
    assert metrics.motion_outcomes(render_clip(frozen, 64, fps=4), scene) == ["ok", "not_moving", "not_moving"]

    other = _scene_of_three()
    other.objects[1].shape, other.objects[2].color = "circle", "yellow"
    assert metrics.motion_outcomes(render_clip(other, 64, fps=4), scene) == ["ok", "wrong_shape", "missing"]

    gone = render_clip(scene, 64, fps=4)
    gone[-1] = render_frame(Scene(objects=scene.objects[1:], seconds=2.0), 2.0, 64)
    assert metrics.motion_outcomes(gone, scene) == ["lost", "ok", "ok"]
    # motion_direction credits exactly the "ok" objects
    for frames in (clip, render_clip(drawn, 64, fps=4), gone, render_clip(frozen, 64, fps=4)):
        got = metrics.motion_outcomes(frames, scene)
        assert metrics.vbench_scores(frames, scene)["motion_direction"] == pytest.approx(got.count("ok") / 3)
