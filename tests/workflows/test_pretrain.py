"""Pre-training end to end on local Ray: 2 CPU workers, DeepSpeed ZeRO-2 and ZeRO-3, debug model, shapes shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from pretrain_helpers import debug_overrides, shared_shards

from lumos.checkpoint import load_checkpoint
from lumos.tokenizers import load_video_tokenizer
from workflows.pretrain import run_pretraining
from workflows.training.engine import cxx_compiler
from workflows.training.run_metrics import read_metrics
from workflows.training.train_config import load_pretrain_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DEBUG = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_debug.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shared_shards(tmp_path_factory)


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("stage", [2, 3])
def test_loss_falls_and_run_is_complete(ray_local, shards, tmp_path, stage):
    # engine.compile (ZeRO 0-2): the decoder layers torch.compile'd inside DeepSpeed, where a C++ compiler exists
    # and engine.precision=amp_bf16 (bf16 autocast, fp32 weights) with ZeRO-2
    compiled = stage == 2 and cxx_compiler() is not None
    prec = "amp_bf16" if stage == 2 else "fp32"
    cfg = load_pretrain_config(DEBUG, debug_overrides(shards, str(tmp_path), f"zero{stage}", **{
        "engine.zero_stage": stage, "optim.max_steps": 8, "checkpoint.every_steps": 4, "checkpoint.keep": 1,
        "engine.compile": str(compiled).lower(), "engine.precision": prec}))
    res = run_pretraining(cfg)

    records = read_metrics(res.run_uri)
    losses = [r["loss"] for r in records]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert _mean(losses[-2:]) < _mean(losses[:2]) - 0.3, losses
    last = records[-1]
    assert last["tokens_per_s"] > 0 and 0 < last["mfu"] < 1 and last["world_size"] == 2
    assert len(last["frame_loss"]) == cfg.data.max_latent_frames - 1  # shards hold 3 latent frames

    run = Path(res.run_uri)
    assert sorted(p.name for p in run.glob("checkpoint_0*")) == ["checkpoint_00000008"]  # keep=1
    assert json.loads((run / "checkpoint_00000008" / "train_state.json").read_text())["step"] == 8
    assert (run / "checkpoint_00000008" / "ds" / "latest").read_text().strip() == "step00000008"
    assert {"loss.png", "frame_loss.png"} <= set(os.listdir(run / "metrics"))
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "metrics" / "tb").iterdir())

    model, model_cfg, meta = load_checkpoint(res.final)
    assert model_cfg == cfg.model.build() and meta["train"]["step"] == 8
    assert meta["video_tokenizer"] == "tokenizer"
    assert load_video_tokenizer(os.path.join(res.final, "tokenizer")).codebook_size == model_cfg.codebook_size
    trained, init = model.state_dict(), type(model)(model_cfg).state_dict()
    assert not torch.equal(trained["lm_head.weight"], init["lm_head.weight"])
    assert f"zero_stage: {stage}" in (Path(res.final) / "train_config.yaml").read_text()
    assert f"compile: {str(compiled).lower()}" in (Path(res.final) / "train_config.yaml").read_text()
    assert f"precision: {prec}" in (Path(res.final) / "train_config.yaml").read_text()
    assert all(v.dtype == torch.float32 for v in trained.values())
