"""Fine-tuning from a checkpoint (``model.init_from``, workflows/training/finetune.py): the run starts from the checkpoint's
weights and config, a resume of the run takes precedence, mismatches stop before Ray with one line, and the ZeRO-3
``zero.Init`` path (partitioned parameters) loads the same weights."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from pretrain_helpers import debug_overrides, shared_shards

from lumos.checkpoint import load_checkpoint, save_checkpoint
from lumos.config import model_preset
from lumos.model import LumosModel
from workflows import pretrain
from workflows.pretrain import run_pretraining
from workflows.training.run_metrics import read_metrics
from workflows.training.train_config import load_pretrain_config

DEBUG = str(Path(__file__).resolve().parents[2] / "workflows" / "configs" / "pretrain_debug.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shared_shards(tmp_path_factory)


def debug_checkpoint(path: Path, seed: int, **overrides) -> str:
    """A randomly initialised debug-preset checkpoint (what convert_hf / a run's final/ look like on disk)."""
    torch.manual_seed(seed)
    cfg = model_preset("debug", **overrides)
    save_checkpoint(str(path), LumosModel(cfg), cfg, extra={"video_tokenizer": None, "text_tokenizer": None})
    return str(path)


def assert_same_weights(a: dict, b: dict, atol: float = 1e-8) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.mark.ray
@pytest.mark.slow
def test_run_starts_from_the_checkpoint_and_a_resume_takes_precedence(ray_local, shards, tmp_path):
    src = debug_checkpoint(tmp_path / "src", seed=123)
    other = debug_checkpoint(tmp_path / "other", seed=7)

    def run(init_from, steps):  # lr 1e-12: the weights after the run are the weights it started from (±1e-12)
        return run_pretraining(load_pretrain_config(DEBUG, debug_overrides(shards, str(tmp_path / "runs"), "ft", **{
            "model.init_from": init_from, "model.preset": "small",  # ignored: the checkpoint gives the model
            "model.overrides.activation_checkpointing": "true",  # runtime field: applied on top
            "optim.lr": 1e-12, "optim.schedule": "constant", "optim.max_steps": steps,
            "checkpoint.every_steps": 1, "checkpoint.keep": 1})))

    first = run(src, 1)
    model, model_cfg, meta = load_checkpoint(first.final)
    src_model, src_cfg, _ = load_checkpoint(src)
    assert model_cfg == dataclasses.replace(src_cfg, activation_checkpointing=True)
    assert_same_weights(model.state_dict(), src_model.state_dict())  # step 0 = the source checkpoint
    fresh = LumosModel(model_preset("debug")).state_dict()  # what the workers would build without init_from
    assert (fresh["lm_head.weight"] - src_model.state_dict()["lm_head.weight"]).abs().max() > 1e-3
    assert meta["init_from"] == src and meta["train"]["step"] == 1
    assert meta["video_tokenizer"] == "tokenizer"  # the shards' tokenizer, copied as in any run

    second = run(other, 2)  # same run, another init_from: resumes at step 1 from its own checkpoint
    assert [r["step"] for r in read_metrics(second.run_uri)] == [1, 2]
    model, _, meta = load_checkpoint(second.final)
    assert meta["train"]["step"] == 2 and meta["init_from"] == other
    assert_same_weights(model.state_dict(), src_model.state_dict())


@pytest.mark.parametrize("case, message", [
    ("codebook", "hold codes of a 240-code video tokenizer, the model of model.init_from="),
    ("layout", "tokenized with the 'chameleon' vocabulary layout, the model of model.init_from="),
    ("override", "model.overrides.dim=128 conflicts with model.init_from="),
    ("weights", "checkpoint lacks tensor 'layers.2.attention_norm.weight'"),
    ("hf", "convert it first: python -m workflows.convert_hf"),
])
def test_mismatch_is_one_line_before_ray_starts(shards, tmp_path, capsys, case, message):
    ckpt = debug_checkpoint(tmp_path / "ckpt", seed=0, **({"codebook_size": 1000} if case == "codebook" else {}))
    extra = {"model.init_from": ckpt}
    if case == "layout":  # the same rows, recorded as chameleon-layout shards
        shutil.copytree(shards, tmp_path / "shards")
        manifest = json.loads((tmp_path / "shards" / "_manifest.json").read_text())
        (tmp_path / "shards" / "_manifest.json").write_text(json.dumps({**manifest, "layout": "chameleon"}))
        extra["data.shards"] = str(tmp_path / "shards")
    if case == "override":
        extra["model.overrides.dim"] = 128
    if case == "weights":  # config.json says 3 layers, model.safetensors holds 2
        config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
        config["model"]["n_layers"] = 3
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    if case == "hf":
        (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"architectures": ["ChameleonForCausalLM"]}))
    argv = ["--config", DEBUG, *debug_overrides(shards, str(tmp_path / "runs"), "ft", **extra)]
    assert pretrain.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()  # nothing written, Ray not started


def _zero3_worker(rank: int, world: int, store: str, ckpt: str) -> None:
    import os

    os.environ.update(DS_ACCELERATOR="cpu", LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from workflows.training.engine import skip_shm_op_build

    skip_shm_op_build()
    import deepspeed

    from workflows.training.finetune import load_init_weights

    src, cfg, _ = load_checkpoint(ckpt)
    with deepspeed.zero.Init(config_dict_or_path={"train_micro_batch_size_per_gpu": 1,
                                                  "zero_optimization": {"stage": 3}}):
        model = LumosModel(cfg)
    params = list(model.parameters())
    assert all(p.ds_tensor.numel() < p.ds_numel for p in params if p.ds_numel >= world)  # really partitioned
    load_init_weights(model, ckpt, rank)
    with deepspeed.zero.GatheredParameters(params):
        assert_same_weights(model.state_dict(), src.state_dict(), atol=0)
    dist.destroy_process_group()


@pytest.mark.slow
def test_zero3_partitioned_model_loads_the_checkpoint(tmp_path):
    """The GPU ZeRO-3 path (model built under deepspeed.zero.Init, rank 0 writes through GatheredParameters),
    here on 2 CPU processes over gloo."""
    ckpt = debug_checkpoint(tmp_path / "ckpt", seed=3)
    torch.multiprocessing.spawn(_zero3_worker, args=(2, tempfile.mktemp(dir=tmp_path), ckpt), nprocs=2)


@pytest.mark.parametrize("overrides, want", [({}, 1000), ({"codebook_size": 240}, None)])
def test_a_preset_model_takes_its_codebook_from_the_shards(tmp_path, overrides, want):
    """No hand-passed codebook: a preset model adopts the shards' tokenizer codebook; an explicit override that
    disagrees stays a one-line error."""
    from tokenize_jobs.shards import ShardManifest
    from workflows.training.finetune import prepare_init

    cfg = load_pretrain_config(DEBUG, ["data.shards=/x", *(f"model.overrides.{k}={v}" for k, v in overrides.items())])
    manifest = ShardManifest({"layout": "compact", "tokenizer": {"codebook_size": 1000}})
    if want is None:
        with pytest.raises(ValueError, match="hold codes of a 1000-code video tokenizer, the model of model.preset"):
            prepare_init(cfg, manifest)
        return
    assert cfg.model.build().codebook_size == 240  # the debug preset's
    assert prepare_init(cfg, manifest).model.build().codebook_size == want
