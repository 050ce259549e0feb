"""Multi-node Ray clusters on this machine for the scale-out and node-loss tests (issue 18).

* ``fake_autoscaling_cluster``: ``cluster/fake_cluster.py`` (the documented recipe) run as a child process: a head
  with 0 task CPUs and one worker node type (1 CPU, 0..2 nodes, 10 s idle timeout) that Ray's real autoscaler adds
  and removes. The recipe writes the client env (address, auth token) to an ``--info`` file and every change of
  the live worker nodes to an ``--events`` file.
* ``manual_cluster``: ``ray.cluster_utils.Cluster`` in this process (a 0-CPU head; tests add and remove 1-CPU
  worker nodes by hand, ``cluster.add_worker()`` tries again when a node does not come up), in a temp dir and on
  ports of its own.

Neither touches another Ray on the machine: own temp dirs and ports, no ``ray stop``, and Ray's default
``/tmp/ray/ray_current_cluster`` address file (which ``Cluster`` would overwrite and delete) is redirected into
the fixture's temp dir. Teardown stops exactly what was started: the recipe's process (which stops its own
process tree) and, after it, any straggler whose command line names the cluster's temp dir; ``Cluster.shutdown()``
kills the processes of the nodes it holds handles to.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "cluster" / "fake_cluster.py"
NODE_START_TRIES = 3
START_TIMEOUT_S = 900  # a saturated 2-CPU machine running its Ray at nice 19 can take minutes per node


@dataclass
class FakeCluster:
    proc: subprocess.Popen
    info: dict
    events: Path
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus the cluster's address and token (for drivers run as children)."""
        return {**os.environ, **self.info["env"]}

    def changes(self) -> list[dict]:
        """Every change of the live worker nodes so far: ``{"t", "workers", "added", "removed"}``."""
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def live_workers(self) -> int:
        changes = self.changes()
        return changes[-1]["workers"] if changes else 0

    def wait_for_workers(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.live_workers() == n:
                return True
            assert self.proc.poll() is None, f"the fake cluster exited:\n{self.log.read_text()[-3000:]}"
            time.sleep(1)
        return False


def _patient_get_node(get_node, timeout_s: float = 90):
    """``ray._private.services.get_node`` that keeps asking for up to ``timeout_s``.

    ``Node`` gives a new raylet only 30 s (a constant in ``ray._private.node``) to show up in the GCS; on a saturated
    2-CPU machine a node can take longer to register, and the node start then fails although it would have come up.
    """

    def patient(gcs_address, node_id):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return get_node(gcs_address, node_id)
            except Exception:  # noqa: BLE001 - RuntimeError (not registered yet) or RaySystemError (GCS busy)
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    return patient


def _add_worker(cluster, num_cpus: int = 1, object_store_memory: int = 100 << 20):
    """``cluster.add_node`` for a worker node, tried again when the node does not come up (its raylet gives its
    dashboard agent 30 s to start, then aborts; a starved machine misses that). A failed node never registered, so
    it is not part of the cluster; its leftover processes name the cluster's temp dir and go at teardown."""
    for attempt in range(1, NODE_START_TRIES + 1):
        try:
            return cluster.add_node(num_cpus=num_cpus, object_store_memory=object_store_memory)
        except Exception:  # noqa: BLE001 - Ray raises a bare Exception for a node that timed out
            if attempt == NODE_START_TRIES:
                raise


def processes_on(node, marker: str) -> int:
    """Processes started by ``node``'s raylet whose command line contains ``marker`` (e.g. ``RayTrainWorker``,
    ``ServeReplica:app:Sampler``): where Ray placed an actor."""
    import psutil

    count = 0
    for child in psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True):
        try:
            count += marker in " ".join(child.cmdline())
        except psutil.Error:  # exited while we looked
            pass
    return count


def _kill_pids_naming(marker: str) -> None:
    sys.path.insert(0, str(RECIPE.parent))
    try:
        from fake_cluster import pids_naming
    finally:
        sys.path.remove(str(RECIPE.parent))
    for pid in pids_naming(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def fake_autoscaling_cluster(tmp_path):
    """The fake autoscaling cluster of ``cluster/fake_cluster.py`` (head 0 CPUs, 0..2 1-CPU workers, 10 s idle)."""
    info_path, events, log = tmp_path / "cluster.json", tmp_path / "nodes.jsonl", tmp_path / "cluster.log"
    cmd = ["nice", "-n", "19", sys.executable, str(RECIPE), "--max-workers", "2", "--idle-timeout-s", "10",
           "--info", str(info_path), "--events", str(events)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not info_path.exists():
            assert proc.poll() is None, f"the fake cluster did not start:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the fake cluster did not start in {START_TIMEOUT_S} s"
            time.sleep(1)
        time.sleep(0.5)  # the file is written in one go; let it close
        cluster = FakeCluster(proc, json.loads(info_path.read_text()), events, log)
        yield cluster
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # the recipe stops its own cluster
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        if cluster is not None:
            _kill_pids_naming(cluster.info["temp_dir"])
            shutil.rmtree(cluster.info["temp_dir"], ignore_errors=True)


@pytest.fixture
def manual_cluster(monkeypatch):
    """``ray.cluster_utils.Cluster`` with a 0-CPU head; ``cluster.add_node(num_cpus=1)`` adds a worker node and
    ``cluster.remove_node(node)`` kills it. The driver env (``RAY_ADDRESS``) is ``cluster.client_env``."""
    import ray._common.utils
    import ray._private.services
    import ray._private.utils
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(RECIPE.parent))
    try:
        from fake_cluster import free_ports
    finally:
        sys.path.remove(str(RECIPE.parent))

    temp_dir = tempfile.mkdtemp(prefix="lumos-mc-", dir="/tmp")  # short: unix socket paths
    # Cluster writes/deletes the default address file (/tmp/ray/ray_current_cluster): keep ours in our temp dir.
    write, reset = ray._private.utils.write_ray_address, ray._common.utils.reset_ray_address
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda address, _=None: write(address, temp_dir))
    monkeypatch.setattr(ray._common.utils, "reset_ray_address", lambda _=None: reset(temp_dir))
    monkeypatch.setattr(ray._private.services, "get_node", _patient_get_node(ray._private.services.get_node))
    cluster = Cluster(initialize_head=False, shutdown_at_exit=True)
    try:
        for attempt in range(1, NODE_START_TRIES + 1):
            gcs, dash, agent, agent_grpc, metrics, env_agent, client = free_ports(7)
            try:
                cluster.add_node(num_cpus=0, temp_dir=temp_dir, gcs_server_port=gcs, include_dashboard=False,
                                 dashboard_port=dash, dashboard_agent_listen_port=agent, metrics_agent_port=agent_grpc,
                                 metrics_export_port=metrics, runtime_env_agent_port=env_agent,
                                 ray_client_server_port=client, object_store_memory=100 << 20)
                break
            except Exception:  # noqa: BLE001 - a head that did not come up: stop what it started, try again
                _kill_pids_naming(temp_dir)
                if attempt == NODE_START_TRIES:
                    raise
        cluster.add_worker = lambda **kw: _add_worker(cluster, **kw)
        cluster.client_env = {**os.environ, "RAY_ADDRESS": cluster.address}
        cluster.temp_dir = temp_dir
        yield cluster
    finally:
        cluster.shutdown()
        _kill_pids_naming(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
