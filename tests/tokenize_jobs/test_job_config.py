"""TokenizeJobConfig: the CLI's defaults, normalisation, and one-line errors naming the flag (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenize_jobs.decode import ClipSettings
from tokenize_jobs.job_config import TokenizeJobConfig
from tokenize_jobs.video import parse_args

REPO = Path(__file__).resolve().parents[2]


def config(**kw) -> TokenizeJobConfig:
    return TokenizeJobConfig(**{"manifest": "m.jsonl", "out": "o", **kw})


def test_defaults_are_the_clis():
    assert parse_args(["--manifest", "m", "--out", "o"]) == TokenizeJobConfig(manifest="m", out="o")


def test_flags_and_fields_give_the_same_config():
    cli = parse_args(["--manifest", "m.jsonl", "--out", "o", "--fps", "8", "--seconds", "2", "--stages", "split",
                      "--decode-concurrency", "2,8", "--num-gpus", "0", "--retry-errors"])
    assert cli == config(fps=8, seconds=2, stages="split", decode_concurrency=(2, 8), num_gpus=0, retry_errors=True)


@pytest.mark.parametrize("given, pool", [("2", (2, 2)), ("1,4", (1, 4)), ("1,auto", (1, None)), ("3, auto", (3, None)),
                                         ((1, 4), (1, 4)), ((2, None), (2, None)), ([1, 3], (1, 3))])
def test_concurrency_becomes_min_max(given, pool):
    cfg = config(decode_concurrency=given, tokenize_concurrency=given)
    assert cfg.decode_concurrency == pool and cfg.tokenize_concurrency == pool


def test_paths_become_absolute_and_numbers_keep_the_clis_types(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(tokenizer=Path("tok"), text_tokenizer="text.json", seconds=2, timeout=10)
    assert cfg.out == str(tmp_path / "o") and cfg.tokenizer == str(tmp_path / "tok")
    assert cfg.text_tokenizer == str(tmp_path / "text.json") and cfg.manifest == "m.jsonl"  # read on the driver
    assert config(out="s3://bucket/shards").out == "s3://bucket/shards" and config().tokenizer is None
    # the settings hash sees 2.0 whether a caller passes 2 or the CLI parses "2"
    assert type(cfg.seconds) is float and type(cfg.timeout) is float and cfg.clip_settings.key() == ClipSettings(
        fps=12, seconds=2.0, target_size=352, patch=32).key()


def test_clip_settings_follow_the_fields():
    clip = config(fps=8, seconds=1, clip_policy="all", max_clips=3, target_size=64, patch=16, timeout=5,
                  decode_cpus=2).clip_settings
    assert clip == ClipSettings(fps=8, seconds=1.0, clip_policy="all", max_clips=3, target_size=64, patch=16,
                                timeout_s=5.0, threads=2)


@pytest.mark.parametrize("bad, flag", [
    ({"decode_concurrency": "3,1"}, "--decode-concurrency"), ({"decode_concurrency": "0"}, "--decode-concurrency"),
    ({"tokenize_concurrency": "x"}, "--tokenize-concurrency"), ({"tokenize_concurrency": (1,)}, "--tokenize-"),
    ({"tokenize_concurrency": (2, 1)}, "--tokenize-concurrency"), ({"num_gpus": "2"}, "--num-gpus"),
    ({"batch_size": 0}, "--batch-size"), ({"rows_per_file": 0}, "--rows-per-file"),
    ({"max_text_tokens": -1}, "--max-text-tokens"), ({"layout": "big"}, "--layout"), ({"stages": "both"}, "--stages"),
    ({"fps": 0}, "fps"), ({"seconds": -1}, "seconds"), ({"clip_policy": "middle"}, "clip_policy"),
    ({"target_size": 8}, "target_size"), ({"timeout": 0}, "timeout"), ({"max_clips": -1}, "max_clips"),
])
def test_a_bad_value_is_one_line_naming_its_flag(bad, flag):
    with pytest.raises(ValueError) as e:
        config(**bad)
    message = str(e.value)
    assert message.startswith(flag) and "\n" not in message


def test_the_cli_turns_a_bad_value_into_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--manifest", "m.jsonl", "--out", "o", "--decode-concurrency", "3,1"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("python -m tokenize_jobs.video: error: --decode-concurrency must be MIN or "
                                       "MIN,MAX (MAX >= MIN >= 1, or auto)\n")


def test_the_module_exits_2_with_one_line_before_ray_starts():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tokenize_jobs.video", "--manifest", "m.jsonl", "--out", "o",
                           "--batch-size", "0"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["python -m tokenize_jobs.video: error: --batch-size must be >= 1"]
