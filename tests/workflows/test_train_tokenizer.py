"""workflows.train_tokenizer: recipes load, bad input fails with one line, end to end on Ray with 2 workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lumos import storage
from lumos.tokenizers import load_video_tokenizer
from workflows import train_tokenizer as tt
from workflows.config_io import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "workflows" / "configs").glob("tokenizer_*.yaml"))
FAST = ["optim.steps=4", "optim.batch_size=2", "data.heldout_clips=2", "log_every=2", "eval_every=2",
        "optim.warmup_steps=1"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_load_and_match_fsq_presets(path):
    cfg = load_config(tt.TrainTokenizerConfig, str(path))
    assert cfg.model.codebook_size in (240, 1000, 64000)
    assert cfg.data.size % 8 == 0


def test_unknown_key_and_bad_values_fail_with_one_line(tmp_path, capsys):
    cfg = str(REPO / "workflows/configs/tokenizer_debug.yaml")
    assert tt.main(["--config", cfg, "optim.stepz=3"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown key: optim.stepz"
    assert tt.main(["--config", cfg, "data.size=30"]) == 2
    assert "size must be a positive multiple of 8" in capsys.readouterr().err
    assert tt.main(["--config", cfg, f"data.manifest={tmp_path}/missing.jsonl", "ray.num_workers=0"]) == 2
    assert "data.manifest not found" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        load_config(tt.TrainTokenizerConfig, cfg, ["model.levels=[8,1]"])


def test_in_process_training_with_real_clips(tmp_path, clip_small):
    out = tmp_path / "tok"
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": str(clip_small), "caption": "carphone"}) + "\n")
    argv = ["--config", str(REPO / "workflows/configs/tokenizer_debug.yaml"), "--out", str(out),
            "ray.num_workers=0", f"data.manifest={manifest}", "data.real_fraction=0.5", "data.max_real_frames=12",
            *FAST]
    assert tt.main(argv) == 0
    tok = load_video_tokenizer(str(out))
    assert tok.metrics["step"] == 4 and "heldout_psnr" in tok.metrics
    assert (out / "train_config.yaml").exists()
    batches = tt.Batches(load_config(tt.TrainTokenizerConfig, None, [f"data.manifest={manifest}"]).data, 0, 1)
    assert len(batches.real) == 1 and batches.next(4).shape == (4, 5, 32, 32, 3)


@pytest.mark.ray
@pytest.mark.slow
def test_train_tokenizer_on_ray_two_workers_to_s3(s3_bucket):
    """The CLI as a user runs it: its own local Ray (a fresh process, not the suite's shared session: late in a full
    run, a Ray Train job in that long-lived session once waited for ever after "Requesting resources")."""
    out = f"{s3_bucket}/tokenizers/debug"
    argv = ["--config", str(REPO / "workflows/configs/tokenizer_debug.yaml"), "--out", out,
            "ray.num_workers=2", "ray.cpus_per_worker=1", *FAST]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the moto S3 environment included
    proc = subprocess.run([sys.executable, "-m", "workflows.train_tokenizer", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {Path(u).name for u in storage.list_files(out)} == {"config.json", "model.safetensors",
                                                               "train_config.yaml"}
    tok = load_video_tokenizer(out)
    assert tok.codebook_size == 240 and tok.metrics["step"] == 4
    assert tok.metrics["heldout_psnr"] > tok.metrics["initial_heldout_psnr"]
    codes = tok.encode(torch.zeros(5, 32, 32, 3, dtype=torch.uint8))
    assert codes.shape == (2, 4, 4)


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "workflows.train_tokenizer", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--config" in out.stdout
