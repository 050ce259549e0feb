"""``workflows.eval`` and ``workflows.evaluation.eval_sets``: the scoring path on ground truth (≈ 1) and on noise (≈ chance),
held-out prompt sets, the CLI end to end on a debug checkpoint, I2V conditioning, batch independence, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lumos.checkpoint import save_checkpoint
from lumos.config import model_preset
from lumos.model import LumosModel
from lumos.sampler import SamplerConfig
from lumos.shapes.metrics import MOTION_CHANCE
from lumos.shapes.world import sample_scene, scene_rng
from lumos.tokenizers import build_video_tokenizer, default_tokenizer_uri, save_video_tokenizer
from workflows.eval import (
    T2I_CATEGORIES,
    VIDEO_METRICS,
    EvalSettings,
    aggregate,
    evaluate_suite,
    generate_batch,
    main,
    score_media,
)
from workflows.evaluation.eval_sets import (
    NOISE_KINDS,
    SUITES,
    first_frames,
    is_heldout_prompt,
    prompt_set,
    reference_videos,
)
from workflows.generation import UsageError, load_generator

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--size", "32", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A debug checkpoint (random weights) with the committed debug tokenizer, or a seeded fresh one."""
    root = tmp_path_factory.mktemp("eval_ckpt")
    try:
        tok = default_tokenizer_uri("debug")
    except ValueError:
        tok = str(root / "tokenizer")
        save_video_tokenizer(tok, build_video_tokenizer("debug", seed=0))
    torch.manual_seed(0)
    model = LumosModel(model_preset("debug", init_std=0.3))
    save_checkpoint(str(root / "ckpt"), model, model.cfg, extra={"video_tokenizer": tok, "text_tokenizer": None})
    return str(root / "ckpt")


def _frames(suite: str) -> int:
    return 1 if suite == "t2i" else 17


@pytest.mark.parametrize("suite", SUITES)
def test_ground_truth_renders_score_one(suite):
    items = prompt_set(suite, 12, seed=0)
    scores = aggregate(suite, score_media(suite, reference_videos(items, "ground_truth", 64, 8, _frames(suite)),
                                          items))
    if suite == "t2i":
        assert set(scores) == {*T2I_CATEGORIES, "overall"}
        assert all(v == 1.0 for v in scores.values()), scores
    else:
        assert set(scores) == set(VIDEO_METRICS)
        assert scores["motion_direction"] == 1.0 and scores["subject_consistency"] == 1.0
        assert scores["background_stability"] > 0.95


def test_motion_breakdown_of_ground_truth_is_all_ok_and_counts_each_prompted_motion():
    from workflows.evaluation.motion import breakdown, breakdown_table, item_outcomes

    items = prompt_set("t2v", 12, seed=0)
    outcomes = item_outcomes(reference_videos(items, "ground_truth", 64, 8, 17), items)
    assert [len(o) for o in outcomes] == [it.num_objects for it in items]
    assert [[want for want, _ in o] for o in outcomes] == [[x.motion for x in it.scene.objects] for it in items]
    counts = breakdown(outcomes)
    assert counts["all"] == {"ok": sum(it.num_objects for it in items)}
    assert sum(sum(c.values()) for m, c in counts.items() if m != "all") == counts["all"]["ok"]
    table = breakdown_table(counts)
    assert table.startswith("| prompted motion | objects | ok |") and "| all | " in table and "1.00" in table
    mixed = breakdown([[["still", "moving"], ["left", "ok"]], [["still", "ok"]]])
    assert mixed == {"left": {"ok": 1}, "still": {"ok": 1, "moving": 1}, "all": {"ok": 2, "moving": 1}}
    assert "| still | 2 | 0.50 | 0.50 |" in breakdown_table(mixed)


@pytest.mark.parametrize("suite", SUITES)
def test_slightly_noisy_ground_truth_still_scores_one(suite):
    """Decoded generations are never pixel-exact: mild noise on the renders must not move the scores."""
    items = prompt_set(suite, 6, seed=1)
    gt = reference_videos(items, "ground_truth", 64, 8, _frames(suite)).astype(np.int16)
    noisy = np.clip(gt + np.random.default_rng(0).normal(0, 6, gt.shape), 0, 255).astype(np.uint8)
    scores = aggregate(suite, score_media(suite, noisy, items))
    key = "overall" if suite == "t2i" else "motion_direction"
    assert scores[key] == 1.0, scores


