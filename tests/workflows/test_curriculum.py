"""Curricula (workflows.training.curriculum): stages resolve and validate at load, run in order, and resume mid-stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pretrain_helpers import debug_overrides, shared_shards

from workflows.pretrain import main
from workflows.training.curriculum import stage_configs
from workflows.training.train_config import load_pretrain_config

DEBUG = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_debug.yaml")
GOAL = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_small_goal.yaml")
TWO_HOURS = GOAL.replace("pretrain_small_goal", "pretrain_small_2h")
MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"
TWO = "stages=[{name: image, overrides: {data.stage: image, optim.max_steps: 2}}, " \
      "{name: joint, overrides: {data.stage: joint, optim.max_steps: %d, ardf.loss_weighting: code_frequency}}]"


def test_stages_resolve_in_order_from_the_previous_final(tmp_path):
    cfg = load_pretrain_config(GOAL, [f"checkpoint.storage={tmp_path}"])
    image, video, video2, video3 = stage_configs(cfg)
    assert (image.data.stage, video.data.stage, video2.data.stage) == ("image", "joint", "joint")
    assert (image.data.shards, video.data.shards) == ("runs/shards/shapes-goal", "runs/shards/shapes-goal2")
    assert video2.data.shards == video.data.shards and (video.seed, video2.seed) == (0, 1)  # another order
    assert [s.checkpoint.name for s in (image, video, video2)] == ["small-goal-image", "small-goal-video",
                                                                    "small-goal-video2"]
    assert image.model.init_from is None and video.model.init_from == f"{tmp_path}/small-goal-image/final"
    assert video2.model.init_from == f"{tmp_path}/small-goal-video/final"
    assert video.optim.warmup_steps == image.optim.warmup_steps == 100 and not video.stages
    assert (image.optim.max_steps, video.optim.max_steps, video2.optim.max_steps) == (4000, 3000, 3000)
    assert (video.optim.lr, video2.optim.lr) == (2e-3, 1e-3) and video2.sampling.cfg_scale == 3.0
    # a third pass on a fresh corpus (another world seed) from video2's weights, at video2's LR
    assert (video3.data.shards, video3.seed, video3.optim.lr) == ("runs/shards/shapes-goal3", 2, 1e-3)
    assert video3.model.init_from == f"{tmp_path}/small-goal-video2/final" and video3.optim.max_steps == 3000


def test_the_two_hour_recipe_is_stills_then_one_video_schedule_on_the_corpora_make_train_small_makes(tmp_path):
    cfg = load_pretrain_config(TWO_HOURS, [f"checkpoint.storage={tmp_path}"])
    image, video = stage_configs(cfg)
    assert (image.data.stage, image.optim.max_steps, video.data.stage, video.optim.max_steps) == (
        "image", 3000, "joint", 7200)
    assert video.model.init_from == f"{tmp_path}/small-2h-image/final" and video.optim.lr == image.optim.lr == 2e-3
    assert image.engine.compile and video.sampling.cfg_scale == 3.0 and video.ardf.loss_weighting == "code_frequency"
    # `make train-small` writes exactly the corpora the stages read, and then runs this recipe
    rule = MAKEFILE.read_text().split("train-small: setup\n", 1)[1].split("\n\n", 1)[0]
    outs = [line.split("--out ", 1)[1].split()[0] for line in rule.splitlines() if "tokenize_jobs.shapes" in line]
    assert outs == [image.data.shards, video.data.shards] == ["runs/shards/small-image", "runs/shards/small-video"]
    assert "workflows/configs/pretrain_small_2h.yaml" in rule.splitlines()[-1]
    header = Path(TWO_HOURS).read_text()
    assert all(f"--out {o} " in header for o in outs)


@pytest.mark.parametrize("stages, message", [
    ("[{name: a, overrides: {data.bogus: 1}}]", "stages[0] (a): unknown key: data.bogus"),
    ("[{name: a, overrides: {data.stage: movie}}]", "stages[0] (a): data.stage='movie' not in"),
    ("[{name: a}, {name: a}]", "stages: stage names must be unique"),
    ("[{name: a, overrides: {checkpoint.name: b}}]", "stages[0].overrides.checkpoint.name: set by the curriculum"),
    ("[{overrides: {}}]", "stage name '' must be a non-empty name"),
    ("[{name: a, extra: 1}]", "unknown key: stages[0].extra"),
])
def test_a_bad_stage_list_is_one_line(tmp_path, capsys, stages, message):
    assert main(["--config", DEBUG, "data.shards=/x", f"stages={stages}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.ray
@pytest.mark.slow
def test_stages_run_in_order_and_resume_mid_stage(ray_local, tmp_path_factory, tmp_path, capsys):
    shards = shared_shards(tmp_path_factory)
    base = ["--config", DEBUG, *debug_overrides(shards, str(tmp_path), "cur", **{"checkpoint.every_steps": 2})]
    assert main([*base, TWO % 2]) == 0
    image = json.loads((tmp_path / "cur-image" / "final" / "config.json").read_text())
    joint = json.loads((tmp_path / "cur-joint" / "final" / "config.json").read_text())
    assert image["train"]["step"] == 2 and joint["train"]["step"] == 2
    assert joint["init_from"] == str(tmp_path / "cur-image" / "final")  # stage 2 started from stage 1
    assert "stage: image" in (tmp_path / "cur-image" / "final" / "train_config.yaml").read_text()

    # longer second stage: the first is skipped, the second resumes from its step-2 checkpoint
    capsys.readouterr()
    assert main([*base, TWO % 4]) == 0
    joint = json.loads((tmp_path / "cur-joint" / "final" / "config.json").read_text())
    assert joint["train"]["step"] == 4
    assert json.loads((tmp_path / "cur-image" / "final" / "config.json").read_text()) == image  # untouched
    records = [json.loads(x) for x in (tmp_path / "cur-joint" / "metrics" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # steps 3-4 continue the run, no restart from step 1
    assert main([*base, TWO % 4]) == 0
    assert "every stage of the curriculum is already finished" in capsys.readouterr().out
