"""A worker lost mid-run: Ray Train restarts the worker group from the last checkpoint and the run finishes.

The run is an image-only stage on the images of the shards (``data.stage=image`` without videos' first frames: the
``grid_t == 1`` filter runs in Ray Data before the split)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pretrain_helpers import debug_overrides, shared_shards

from workflows.pretrain import run_pretraining
from workflows.training.run_metrics import read_metrics
from workflows.training.train_config import load_pretrain_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DEBUG = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_debug.yaml")


def test_killed_worker_restarts_from_last_checkpoint(ray_local, tmp_path, tmp_path_factory):
    marker = tmp_path / "rank1-exited"
    cfg = load_pretrain_config(DEBUG, debug_overrides(shared_shards(tmp_path_factory), str(tmp_path), "failure", **{
        "optim.max_steps": 5, "checkpoint.every_steps": 2, "ray.max_failures": 1,
        "fault.exit_at_step": 3, "fault.exit_rank": 1, "fault.marker": str(marker),
        "data.stage": "image", "data.video_first_frame_as_image": False}))
    res = run_pretraining(cfg)

    assert marker.read_text().startswith("rank 1 exited at step 3")  # the fault really fired (once)
    assert json.loads((Path(res.checkpoint) / "train_state.json").read_text())["step"] == 5
    records = read_metrics(res.run_uri)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # steps 3.. redone after the restart, logged once
    assert records[-1]["loss"] < records[0]["loss"]
    assert all(len(r["frame_loss"]) == 1 for r in records)  # one latent frame: images only
