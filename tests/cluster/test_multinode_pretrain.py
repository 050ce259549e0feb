"""Pre-training loses a whole worker node (issue 18): the worker group restarts from the last checkpoint.

On ``ray.cluster_utils.Cluster`` (a 0-CPU head and two 1-CPU worker nodes) ``python -m workflows.pretrain`` runs the
debug recipe with 2 Ray Train workers at 0.6 CPU each, so each worker node holds exactly one of them. Once the first
checkpoint is registered one worker node is killed (``remove_node(allow_graceful=False)``: SIGKILL to its raylet and workers, and
the objects in its store are gone) and a fresh 1-CPU node is added, as an autoscaler would. The run must restart the
worker group from its last checkpoint (``ray.max_failures=1``) and finish at the step, data position (epoch,
micro-batch, tokens seen) and losses of an uninterrupted run of the same command on the same cluster.

Every driver runs as a child process under ``nice -n 19`` with the cluster's address in its environment.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_fixtures import processes_on

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflows"))
from pretrain_helpers import debug_overrides, shared_shards  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "workflows" / "configs" / "pretrain_debug.yaml")
RUN_TIMEOUT_S = 900
MAX_STEPS, EVERY = 16, 4
LOSE_AT_STEP = 6  # the node dies once rank 0 has logged this step and the controller has registered a checkpoint


def command(shards: str, storage: Path, name: str) -> list[str]:
    overrides = debug_overrides(shards, str(storage), name, **{
        "optim.max_steps": MAX_STEPS, "checkpoint.every_steps": EVERY, "checkpoint.keep": 2, "ray.max_failures": 1,
        "ray.cpus_per_worker": 0.6,  # two workers never fit on one 1-CPU node: one per node
        "metrics.tensorboard": False, "metrics.plots": False})
    return ["nice", "-n", "19", sys.executable, "-m", "workflows.pretrain", "--config", DEBUG, *overrides]


def start_run(env: dict, cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    output = log.read_text()
    assert proc.returncode == 0, output[-5000:]
    return output


def metrics(run: Path) -> list[dict]:
    path = run / "metrics" / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return records


def registered_checkpoints(run: Path) -> list[str]:
    """Checkpoints Ray Train's controller has registered (what a restarted worker group resumes from): a checkpoint
    every rank has written is registered only when the controller next collects the ranks' reports."""
    try:
        doc = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):  # not written yet, or being written
        return []
    return sorted(r["checkpoint_dir_name"] for r in doc.get("checkpoint_results", []))


def train_state(run: Path) -> dict:
    """The train state of the run's last checkpoint (the one ``final/`` was published from)."""
    final = json.loads((run / "final" / "train_state.json").read_text())
    latest = max(run.glob("checkpoint_0*"))
    assert json.loads((latest / "train_state.json").read_text()) == final
    return final


def test_pretrain_survives_losing_a_worker_node(manual_cluster, tmp_path, tmp_path_factory):
    cluster = manual_cluster
    nodes = [cluster.add_worker() for _ in range(2)]
    cluster.wait_for_nodes(timeout=300)
    shards = shared_shards(tmp_path_factory)
    storage = tmp_path / "runs"

    # the uninterrupted run
    finish(start_run(cluster.client_env, command(shards, storage, "whole"), tmp_path / "whole.log"),
           tmp_path / "whole.log")
    whole = storage / "whole"

    # the same run, losing a worker node after its first checkpoint
    run, log = storage / "lossy", tmp_path / "lossy.log"
    proc = start_run(cluster.client_env, command(shards, storage, "lossy"), log)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if (records := metrics(run)) and records[-1]["step"] >= LOSE_AT_STEP and registered_checkpoints(run):
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before a node could be removed:\n{log.read_text()[-4000:]}"
    assert [processes_on(n, "RayTrainWorker") for n in nodes] == [1, 1], "one training worker on each worker node"
    step_at_loss = metrics(run)[-1]["step"]
    checkpoints_at_loss = registered_checkpoints(run)
    t_loss = time.time()
    cluster.remove_node(nodes[1], allow_graceful=False)  # the node dies: SIGKILL to its raylet and workers
    # a checkpoint whose registration was under way while the node was removed counts as written before the loss
    # (a loaded machine can finish one in between); the restarted group cannot have written one yet
    checkpoints_at_loss += [c for c in registered_checkpoints(run) if c not in checkpoints_at_loss]
    cluster.add_worker()  # the autoscaler's replacement
    output = finish(proc, log)
    finished_s = time.time() - t_loss

    # restarted once, from the last checkpoint written before the loss, on the node that stayed and the new one
    records = metrics(run)
    assert [r["step"] for r in records] == list(range(1, MAX_STEPS + 1)), "every step logged once"
    resumed_at = max(r["step"] for r in records if r["time"] < t_loss)
    assert all(r["time"] > t_loss for r in records if r["step"] > resumed_at)
    # the node may die just after a checkpoint of the last logged step: then nothing is redone (resumed_at equal)
    assert resumed_at % EVERY == 0 and EVERY <= resumed_at <= step_at_loss, (resumed_at, step_at_loss)
    assert f"checkpoint_{resumed_at:08d}" in checkpoints_at_loss
    # the same run as the uninterrupted one: final step, data position, tokens and (deterministic) losses
    reference = metrics(whole)
    assert train_state(run) == train_state(whole)
    assert train_state(run)["step"] == MAX_STEPS
    assert [r["tokens"] for r in records] == [r["tokens"] for r in reference]
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(records, reference))
    assert loss_diff < 1e-4, [(a["loss"], b["loss"]) for a, b in zip(records, reference)]
    assert all(math.isfinite(r["loss"]) for r in records)
    first_after = next(r for r in records if r["step"] == resumed_at + 1)
    print("PRETRAIN_NODE_LOSS " + json.dumps({
        "lost_at_step": step_at_loss, "resumed_from_step": resumed_at, "steps_redone": step_at_loss - resumed_at,
        "recovery_s": round(first_after["time"] - t_loss, 1), "finished_after_loss_s": round(finished_s, 1),
        "final_state": train_state(run), "max_loss_diff_vs_uninterrupted": loss_diff,
        "final_loss": records[-1]["loss"], "restarts_logged": output.count("resumed from")}))