@pytest.mark.parametrize("suite", SUITES)
def test_noise_and_prompt_ignoring_media_score_at_chance(suite):
    items = prompt_set(suite, 24, seed=0)
    noise = np.random.default_rng(0).integers(0, 256, (6, _frames(suite), 64, 64, 3), dtype=np.uint8)
    noise_scores = aggregate(suite, score_media(suite, noise, items[:6]))
    chance = aggregate(suite, score_media(suite, reference_videos(items, "chance", 64, 8, _frames(suite)), items))
    if suite == "t2i":
        assert noise_scores["overall"] <= 0.1
        assert chance["overall"] < 0.25  # valid scenes that ignore the prompt
    else:
        assert noise_scores["motion_direction"] <= MOTION_CHANCE
        assert noise_scores["subject_consistency"] <= 0.1  # nothing in noise looks like a palette object
    if suite == "i2v":  # same first frame, random motions: about one allowed motion in 3-5
        assert 0.1 <= chance["motion_direction"] <= 0.5
    if suite == "t2v":
        assert chance["motion_direction"] <= MOTION_CHANCE


def test_noise_reference_is_seeded_clutter_in_the_world_colours():
    items = prompt_set("i2v", 8, seed=0)
    a = reference_videos(items, "noise", 64, 8, 5, seed=0)
    assert a.shape == (8, 5, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, reference_videos(items, "noise", 64, 8, 5, seed=0))
    assert not np.array_equal(a[:, 1:], reference_videos(items, "noise", 64, 8, 5, seed=1)[:, 1:])
    assert np.array_equal(a[:4], reference_videos(items[:4], "noise", 64, 8, 5, seed=0))  # item-wise
    assert np.array_equal(a[:, 0], first_frames(items, 64))  # i2v: the given first frame, then clutter
    assert [NOISE_KINDS[i % len(NOISE_KINDS)] for i in range(4)] == list(NOISE_KINDS)
    assert all(np.abs(np.diff(v[1:].astype(int), axis=0)).max() > 0 for v in a)  # noise changes over time
    with pytest.raises(ValueError, match="noise"):
        reference_videos(items, "static", 64, 8, 5)


def test_t2i_noise_scores_near_chance_and_ground_truth_near_one():
    """A metric noise cannot fool: on a seeded 48-prompt set, colour noise and scattered blobs in the world's
    colours score no better than prompt-ignoring renders, also in the categories extra components used to
    inflate (objects present, counting)."""
    items = prompt_set("t2i", 48, seed=0)
    got = {k: aggregate("t2i", score_media("t2i", reference_videos(items, k, 64, 8, 1, seed=0), items))
           for k in ("ground_truth", "chance", "noise")}
    assert got["ground_truth"]["overall"] >= 0.98
    assert got["noise"]["overall"] <= got["chance"]["overall"] + 0.05, got
    for key in ("single_object", "two_object", "counting"):
        assert got["noise"][key] <= got["chance"][key] + 0.05, (key, got)


@pytest.mark.parametrize("suite", ["t2v", "i2v"])
def test_video_noise_scores_near_chance_and_ground_truth_near_one(suite):
    items = prompt_set(suite, 12, seed=1)
    got = {k: aggregate(suite, score_media(suite, reference_videos(items, k, 64, 8, 9, seed=1), items))
           for k in ("ground_truth", "chance", "noise")}
    assert got["ground_truth"]["motion_direction"] >= 0.98 and got["ground_truth"]["background_stability"] >= 0.98
    assert got["noise"]["motion_direction"] <= got["chance"]["motion_direction"] + 0.05, got
    assert got["noise"]["background_stability"] <= got["ground_truth"]["background_stability"] - 0.2, got


def test_prompt_sets_are_seeded_heldout_and_disjoint_from_training_captions():
    for suite in SUITES:
        a, b = prompt_set(suite, 9, seed=0), prompt_set(suite, 9, seed=0)
        assert [x.prompt for x in a] == [x.prompt for x in b]
        assert [x.prompt for x in a] != [x.prompt for x in prompt_set(suite, 9, seed=1)]
        assert [x.num_objects for x in a] == [1, 2, 3] * 3
        assert all(is_heldout_prompt(x.prompt) for x in a)
    assert prompt_set("t2v", 4, seed=0)[0].prompt == prompt_set("t2v", 9, seed=0)[0].prompt  # prefix-stable
    # What tokenize_jobs.synth writes for training: motion captions of train scenes, and still captions of train
    # scenes that ablate keeps only when the still caption itself is not held out.
    scenes = [sample_scene(scene_rng(0, i), split="train") for i in range(300)]
    train = {s.caption() for s in scenes} | {c for s in scenes if not is_heldout_prompt(c := s.caption(False))}
    for suite in SUITES:
        assert not {x.prompt for x in prompt_set(suite, 30, seed=0)} & train


