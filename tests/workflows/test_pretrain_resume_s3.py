"""Checkpoints on S3 (moto): a relaunched run resumes at the saved step and data position with the same losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pretrain_helpers import debug_overrides, shared_shards

from lumos import storage
from lumos.checkpoint import load_checkpoint
from workflows.pretrain import run_pretraining
from workflows.training.run_metrics import MetricsWriter, plot_metrics, read_metrics
from workflows.training.train_config import load_pretrain_config

DEBUG = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_debug.yaml")


def _run(shards, bucket, name, steps):
    overrides = debug_overrides(shards, f"{bucket}/runs", name, **{
        "optim.max_steps": steps, "checkpoint.every_steps": 2, "checkpoint.keep": 1, "optim.schedule": "constant"})
    return run_pretraining(load_pretrain_config(DEBUG, overrides))


def test_metrics_writer_resumes_on_s3(s3_bucket):
    run = f"{s3_bucket}/runs/m"
    w = MetricsWriter(run)
    for step in (1, 2, 3):
        w.log(step, {"loss": 5.0 - step, "frame_loss": [5.0 - step, 5.5 - step]})
    w.close()
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]
    w = MetricsWriter(run, resume_step=2)  # a restart from the step-2 checkpoint drops step 3 and appends
    w.log(3, {"loss": 1.5, "frame_loss": [1.5, 2.0]})
    w.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(run)] == [(1, 4.0), (2, 3.0), (3, 1.5)]
    assert any("/metrics/tb/events.out.tfevents" in f for f in storage.list_files(run))
    assert [p.rsplit("/", 1)[-1] for p in plot_metrics(run)] == ["loss.png", "frame_loss.png"]
    assert storage.read_bytes(f"{run}/metrics/loss.png").startswith(b"\x89PNG")


@pytest.mark.ray
@pytest.mark.slow
def test_s3_checkpoint_resumes_at_saved_step(ray_local, s3_bucket, tmp_path_factory):
    shards = shared_shards(tmp_path_factory)
    reference = _run(shards, s3_bucket, "straight", 4)
    first = _run(shards, s3_bucket, "resumed", 2)
    assert first.checkpoint == f"{s3_bucket}/runs/resumed/checkpoint_00000002"
    second = _run(shards, s3_bucket, "resumed", 4)  # same storage + name: picks up checkpoint_00000002

    ref = {r["step"]: r["loss"] for r in read_metrics(reference.run_uri)}
    got = read_metrics(second.run_uri)
    assert [r["step"] for r in got] == [1, 2, 3, 4]  # records after the resume point are not duplicated
    for r in got[2:]:
        assert r["loss"] == pytest.approx(ref[r["step"]], rel=1e-4)
    assert json.loads(storage.read_text(f"{second.checkpoint}/train_state.json"))["step"] == 4
    names = [p.rsplit("/", 1)[-1] for p in storage.list_files(f"{s3_bucket}/runs/resumed", recursive=False)]
    assert "checkpoint_manager_snapshot.json" in names
    dirs = {p.split("/runs/resumed/")[1].split("/")[0] for p in storage.list_files(f"{s3_bucket}/runs/resumed")}
    assert {d for d in dirs if d.startswith("checkpoint_0")} == {"checkpoint_00000004"}  # keep=1 on S3
    model, _, meta = load_checkpoint(second.final)
    assert second.final == f"{s3_bucket}/runs/resumed/final" and meta["train"]["step"] == 4
    assert storage.exists(f"{second.final}/tokenizer/config.json")
