"""Issue 17 on the pre-training side, all before Ray starts: shards with duplicate clips or disagreeing with their
manifest are refused, a second run on the same storage + name is refused (the first one a real process), and a
resume with a changed model is one line that overwrites nothing while a changed LR is logged as resumable."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pretrain_helpers import debug_overrides, write_shards

from tokenize_jobs.shards import ShardManifest
from workflows.config_io import dump_config
from workflows.pretrain import main
from workflows.training.run_guard import check_resume, run_record, verify_shards, write_record
from workflows.training.train_config import load_pretrain_config

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "workflows" / "configs" / "pretrain_debug.yaml")


@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory) -> str:
    return write_shards(str(tmp_path_factory.mktemp("guard_shards")), videos=4, images=2)


def copy_shards(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_clean_shards_pass(clean_shards):
    assert verify_shards(clean_shards, ShardManifest.read(clean_shards)) == 6


def test_shards_given_by_a_relative_path_pass(clean_shards, monkeypatch):
    # the listing gives absolute paths; the manifest's names are relative to the directory however it was written
    monkeypatch.chdir(Path(clean_shards).parent)
    rel = Path(clean_shards).name
    assert verify_shards(rel, ShardManifest.read(rel)) == 6


def test_shards_written_twice_are_refused(clean_shards, tmp_path, capsys):
    shards = copy_shards(clean_shards, tmp_path / "twice")
    shutil.copy(shards / "part-00000.parquet", shards / "part-00000-again.parquet")  # a second job's copy
    runs = tmp_path / "runs"
    assert main(["--config", DEBUG, *debug_overrides(str(shards), str(runs), "dup")]) == 2
    assert "rows in the shard files but _manifest.json counts 6 clips" in one_error_line(capsys)
    # counts made to agree (as the racing jobs' manifest did): the duplicate ids themselves are refused
    manifest = json.loads((shards / "_manifest.json").read_text())
    manifest["counts"]["clips_written"] = 9
    (shards / "_manifest.json").write_text(json.dumps(manifest))
    assert main(["--config", DEBUG, *debug_overrides(str(shards), str(runs), "dup")]) == 2
    assert "3 duplicate clip ids among 9 rows" in one_error_line(capsys)
    assert not runs.exists()  # refused before the run was touched


def test_files_missing_from_the_manifest_list_are_refused(clean_shards, tmp_path):
    shards = copy_shards(clean_shards, tmp_path / "listed")
    manifest = ShardManifest({**ShardManifest.read(str(shards)).doc, "shards": ["part-00000.parquet"]})
    with pytest.raises(ValueError, match=r"1 Parquet file\(s\) not in its _manifest.json \(e.g. part-00001"):
        verify_shards(str(shards), manifest)


def test_second_run_with_the_same_name_is_refused(clean_shards, tmp_path, capsys):
    run_uri = str(tmp_path / "runs" / "busy")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom workflows.training.run_guard import claim_run\nc = claim_run(sys.argv[1])\n"
                               "print('held', flush=True)\nsys.stdin.readline()\nc.release()\n", run_uri],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["--config", DEBUG, *debug_overrides(clean_shards, str(tmp_path / "runs"), "busy")]) == 1
        line = one_error_line(capsys)
        assert f"run (checkpoint.storage + checkpoint.name) {run_uri} is in use by workflows.pretrain " \
               f"(pid {holder.pid} " in line
        assert not (Path(run_uri) / "train_config.yaml").exists()
    finally:
        holder.communicate("\n", timeout=60)


def fake_finished_run(shards: str, storage: Path, name: str, *overrides: str, record: bool = True) -> Path:
    """What a run leaves behind: train_config.yaml, _resume.json (new runs) and a checkpoint directory."""
    cfg = load_pretrain_config(DEBUG, debug_overrides(shards, str(storage), name) + list(overrides))
    run = storage / name
    (run / "checkpoint_00000002").mkdir(parents=True)
    (run / "train_config.yaml").write_text(dump_config(cfg))
    if record:
        write_record(str(run), run_record(cfg, ShardManifest.read(shards)))
    return run


@pytest.mark.parametrize("record", [True, False], ids=["resume-record", "train_config-only"])
def test_resume_with_another_model_shape_is_one_line_and_overwrites_nothing(clean_shards, tmp_path, capsys,
                                                                             record):
    run = fake_finished_run(clean_shards, tmp_path, "shape", record=record)
    def files():  # the claim's lock file (_claim.json.lock) may stay; nothing else may change
        return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith("_claim")}

    before = files()
    argv = ["--config", DEBUG, *debug_overrides(clean_shards, str(tmp_path), "shape"), "model.overrides.n_layers=3"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot resume run {run}: changed model.n_layers (2 -> 3)")
    assert files() == before and set(before) >= {"train_config.yaml"}
    assert not (run / "_claim.json").exists()


def test_resume_with_other_data_is_refused(clean_shards, tmp_path):
    run = fake_finished_run(clean_shards, tmp_path, "data")
    other = write_shards(str(tmp_path / "other"), videos=3, images=2, seed=1)
    cfg = load_pretrain_config(DEBUG, debug_overrides(other, str(tmp_path), "data"))
    manifest = ShardManifest.read(other)
    with pytest.raises(ValueError, match=r"changed data \(the shards' contents changed\), data.shards"):
        check_resume(cfg, str(run), manifest)


def test_resumable_changes_are_logged(clean_shards, tmp_path, caplog):
    run = fake_finished_run(clean_shards, tmp_path, "lr")
    cfg = load_pretrain_config(DEBUG, debug_overrides(clean_shards, str(tmp_path), "lr") +
                               ["optim.lr=0.0005", "optim.max_steps=7"])
    manifest = ShardManifest.read(clean_shards)
    with caplog.at_level(logging.INFO, logger="workflows.pretrain"):
        check_resume(cfg, str(run), manifest)
    (message,) = [r.getMessage() for r in caplog.records if "resuming run" in r.getMessage()]
    assert "optim.lr (0.003 -> 0.0005)" in message and "optim.max_steps" in message and "(resumable)" in message


def test_resume_check_and_claim_on_s3(clean_shards, s3_bucket):
    from lumos import storage
    from lumos.claims import ClaimError
    from workflows.training.run_guard import claim_run, has_checkpoint

    run = f"{s3_bucket}/runs/shape"
    cfg = load_pretrain_config(DEBUG, debug_overrides(clean_shards, f"{s3_bucket}/runs", "shape"))
    manifest = ShardManifest.read(clean_shards)
    check_resume(cfg, run, manifest)  # nothing there yet: a fresh run
    storage.write_text(f"{run}/train_config.yaml", dump_config(cfg))
    write_record(run, run_record(cfg, manifest))
    assert not has_checkpoint(run)
    storage.write_text(f"{run}/checkpoint_00000002/train_state.json", "{}")
    assert has_checkpoint(run)
    changed = load_pretrain_config(DEBUG, debug_overrides(clean_shards, f"{s3_bucket}/runs", "shape") +
                                   ["model.overrides.n_layers=3"])
    with pytest.raises(ValueError, match=r"changed model.n_layers \(2 -> 3\)"):
        check_resume(changed, run, manifest)
    claim = claim_run(run)
    try:
        with pytest.raises(ClaimError, match="in use by workflows.pretrain"):
            claim_run(run)
    finally:
        claim.release()


def test_keys_added_since_the_run_started_do_not_block_a_resume():
    from workflows.training.run_guard import resume_changes

    old = {"model": {"n_layers": 2}, "data": "d", "config": {"optim": {"lr": 1.0}}}
    new = {"model": {"n_layers": 2, "new_field": 0}, "data": "d",
           "config": {"optim": {"lr": 1.0}, "data": {"shards": "x"}}}
    assert resume_changes(old, new) == ([], ["data.shards (new key: 'x')"])


def test_helper_shards_are_written_in_the_shard_schema(clean_shards):
    import pyarrow.parquet as pq

    from tokenize_jobs.shards import ERROR_SCHEMA, SHARD_SCHEMA

    assert pq.read_schema(Path(clean_shards) / "part-00000.parquet").remove_metadata() == SHARD_SCHEMA
    assert pq.read_schema(Path(clean_shards) / "_errors" / "part-00000.parquet").remove_metadata() == ERROR_SCHEMA
    assert ShardManifest.read(clean_shards).clips_written == 6


def test_ablate_refuses_shards_written_twice(tmp_path):
    from workflows.ablate import load_samples

    shards = write_shards(str(tmp_path), videos=2, images=2, files=1)
    part = sorted(Path(shards).glob("part-*.parquet"))[0]
    shutil.copy(part, part.with_name("part-dup.parquet"))
    with pytest.raises(ValueError, match="8 rows in the shard files but _manifest.json counts 4 clips"):
        load_samples(shards, 2)
    manifest = json.loads((Path(shards) / "_manifest.json").read_text())
    manifest["counts"]["clips_written"] = 8
    (Path(shards) / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="4 duplicate clip ids among 8 rows"):
        load_samples(shards, 2)