def test_i2v_starts_from_the_tokenized_ground_truth_first_frame(checkpoint):
    bundle = load_generator(checkpoint, "cpu")
    items = prompt_set("i2v", 2, seed=0)
    settings = EvalSettings(num=2, size=32, frames=2, references=False, sampler=SamplerConfig(steps=1))
    codes, videos = generate_batch(bundle, "i2v", items, settings)
    given = torch.stack([bundle.video_tokenizer.encode(f[None]) for f in first_frames(items, 32)])  # (B, 1, h, w)
    assert codes.shape == (2, 2, 4, 4) and torch.equal(codes[:, :1], given)
    assert videos.shape == (2, 5, 32, 32, 3) and videos.dtype == np.uint8


def test_results_do_not_depend_on_the_batch_size(checkpoint):
    bundle = load_generator(checkpoint, "cpu")
    fast = SamplerConfig(steps=2)
    one = evaluate_suite(bundle, "t2v", EvalSettings(num=3, size=32, frames=2, batch=1, references=False,
                                                     sampler=fast), progress=False)
    three = evaluate_suite(bundle, "t2v", EvalSettings(num=3, size=32, frames=2, batch=3, references=False,
                                                       sampler=fast), progress=False)
    assert one["items"] == three["items"]
    # Same prompts, seeds and tokens; only the tokenizer's float rounding may differ with the batch shape (GroupNorm
    # and oneDNN pick kernels by shape), which can move a rare pixel by one level.
    diff = np.abs(one["videos"].astype(int) - three["videos"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_cli_end_to_end_writes_json_markdown_and_contact_sheets(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    doc = tmp_path / "results.md"
    rc = main(["--checkpoint", checkpoint, "--suite", "all", "--num", "3", "--frames", "2", "--out", str(out),
               "--results-doc", str(doc), *SMALL])
    assert rc == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    assert set(report) >= {"checkpoint", "settings", "suites", "size", "grid", "latent_frames", "seconds"}
    assert report["size"] == 32 and report["latent_frames"] == 2 and report["settings"]["num"] == 3
    for suite in SUITES:
        res = report["suites"][suite]
        keys = {*T2I_CATEGORIES, "overall"} if suite == "t2i" else set(VIDEO_METRICS)
        assert res["n"] == 3 and set(res["scores"]) == keys
        assert all(0.0 <= v <= 1.0 for v in res["scores"].values())
        assert set(res["references"]) == {"ground_truth", "tokenizer", "chance", "noise"}
        assert res["references"]["ground_truth"]["overall" if suite == "t2i" else "motion_direction"] == 1.0
        assert [it["index"] for it in res["items"]] == [0, 1, 2] and all(is_heldout_prompt(it["prompt"])
                                                                            for it in res["items"])
        if suite != "t2i":  # why each prompted object did (not) move: one outcome per object, counted per motion
            outcomes = [p for it in res["items"] for p in it["motion_outcomes"]]
            assert len(outcomes) == sum(it["num_objects"] for it in res["items"])
            assert sum(res["motion_breakdown"]["all"].values()) == len(outcomes)
            ok = sum(got == "ok" for _, got in outcomes)
            assert res["motion_breakdown"]["all"].get("ok", 0) == ok
        sheet = out / res["sheet"]
        assert sheet.stat().st_size > 0
        w, h = Image.open(sheet).size
        assert w > 64 and h > 32
    md = (out / "eval.md").read_text()
    assert md.count("| metric | model [95 % CI] | ground_truth | tokenizer | chance | noise |") == 3
    assert "| overall | **" in md and "| motion_direction | **" in md and md in printed
    assert md.count("| prompted motion | objects |") == 2  # t2v and i2v
    text = doc.read_text()
    assert "<!-- eval begin -->" in text and "<!-- eval end -->" in text and "img/eval_t2i_sheet.png" in text
    assert (tmp_path / "img" / "eval_t2i_sheet.png").stat().st_size > 0
    # a second checkpoint's tables go into their own section; the first stays
    assert main(["--checkpoint", checkpoint, "--suite", "t2i", "--num", "1", "--out", str(tmp_path / "eval2"),
                 "--results-doc", str(doc), "--results-section", "eval:second", *SMALL]) == 0
    text = doc.read_text()
    assert "<!-- eval begin -->" in text and "<!-- eval:second begin -->" in text
    assert (tmp_path / "img" / "eval_second_t2i_sheet.png").stat().st_size > 0


def test_bad_arguments_exit_with_one_line(checkpoint, tmp_path, capsys):
    cases = [(["--num", "0"], "--num must be >= 1"), (["--history-ratio", "1.5"], "history_ratio"),
             (["--size", "30"], "--size must be a positive multiple of 8"), (["--frames", "1"], "--frames")]
    for extra, msg in cases:
        assert main(["--checkpoint", checkpoint, "--suite", "t2v", "--out", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
    assert main(["--checkpoint", str(tmp_path / "missing"), "--suite", "t2i", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read checkpoint" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", checkpoint, "--suite", "nope"])
    assert e.value.code == 2
    out = subprocess.run([sys.executable, "-m", "workflows.eval", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and "--suite" in out.stdout and "--history-ratio" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# workflows.bench_sets: GenEval / VBench sample sets sharded across Ray tasks
# ---------------------------------------------------------------------------------------------------------------

BENCH_FAST = ["--steps", "1", "--width", "32", "--height", "32", "--threads", "1"]


@pytest.mark.slow
def test_bench_sets_write_the_layouts_the_official_scorers_read(ray_local, checkpoint, tmp_path):
    from lumos.media import read_image, read_video_frames
    from lumos.shapes.world import render_frame
    from workflows.bench_sets import main as bench_main

    meta = [{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
            {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a red dog"},
            {"tag": "counting", "include": [{"class": "cup", "count": 2}], "prompt": "a photo of two cups"}]
    (tmp_path / "geneval.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    out = tmp_path / "geneval"
    argv = ["--checkpoint", checkpoint, "--bench", "geneval", "--prompts", str(tmp_path / "geneval.jsonl"),
            "--out", str(out), "--samples", "2", "--workers", "2", *BENCH_FAST]
    assert bench_main(argv) == 0
    for i, m in enumerate(meta):
        assert json.loads((out / f"{i:05d}" / "metadata.jsonl").read_text()) == m
        for j in range(2):
            assert read_image(str(out / f"{i:05d}" / "samples" / f"{j:04d}.png")).shape == (32, 32, 3)
    summary = json.loads((out / "_bench_sets.json").read_text())
    assert summary["workers"] == 2 and summary["written"] == 6 and summary["gpus_per_worker"] == 0
    assert bench_main(argv) == 0  # a rerun resumes: nothing left to write
    assert json.loads((out / "_bench_sets.json").read_text())["skipped"] == 6

    (tmp_path / "vbench.txt").write_text("a red circle moving right\na blue square\n")
    out = tmp_path / "vbench"
    assert bench_main(["--checkpoint", checkpoint, "--bench", "vbench", "--prompts", str(tmp_path / "vbench.txt"),
                       "--out", str(out), "--samples", "1", "--frames", "2", "--workers", "2", *BENCH_FAST]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["a blue square-0.mp4", "a red circle moving right-0.mp4"]
    assert read_video_frames(str(out / "a blue square-0.mp4")).shape == (5, 32, 32, 3)

    images = tmp_path / "crop"
    images.mkdir()
    scene = prompt_set("i2v", 1, seed=0)[0]
    Image.fromarray(render_frame(scene.scene, 0.0, 32)).save(images / "shape.png")
    info = [{"prompt_en": scene.prompt, "image_name": "shape.png", "dimension": ["i2v_subject"]}]
    (tmp_path / "i2v.json").write_text(json.dumps(info))
    out = tmp_path / "i2v"
    assert bench_main(["--checkpoint", checkpoint, "--bench", "vbench_i2v", "--prompts", str(tmp_path / "i2v.json"),
                       "--images", str(images), "--out", str(out), "--samples", "2", "--frames", "2",
                       *BENCH_FAST]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"{scene.prompt}-0.mp4", f"{scene.prompt}-1.mp4"]


def test_bench_sets_bad_input_exits_with_one_line(checkpoint, tmp_path, capsys):
    from workflows.bench_sets import main as bench_main
    from workflows.bench_sets import shards

    assert [len(s) for s in shards(list(range(10)), 3)] == [3, 4, 3] and len(shards([1], 4)) == 1
    (tmp_path / "i2v.json").write_text(json.dumps([{"prompt_en": "x", "image_name": "missing.png"}]))
    cases = [(["--bench", "geneval", "--prompts", str(tmp_path / "none.jsonl")], "--prompts"),
             (["--bench", "vbench_i2v", "--prompts", str(tmp_path / "i2v.json"), "--images", str(tmp_path)],
              "missing.png does not exist"),
             (["--bench", "vbench_i2v", "--prompts", str(tmp_path / "i2v.json")], "needs --images"),
             (["--bench", "vbench", "--prompts", "x.txt", "--workers", "0"], "--workers must be >= 1")]
    for argv, msg in cases:
        assert bench_main(["--checkpoint", checkpoint, "--out", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert bench_main(["--checkpoint", str(tmp_path), "--bench", "vbench", "--prompts", "x", "--out", "o"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_upstream_tau_decay_flag_reaches_the_sampler_config():
    from workflows.eval import build_parser, settings_from_args

    base = ["--checkpoint", "c", "--suite", "t2v"]
    assert not settings_from_args(build_parser().parse_args(base)).suite_sampler("t2v").upstream_tau_decay
    settings = settings_from_args(build_parser().parse_args([*base, "--upstream-tau-decay"]))
    assert settings.suite_sampler("t2v").upstream_tau_decay and settings.suite_sampler("i2v").upstream_tau_decay


def test_settings_load_from_a_config_file_flags_then_dotted_overrides(tmp_path, capsys):
    """Eval, bench sets and ablate load their settings (sampler nested) through workflows.config_io."""
    from workflows import ablate, bench_sets
    from workflows.eval import build_parser, settings_from_args

    cfg = tmp_path / "eval.yaml"
    cfg.write_text("num: 5\nsampler:\n  steps: 7\n  top_k: 9\n  history_ratio: 0.5\n")
    base = ["--checkpoint", "c", "--suite", "t2v", "--config", str(cfg)]
    s = settings_from_args(build_parser().parse_args(base))
    assert (s.num, s.sampler.steps, s.sampler.top_k, s.sampler.history_ratio, s.sampler.cfg_scale) == (5, 7, 9, 0.5, None)
    s = settings_from_args(build_parser().parse_args([*base, "--steps", "3", "--num", "2", "sampler.steps=4",
                                                       "sampler.history_mode=random"]))
    assert (s.num, s.sampler.steps, s.sampler.top_k, s.sampler.history_mode) == (2, 4, 9, "random")  # overrides last
    assert main(["--checkpoint", "c", "--suite", "t2v", "sampler.topk=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("unknown key: sampler.topk") and len(err.splitlines()) == 1

    args = bench_sets.build_parser().parse_args(["--checkpoint", "c", "--bench", "vbench", "--prompts", "p",
                                                 "--out", "o", "--cfg", "4", "sampler.temperature=0.9"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench_sets.storage, "exists", lambda uri: True)
        b = bench_sets.settings_from_args(args)
    assert (b.samples, b.sampler.cfg_scale, b.sampler.temperature, b.sampler.steps) == (5, 4.0, 0.9, None)

    a = ablate.config_from_args(ablate.build_parser().parse_args(["--study", "history", "--checkpoint", "c",
                                                                  "--eval-steps", "5", "sampler.temperature=0.5"]))
    assert (a.sampler.steps, a.sampler.cfg_scale, a.sampler.temperature, a.eval_num) == (5, None, 0.5, 48)
    with pytest.raises(UsageError, match="history_ratio"):
        ablate.config_from_args(ablate.build_parser().parse_args(["--study", "rope", "sampler.history_ratio=1"]))


def test_bootstrap_interval_brackets_the_score():
    from workflows.eval import aggregate, bootstrap_ci

    rows = [{"motion_direction": float(i % 2), "subject_consistency": 1.0, "background_stability": 0.5}
            for i in range(48)]
    ci = bootstrap_ci("i2v", rows)
    lo, hi = ci["motion_direction"]
    assert lo < aggregate("i2v", rows)["motion_direction"] == 0.5 < hi and hi - lo < 0.35
    assert ci["subject_consistency"] == [1.0, 1.0]
    t2i = [{"single_object": 1.0, "colors": 0.0, "counting": 1.0, "position": 1.0} for _ in range(10)]
    assert bootstrap_ci("t2i", t2i)["overall"] == [0.75, 0.75]


def test_pool_scores_the_union_of_prompt_sets_and_refuses_runs_that_differ(checkpoint, tmp_path, capsys):
    from workflows.evaluation.pool import main as pool_main

    runs = []
    for seed in (0, 1):
        runs.append(str(tmp_path / f"s{seed}"))
        assert main(["--checkpoint", checkpoint, "--suite", "all", "--num", "3", "--frames", "2", "--seed", str(seed),
                     "--no-references", "--out", runs[-1], *SMALL]) == 0
    capsys.readouterr()
    assert pool_main([*runs, "--out", str(tmp_path / "pooled.json")]) == 0
    printed = capsys.readouterr().out
    pooled = json.loads((tmp_path / "pooled.json").read_text())
    reports = [json.loads((Path(r) / "eval.json").read_text()) for r in runs]
    for suite in SUITES:
        rows = [it["scores"] for rep in reports for it in rep["suites"][suite]["items"]]
        res = pooled["suites"][suite]
        assert res["n"] == 6 and res["scores"] == pytest.approx(aggregate(suite, rows))
        assert [r["seed"] for r in res["runs"]] == [0, 1]
        assert [r["scores"] for r in res["runs"]] == [rep["suites"][suite]["scores"] for rep in reports]
        assert all(lo <= res["scores"][k] <= hi for k, (lo, hi) in res["ci95"].items())
        assert f"## {suite} (6 prompts)" in printed
    assert "| metric | pooled [95 % CI] | seed 0 (3) | seed 1 (3) |" in printed
    for suite in ("t2v", "i2v"):  # the outcome counts of the pooled runs add up
        counts = [rep["suites"][suite]["motion_breakdown"]["all"] for rep in reports]
        assert pooled["suites"][suite]["motion_breakdown"]["all"] == {
            k: sum(c.get(k, 0) for c in counts) for k in set().union(*counts)}
    assert printed.count("| prompted motion | objects |") == 2
    # another sampler setting, or one prompt set twice, does not pool: one line naming why
    other = str(tmp_path / "steps3")
    assert main(["--checkpoint", checkpoint, "--suite", "t2i", "--num", "3", "--frames", "2", "--seed", "2", "--out", other,
                 "--no-references", "--size", "32", "--steps", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert pool_main([runs[0], other]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "settings.sampler" in err and "error" in err
    assert pool_main([runs[0], runs[0]]) == 2 and "the same prompt set" in capsys.readouterr().err
    # --against: the same prompt sets under another setting, compared prompt by prompt
    base = []
    for seed in (0, 1):
        base.append(str(tmp_path / f"b{seed}"))
        assert main(["--checkpoint", checkpoint, "--suite", "t2i", "--num", "3", "--frames", "2", "--seed", str(seed),
                     "--no-references", "--out", base[-1], "--size", "32", "--steps", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert pool_main([*runs, "--against", *base, "--out", str(tmp_path / "paired.json")]) == 0
    printed = capsys.readouterr().out
    against = json.loads((tmp_path / "paired.json").read_text())["against"]
    assert against["differs"] == ["settings.sampler.steps"] and list(against["suites"]) == ["t2i"]
    base_rows = [it["scores"] for b in base for it in json.loads((Path(b) / "eval.json").read_text())["suites"]["t2i"]["items"]]
    overall = against["suites"]["t2i"]["overall"]
    assert overall["baseline"] == pytest.approx(aggregate("t2i", base_rows)["overall"])
    assert overall["diff"] == pytest.approx(pooled["suites"]["t2i"]["scores"]["overall"] - overall["baseline"])
    assert overall["ci95"][0] <= overall["diff"] <= overall["ci95"][1]
    assert "(same prompts; differs: settings.sampler.steps)" in printed
    assert pool_main([*runs, "--against", *base[::-1]]) == 2 and "same prompt sets" in capsys.readouterr().err
    assert pool_main([str(tmp_path / "absent")]) == 2 and "no eval.json" in capsys.readouterr().err
