"""The tokenization job on a multi-node Ray cluster on this machine (issue 18).

* Scale-out: ``python -m tokenize_jobs.video`` with its pools sized ``MIN,auto`` joins the fake autoscaling cluster
  of ``cluster/fake_cluster.py`` (a head with no task CPUs, so the job's actors are the only trigger for the
  autoscaler), which must add worker nodes, finish with every input accounted for, and remove the nodes again once
  they idle.
* Node loss: on ``ray.cluster_utils.Cluster`` (0-CPU head + two 1-CPU worker nodes) a worker node is removed while the
  job is decoding; the job either finishes (Ray Data restarts the lost actors and retries their tasks) or fails and
  a rerun of the same command completes it. Either way the output must be what an uninterrupted run writes.

"What an uninterrupted run writes" is computed outside Ray by ``tj_media.reference_clips`` (the job's own readers,
bucket resize, tokenizer and prompt formatting; tests/tokenize_jobs/test_video_job.py checks an uninterrupted
job against it): the clip ids (``clip_id(source, clip_index, id_key)``), video tokens, text ids and grid of every
clip, and one ``read`` error row for the missing input. Every driver runs as a child process under ``nice -n 19``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tokenize_jobs"))
from tj_media import make_tokenizer, read_errors, read_shards, reference_clips, write_manifest, write_video  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
VIDEOS = 6
JOB_TIMEOUT_S = 1500
ARGS = ["--fps", "4", "--seconds", "1", "--target-size", "64", "--patch", "16", "--batch-size", "4",
        "--rows-per-file", "2", "--decode-concurrency", "1,auto"]


def make_corpus(root: Path) -> tuple[str, str, list[dict]]:
    """``VIDEOS`` small distinct mp4 clips and one missing file; returns (manifest, tokenizer, rows)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(VIDEOS):
        frames = np.zeros((12, 48, 64, 3), np.uint8)
        for t in range(12):  # a moving coloured square on a per-video background
            frames[t] = rng.integers(0, 60, 3, dtype=np.uint8)
            x = (4 * t + 7 * i) % 48
            frames[t, 10:30, x:x + 16] = (40 * i % 255, 200, 255 - 30 * i)
        write_video(root / f"v{i}.mp4", frames, fps=8)
        rows.append({"path": f"v{i}.mp4", "caption": f"clip number {i}"})
    rows.append({"path": "missing.mp4", "caption": "gone"})
    return write_manifest(root / "manifest.jsonl", rows), make_tokenizer(root / "tok"), rows


def run_job(env: dict, manifest: str, tokenizer: str, out: Path, wait: bool = True):
    cmd = ["nice", "-n", "19", sys.executable, "-m", "tokenize_jobs.video", "--manifest", manifest, "--out", str(out),
           "--tokenizer", tokenizer, *ARGS]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return proc
    output, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    return proc.returncode, output


def expected_output(root: Path, rows: list[dict], tokenizer: str, id_key: str) -> dict[str, dict]:
    """``{clip_id: {"source", "video_tokens", "text_ids", "grid"}}`` of an uninterrupted run, computed outside Ray."""
    from tokenize_jobs.decode import ClipSettings
    from tokenize_jobs.shards import clip_id

    settings = ClipSettings(fps=4, seconds=1.0, clip_policy="center", max_clips=0, target_size=64, patch=16)
    want = {}
    for r in rows:
        path = root / r["path"]
        if not path.exists():
            continue
        for idx, ref in reference_clips(path, str(path), r["caption"], settings, tokenizer).items():
            want[clip_id(str(path), idx, id_key)] = {"source": str(path), "video_tokens": ref["video_tokens"],
                                                    "text_ids": ref["text_ids"], "grid": list(ref["grid"])}
    return want


