"""``workflows.ablate``: data made by the product jobs (shapes job, synth + tokenize job on Ray), runs trained by
``workflows.pretrain`` that differ only in the studied knob and the seed, fixed validation masks, mean ± std over
seeds, resumable studies, the history study on a checkpoint, bad arguments."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lumos.checkpoint import save_checkpoint
from lumos.config import model_preset
from lumos.model import LumosModel
from lumos.tokenizers import build_video_tokenizer, save_video_tokenizer
from workflows.ablate import (
    STUDIES,
    AblationConfig,
    build_parser,
    config_from_args,
    load_samples,
    main,
    make_data,
    run_config,
    run_stages,
    study_markdown,
    summarize,
    training_seconds,
)
from workflows.evaluation.eval_sets import is_heldout_prompt
from workflows.evaluation.reports import fmt_spread, spread, update_doc_section

REPO = Path(__file__).resolve().parents[2]
DEBUG_RECIPE = str(REPO / "workflows" / "configs" / "pretrain_ablate_debug.yaml")
FAST = ["--recipe", DEBUG_RECIPE, "--seeds", "0,1", "--eval-num", "1", "--eval-steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(ray_local, tmp_path_factory) -> dict:
    """Shapes-job train shards (stills + clips) and held-out validation shards (synth + tokenize job), 32 px."""
    root = tmp_path_factory.mktemp("ablate_data")
    cfg = AblationConfig(study="rope", stills=8, clips=6, val_clips=3, size=32)
    shards, val = make_data(cfg, str(root / "data"))
    return {"shards": shards, "val": val, "root": root}


def _args(data: dict, out: Path) -> list[str]:
    return ["--shards", data["shards"], "--val-shards", data["val"], "--out", str(out)]


def _report(out: Path, study: str) -> dict:
    return json.loads((out / study / "results.json").read_text())


def test_runs_differ_only_in_the_studied_knob_and_the_seed():
    for study, key in (("rope", ("model", "overrides", "rope_variant")), ("mask", ("ardf", "mask_type"))):
        cfg = AblationConfig(study=study, recipe=DEBUG_RECIPE, train=["optim.max_steps=7"])
        trees = {}
        for variant in STUDIES[study][:2]:
            for seed in (0, 1):
                tree = run_config(cfg, variant, seed, "/tmp/root", "/data/shards").to_dict()
                node = tree
                for k in key:
                    node = node[k]
                assert node == variant and tree["seed"] == seed and tree["optim"]["max_steps"] == 7
                assert tree["data"]["shards"] == "/data/shards"
                assert tree["checkpoint"]["name"] == f"{variant}-s{seed}"
                trees[variant, seed] = tree
        first = trees[STUDIES[study][0], 0]
        for tree in trees.values():
            diff = {k for k in first if first[k] != tree[k]}
            assert diff <= {"seed", "checkpoint", key[0]}, diff
            assert {k for k in first[key[0]] if first[key[0]][k] != tree[key[0]][k]} <= {key[1]}


def test_quiet_silences_the_training_workers_progress_bars_too():
    def run(*flags):
        recipe = str(REPO / "workflows" / "configs" / "pretrain_ablate.yaml")  # a curriculum: every stage inherits it
        cfg = config_from_args(build_parser().parse_args(["--study", "mask", "--recipe", recipe, *flags]))
        return run_config(cfg, "tube", 0, "/tmp/root", None)

    assert run().metrics.progress is True
    quiet = run("--quiet")
    assert [c.metrics.progress for c in run_stages(quiet)] == [False] * len(run_stages(quiet))


def test_the_write_up_names_recipe_changes_but_not_quiet():
    recipe = str(REPO / "workflows" / "configs" / "pretrain_ablate.yaml")
    cfg = config_from_args(build_parser().parse_args(["--study", "rope", "--recipe", recipe, "--seeds", "0,1",
                                                      "--train", "optim.lr=0.001", "--quiet"]))
    assert "metrics.progress=false" in cfg.train
    runs = {0: {"val_loss": 2.0, "val_frame_loss": [2.0], "train_frame_loss": [2.0], "eval": {"t2i": {"overall": 0.4}}}}
    report = {"study": "rope", "config": dataclasses.asdict(cfg), "seconds": 5.0, "train_seconds": 1500.0,
              "variants": {"mm": {"summary": summarize(runs)}}}
    text = study_markdown(report)
    assert "with optim.lr=0.001," in text and "progress" not in text
    assert "Training time 25 min summed over the runs" in text and "wall time 5 s" in text
    assert "| mm | 2.000 ± 0.000 |" in text


def test_training_seconds_sum_every_stage_metric_windows(tmp_path):
    for stage, windows in (("image", [10.0, 20.5]), ("video", [30.0])):
        (tmp_path / stage / "metrics").mkdir(parents=True)
        lines = [json.dumps({"step": 50 * (i + 1), "loss": 1.0, "window_s": w}) for i, w in enumerate(windows)]
        (tmp_path / stage / "metrics" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert training_seconds([str(tmp_path / "image"), str(tmp_path / "video")]) == 60.5
    assert training_seconds([str(tmp_path / "absent")]) == 0.0


def test_the_run_clock_says_how_far_a_study_is_and_how_long_is_left(monkeypatch):
    from workflows import ablate

    now = [0.0]
    monkeypatch.setattr(ablate.time, "perf_counter", lambda: now[0])
    clock = ablate.RunClock(18)
    now[0] = 0.2
    assert clock.tick() == "run 1/18, reused"  # a finished run reused: no estimate from it
    now[0] += 600
    assert clock.tick() == "run 2/18, 10.0 min; about 2 h 40 min left"
    now[0] += 900
    assert clock.tick() == "run 3/18, 15.0 min; about 3 h 8 min left"  # 15 runs x 12.5 min
    for _ in range(14):
        now[0] += 720
        clock.tick()
    now[0] += 720
    assert clock.tick() == "run 18/18, 12.0 min"


def test_spread_and_summary_over_seeds():
    s = spread([1.0, 2.0, 3.0, None])
    assert (s["mean"], s["std"], s["n"]) == (2.0, 1.0, 3) and fmt_spread(s) == "2.000 ± 1.000"
    assert spread([0.5])["std"] == 0.0 and fmt_spread(spread([])) == "–"
    runs = {0: {"val_loss": 2.0, "val_frame_loss": [1.0, 3.0], "train_frame_loss": [2.0, 2.0, 9.0],
                "eval": {"t2i": {"overall": 0.4}}},
            1: {"val_loss": 4.0, "val_frame_loss": [3.0, 5.0], "train_frame_loss": [4.0, 4.0],
                "eval": {"t2i": {"overall": 0.6}}}}
    out = summarize(runs)
    assert out["val_loss"]["mean"] == 3.0 and out["t2i.overall"]["mean"] == pytest.approx(0.5)
    assert [f["mean"] for f in out["val_frame_loss"]] == [2.0, 4.0] and len(out["train_frame_loss"]) == 2


@pytest.mark.slow  # shares the data fixture: Ray + shapes job + tokenize job
def test_data_comes_from_the_product_jobs_and_keeps_splits_apart(data):
    train_manifest = json.loads((Path(data["shards"]) / "_manifest.json").read_text())
    val_manifest = json.loads((Path(data["val"]) / "_manifest.json").read_text())
    assert train_manifest["counts"]["clips_written"] == 14 and val_manifest["counts"]["clips_written"] == 3
    assert train_manifest["settings"]["text_tokenizer"] == val_manifest["settings"]["text_tokenizer"]  # one text format
    train, val = load_samples(data["shards"], None), load_samples(data["val"], None)
    assert sorted({s["codes"].shape[0] for s in train}) == [1, 5] and all(s["codes"].shape[0] == 5 for s in val)
    rows = [json.loads(x) for x in (Path(data["val"]).parent / "val_clips" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(is_heldout_prompt(r["caption"]) for r in rows)


@pytest.mark.slow  # 4 pre-training runs (Ray Train) + scoring: about a minute idle
def test_rope_study_trains_with_the_recipe_and_reports_the_spread_over_seeds(data, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="workflows.ablate")
    out, doc = tmp_path / "out", tmp_path / "docs" / "results.md"
    argv = ["--study", "rope", *_args(data, out), *FAST, "--variants", "mm,1d", "--results-doc", str(doc)]
    assert main(argv) == 0
    assert "rope 1d seed 1: val loss" in caplog.text and "(run 4/4, " in caplog.text
    report = _report(out, "rope")
    assert list(report["variants"]) == ["mm", "1d"] and report["config"]["seeds"] == [0, 1]
    for name, res in report["variants"].items():
        assert sorted(res["runs"]) == ["0", "1"]
        for seed, run in res["runs"].items():
            final = Path(run["checkpoint"])
            assert final == out / "rope" / "runs" / f"{name}-s{seed}" / "final"
            cfg = json.loads((final / "config.json").read_text())
            assert cfg["model"]["rope_variant"] == name
            assert json.loads((final / "train_state.json").read_text())["step"] == 3
            assert [c["step"] for c in run["curve"]] == [1, 2, 3] and math.isfinite(run["val_loss"])
            assert len(run["val_frame_loss"]) == 5 and set(run["eval"]) == {"t2i", "t2v", "i2v"}
        s = res["summary"]["val_loss"]
        assert s["n"] == 2 and s["mean"] == pytest.approx(sum(r["val_loss"] for r in res["runs"].values()) / 2)
    assert report["plots"] == ["rope_loss.png", "rope_frame_loss.png", "rope_scores.png"]
    md = (out / "rope" / "results.md").read_text()
    assert md.count("\n| ") == 1 + 2 and " ± " in md and md in capsys.readouterr().out
    text = doc.read_text()
    assert "<!-- ablate:rope begin -->" in text and "](img/ablate_rope_rope_loss.png)" in text
    assert (doc.parent / "img" / "ablate_rope_rope_loss.png").stat().st_size > 1000
    update_doc_section(str(doc), "ablate:rope", "replaced", {})
    assert doc.read_text().count("ablate:rope begin") == 1 and "replaced" in doc.read_text()
    # a rerun trains nothing and measures nothing again: same numbers from the runs and their kept measurements
    mtimes = {p: p.stat().st_mtime for p in (out / "rope" / "runs").glob("*/final/model.safetensors")}
    assert main([*argv, "--results-section", "ablate:rope-long"]) == 0  # into its own section, beside the first
    again = _report(out, "rope")
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes
    assert again["variants"]["mm"]["summary"] == report["variants"]["mm"]["summary"]
    text = doc.read_text()
    assert "replaced" in text and text.count("<!-- ablate:rope-long begin -->") == 1
    assert "](img/ablate_rope-long_rope_loss.png)" in text and "## Ablation: rope-long\n" in text


@pytest.mark.slow  # 3 pre-training runs (Ray Train), two of them at once in their own processes, + scoring
def test_parallel_runs_train_in_their_own_processes_and_match_a_sequential_run(data, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="workflows.ablate")
    out, seq = tmp_path / "par", tmp_path / "seq"
    argv = ["--study", "rope", *FAST, "--variants", "mm", "--parallel", "2"]
    assert main([*argv, *_args(data, out)]) == 0
    assert "(run 2/2, " in caplog.text and "trained and measured" in caplog.text
    for seed in (0, 1):
        log_text = (out / "rope" / "logs" / f"mm-s{seed}.log").read_text()
        assert f"rope mm seed {seed}: val loss" in log_text  # trained and measured by the child process
        cfg = json.loads((out / "rope" / "runs" / f"mm-s{seed}" / "final" / "config.json").read_text())
        assert cfg["model"]["rope_variant"] == "mm"
    report = _report(out, "rope")
    assert sorted(report["variants"]["mm"]["runs"]) == ["0", "1"] and report["parallel"] == 2
    assert "wall time" in (md := (out / "rope" / "results.md").read_text()) and "with 2 runs at a time" in md
    # the same run trained the sequential way (2 threads in one worker) gives the same losses
    assert main(["--study", "rope", *FAST, "--variants", "mm", "--seeds", "0", *_args(data, seq)]) == 0
    one = _report(seq, "rope")["variants"]["mm"]["runs"]["0"]
    par = report["variants"]["mm"]["runs"]["0"]
    assert [c["loss"] for c in par["curve"]] == pytest.approx([c["loss"] for c in one["curve"]], rel=1e-4)
    assert par["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    # a run that fails in its process stops the study with one line naming the run's log
    bad = tmp_path / "bad"
    capsys.readouterr()
    assert main([*argv, *_args(data, bad), "--train", f"model.init_from={tmp_path / 'no-such-checkpoint'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rope run mm-s" in err and "failed" in err and str(bad / "rope" / "logs") in err
    assert not (bad / "rope" / "results.json").exists()


@pytest.mark.slow  # 2 curriculum runs of 2 stages each (Ray Train) + scoring
def test_mask_study_runs_a_curriculum_and_reports_per_frame_losses(data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path(DEBUG_RECIPE).read_text() + "stages:\n"
                      "  - name: image\n    overrides: {data.stage: image, optim.max_steps: 2}\n"
                      "  - name: video\n    overrides: {data.stage: joint, optim.max_steps: 3}\n")
    out = tmp_path / "out"
    argv = ["--study", "mask", *_args(data, out), *FAST, "--recipe", str(recipe), "--seeds", "0", "--variants",
            "random"]
    assert main(argv) == 0
    run = _report(out, "mask")["variants"]["random"]["runs"]["0"]
    assert run["checkpoint"].endswith("random-s0-video/final")
    assert [c["step"] for c in run["curve"]] == [1, 2, 3, 4, 5]  # steps counted across the two stages
    train_cfg = (Path(run["checkpoint"]).parent / "train_config.yaml").read_text()
    assert "mask_type: random" in train_cfg
    assert run["train_frame_loss"] and all(math.isfinite(x) for x in run["train_frame_loss"])
    assert len(run["val_frame_loss"]) == 5
    assert set(_report(out, "mask")["plots"]) == {"mask_loss.png", "mask_frame_loss.png", "mask_scores.png"}


def test_history_study_samples_a_checkpoint_with_every_variant_and_seed(tmp_path):
    tok = str(tmp_path / "tokenizer")
    save_video_tokenizer(tok, build_video_tokenizer("debug", seed=0))
    torch.manual_seed(0)
    model_cfg = model_preset("debug")
    ckpt = tmp_path / "ckpt"
    save_checkpoint(str(ckpt), LumosModel(model_cfg), model_cfg,
                    extra={"video_tokenizer": tok, "text_tokenizer": None, "resolution": [32, 32]})
    out = tmp_path / "out"
    assert main(["--study", "history", "--checkpoint", str(ckpt), "--out", str(out), "--seeds", "0,1",
                 "--eval-num", "2", "--eval-steps", "1", "--frames", "3", "--quiet"]) == 0
    report = _report(out, "history")
    assert list(report["variants"]) == list(STUDIES["history"]) and report["checkpoint"] == str(ckpt)
    for res in report["variants"].values():
        assert sorted(res["runs"]) == ["0", "1"]
        assert all(set(r["eval"]) == {"t2v", "i2v"} for r in res["runs"].values())
        assert res["summary"]["i2v.motion_direction"]["n"] == 2
    assert (out / "history" / "history_scores.png").stat().st_size > 1000
    md = (out / "history" / "results.md").read_text()
    assert f"Checkpoint `{ckpt}` sampled with each variant" in md and "| 0.7_mask_given |" in md


def test_bad_arguments_exit_with_one_line(tmp_path, capsys):
    cases = [(["--study", "rope", "--variants", "mm,nope"], "'nope' is not a rope variant"),
             (["--study", "rope", "--seeds", "0,x"], "--seeds must be comma-separated integers"),
             (["--study", "rope", "--seeds", "1,1"], "--seeds must be distinct"),
             (["--study", "mask", "--checkpoint", "x"], "--checkpoint is only used by --study history"),
             (["--study", "history"], "--study history needs --checkpoint"),
             (["--study", "rope", "--shards", "x"], "--shards and --val-shards go together"),
             (["--study", "rope", "--results-section", "ablate:x"], "give --results-doc too"),
             (["--study", "rope", "--parallel", "0"], "--parallel must be >= 1"),
             (["--study", "rope", "seconds=0"], "seconds must be > 0"),
             (["--study", "rope", "--train", "optim.nope=1"], "unknown key: optim.nope"),
             (["--study", "rope", "--recipe", str(tmp_path / "none.yaml")], "config file not found"),
             (["--study", "rope", "--shards", str(tmp_path), "--val-shards", str(tmp_path)], "no _manifest.json")]
    for argv, msg in cases:
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as e:
        main(["--study", "nope"])
    assert e.value.code == 2
    out = subprocess.run([sys.executable, "-m", "workflows.ablate", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and "--study" in out.stdout and "--seeds" in out.stdout
