"""Issue 17: one tokenization job per --out (a second is refused in one line), --out that is a file, Ctrl-C, and
--retry-errors. The concurrency and Ctrl-C tests run the job as real processes (``python -m tokenize_jobs.video``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from child_signals import default_sigint
from tj_media import JOB_ARGS, make_tokenizer, read_errors, read_shards, write_manifest

from tokenize_jobs.video import parse_args, run_job

REPO = Path(__file__).resolve().parents[2]


def job_cmd(manifest: str, out: str, tok: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tokenize_jobs.video", "--manifest", manifest, "--out", out, "--tokenizer", tok,
            *JOB_ARGS, *extra]


def start_until_executing(cmd: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """Start the job and return once Ray Data executes its pipeline (the job holds its claim by then)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "Starting execution" in line:
            return proc, seen
    proc.wait()
    raise AssertionError("the job ended before executing:\n" + "".join(seen[-20:]))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error:", "interrupted:"))]


@pytest.fixture
def small_job(tmp_path, clip_small):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": str(clip_small), "caption": "car"}])
    return manifest, make_tokenizer(tmp_path / "tok")


def test_out_that_is_a_file_is_one_line(tmp_path, small_job):
    manifest, tok = small_job
    afile = tmp_path / "shards.txt"
    afile.write_text("not a directory")
    for out in (afile, afile / "sub"):
        r = subprocess.run(job_cmd(manifest, str(out), tok), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert error_lines(r.stderr) == [f"error: --out {out}: {afile} is a file, not a directory"]
    assert afile.read_text() == "not a directory"


@pytest.mark.slow
def test_second_job_into_the_same_out_is_refused(tmp_path, small_job):
    manifest, tok = small_job
    out = str(tmp_path / "out")
    first, _ = start_until_executing(job_cmd(manifest, out, tok))
    try:
        second = subprocess.run(job_cmd(manifest, out, tok), cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        _, err = first.communicate(timeout=600)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    (line,) = error_lines(second.stderr)
    assert line.startswith(f"error: --out {out} is in use by tokenize_jobs.video (pid {first.pid} ")
    assert first.returncode == 0, err[-3000:]
    rows = read_shards(out).to_pylist()
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 1
    assert not (Path(out) / "_claim.json").exists()  # released at the end


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_a_rerun_finishes(tmp_path, small_job, clip_small):
    _, tok = small_job
    # 60 inputs (links to one clip), so the job is still running when the signal arrives even on a loaded machine
    links = []
    for i in range(60):
        link = tmp_path / f"clip{i:02d}{clip_small.suffix}"
        link.symlink_to(clip_small)
        links.append({"path": str(link), "caption": "car"})
    manifest = write_manifest(tmp_path / "many.jsonl", links)
    out = str(tmp_path / "out")
    proc, _ = start_until_executing(job_cmd(manifest, out, tok))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert error_lines(err) == [f"interrupted: {out} is unfinished (no _manifest.json); rerun the same command "
                                "to resume"]
    assert not (Path(out) / "_manifest.json").exists() and not (Path(out) / "_claim.json").exists()
    rerun = subprocess.run(job_cmd(manifest, out, tok), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(read_shards(out)) == 60


@pytest.mark.slow
@pytest.mark.ray
def test_retry_errors_retries_inputs_that_failed(ray_local, tmp_path, clip_small):
    late = tmp_path / "media" / "late.mp4"  # missing at first, appears later
    manifest = write_manifest(tmp_path / "m.jsonl", [{"path": str(clip_small), "caption": "car"},
                                                     {"path": str(late), "caption": "late"}])
    tok = make_tokenizer(tmp_path / "tok")
    out = tmp_path / "out"

    def run(*extra):
        return run_job(parse_args(["--manifest", manifest, "--out", str(out), "--tokenizer", tok, *JOB_ARGS,
                                   *extra]))

    doc = run()
    assert doc["counts"]["clips_written"] == 1 and doc["counts"]["errors"] == 1
    late.parent.mkdir()
    shutil.copy(clip_small, late)
    doc = run()  # a plain rerun keeps the error: the input counts as done
    assert doc["last_run"]["inputs_processed"] == 0 and doc["counts"]["errors"] == 1
    doc = run("--retry-errors")
    assert doc["last_run"]["inputs_processed"] == 1 and doc["last_run"]["error_rows_retried"] == 1
    assert doc["counts"]["clips_written"] == 2 and doc["counts"]["errors"] == 0
    assert doc["counts"]["unaccounted_inputs"] == 0 and read_errors(out) == []
    rows = read_shards(out).to_pylist()
    assert sorted(r["caption"] for r in rows) == ["car", "late"] and len({r["clip_id"] for r in rows}) == 2