def check_output(out: Path, root: Path, rows: list[dict], tokenizer: str) -> dict:
    """The finished output equals an uninterrupted run's: same clip ids (each once), tokens, text ids and grids,
    and exactly one ``read`` error row, for the missing file; every input accounted for."""
    from tokenize_jobs.shards import ShardManifest

    doc = ShardManifest.read(str(out))
    shards, errors = read_shards(str(out)).to_pylist(), read_errors(str(out))
    ids = [s["clip_id"] for s in shards]
    assert len(ids) == len(set(ids)), "duplicate clip ids"
    want = expected_output(root, rows, tokenizer, doc.settings["id_key"])
    assert set(ids) == set(want)
    for s in shards:
        w = want[s["clip_id"]]
        assert s["source"] == w["source"]
        assert list(s["video_tokens"]) == w["video_tokens"], s["source"]
        assert list(s["text_ids"]) == w["text_ids"], s["source"]
        assert [s["grid_t"], s["grid_h"], s["grid_w"]] == w["grid"]
    assert [(e["source"], e["stage"]) for e in errors] == [(str(root / "missing.mp4"), "read")], errors
    assert "no such file" in errors[0]["error"]
    assert doc.counts["inputs"] == len(rows) and doc.counts["clips_written"] == len(want) == VIDEOS
    assert doc.counts["errors"] == 1
    return doc.doc


def test_tokenize_scales_out_on_an_autoscaling_cluster_and_back_in(fake_autoscaling_cluster, tmp_path):
    cluster = fake_autoscaling_cluster
    assert cluster.live_workers() == 0, "the cluster starts without worker nodes"
    manifest, tokenizer, rows = make_corpus(tmp_path / "corpus")
    out = tmp_path / "shards"
    t_submit = time.monotonic()
    before = len(cluster.changes())
    rc, output = run_job(cluster.env, manifest, tokenizer, out)
    job_s = time.monotonic() - t_submit
    assert rc == 0, output[-4000:]
    doc = check_output(out, tmp_path / "corpus", rows, tokenizer)
    during = cluster.changes()[before:]
    added = [n for c in during for n in c["added"]]
    assert added, f"the job triggered no scale-up: {during}\n{output[-3000:]}"
    assert cluster.wait_for_workers(0, 300), f"worker nodes were not removed after the job: {cluster.changes()}"
    after = cluster.changes()
    removed = [n for c in after[before:] for n in c["removed"]]
    assert sorted(removed) == sorted(set(added)), after
    record = {"job_s": round(job_s, 1), "nodes_added": len(set(added)), "nodes_removed": len(removed),
              "peak_workers": max(c["workers"] for c in after), "pools": doc["last_run"]["pools"],
              "timeline": after}
    print("SCALE_OUT " + json.dumps(record))


def test_tokenize_output_survives_losing_a_worker_node(manual_cluster, tmp_path):
    cluster = manual_cluster
    workers = [cluster.add_node(num_cpus=1, object_store_memory=100 << 20) for _ in range(2)]
    cluster.wait_for_nodes(timeout=300)
    manifest, tokenizer, rows = make_corpus(tmp_path / "corpus")
    out = tmp_path / "shards"
    proc = run_job(cluster.client_env, manifest, tokenizer, out, wait=False)
    # wait until the job is decoding: its first shard part is written (2 rows per file, 6 clips)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, f"the job ended before a node could be removed:\n{proc.communicate()[0][-3000:]}"
    t_loss = time.monotonic()
    cluster.remove_node(workers[1], allow_graceful=False)  # a node dies: SIGKILL to its raylet and workers
    output, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    recovery_s = time.monotonic() - t_loss
    reran = False
    if proc.returncode != 0:  # a failed job says so in one line, and a rerun of the same command completes it
        last = output.strip().splitlines()[-1]
        assert last.startswith("error:") or "Error" in last, output[-3000:]
        reran = True
        rc, output = run_job(cluster.client_env, manifest, tokenizer, out)
        assert rc == 0, output[-4000:]
        recovery_s = time.monotonic() - t_loss
    check_output(out, tmp_path / "corpus", rows, tokenizer)
    print("NODE_LOSS " + json.dumps({"finished_after_loss_s": round(recovery_s, 1), "reran": reran}))
