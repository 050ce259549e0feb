#!/usr/bin/env python
"""A fake autoscaling Ray cluster on this machine: real raylets, real scheduling, nodes added and removed by Ray's
real autoscaler (the ``fake_multinode`` provider that Ray's own autoscaler tests use).

The head node has no task CPUs; one worker node type (``cpu_worker``: ``--worker-cpus`` CPUs each, 0 to
``--max-workers`` nodes) is the only place where tasks and actors run, so a job's own resource requests are the
only trigger for scale-up, and idle nodes are removed after ``--idle-timeout-s``. Usage::

    # run one command against it, then wait for the scale-in and print the node timeline
    python cluster/fake_cluster.py --max-workers 3 --idle-timeout-s 10 -- python -m tokenize_jobs.video ...
    # or keep it up (Ctrl-C stops it); the address and token are in the --info file (mode 0600)
    python cluster/fake_cluster.py --max-workers 3 --info /tmp/fake-cluster.json

It is what ``ray.cluster_utils.AutoscalingCluster`` starts, with three differences that matter on a shared
machine: ``AutoscalingCluster.start()``/``shutdown()`` run ``ray stop --force`` (which kills every Ray process of
the user, other people's jobs included), use the default temp dir and ports, and read a ``fake_multi_node/example.yaml``
that the Ray 2.60 wheel does not ship. Here the head gets its own temp dir, free ports and an auth token of its
own (``RAY_AUTH_MODE=token``, ``~/.ray`` untouched), ``ray start --head --block`` is kept as a child process, and
stopping the cluster terminates exactly the processes it started: the ``ray start`` process tree (the autoscaler
starts worker nodes as children of the head's monitor) and any straggler whose command line names the cluster's
own temp dir. Nothing is killed by name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY_BIN = Path(sys.executable).parent / "ray"
WORKER_TYPE = "cpu_worker"
HEAD_PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                   "node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port")
START_ATTEMPTS = 3
"""``ray start`` attempts: on a saturated 2-CPU machine a raylet can abort while its agents start."""


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def autoscaling_config(gcs_address: str, *, max_workers: int, idle_timeout_s: float, worker_cpus: float = 1,
                       worker_object_store_mb: int = 100, head_object_store_mb: int = 100) -> dict:
    """The cluster config of the fake provider: a 0-CPU head and one worker type (Ray's fake_multi_node example,
    cut to what the autoscaler reads)."""
    return {
        "cluster_name": "lumos_fake",
        "max_workers": max_workers,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "object_store_memory": head_object_store_mb << 20},
                                 "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": {"CPU": worker_cpus, "object_store_memory": worker_object_store_mb << 20},
                          "node_config": {}, "min_workers": 0, "max_workers": max_workers},
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (by parent pid)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pids_naming(marker: str) -> set[int]:
    """Live processes whose command line contains ``marker`` (the cluster's own, unique temp dir)."""
    me = os.getpid()
    return {pid for pid in _all_pids() if pid != me and marker in _cmdline(pid)}


@dataclass
class FakeAutoscalingCluster:
    """A fake autoscaling cluster (see the module docstring). ``start()``, then ``env`` for clients, ``nodes()`` for
    the live nodes; ``shutdown()`` stops every process it started."""

    max_workers: int = 3
    idle_timeout_s: float = 10.0
    worker_cpus: float = 1.0
    start_timeout_s: float = 300.0
    temp_dir: Path | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    address: str = ""
    proc: subprocess.Popen | None = None
    started_pids: set[int] = field(default_factory=set)
    _gcs: object = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for clients (drivers, ``ray status``): the address and this cluster's auth token."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def start(self, should_stop=lambda: False) -> FakeAutoscalingCluster:
        """Start the head (up to :data:`START_ATTEMPTS` times); ``should_stop()`` true gives up early."""
        # This process talks to the cluster's GCS (nodes()): it needs the token before Ray reads its config.
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token})
        if "ray" in sys.modules:
            from ray._raylet import Config

            Config.initialize("")
        failures = []
        for _ in range(START_ATTEMPTS):
            if self._start_once(should_stop):
                return self
            if should_stop():
                break
            failures.append(self._log_tail())
            self.shutdown()
        raise RuntimeError(f"fake cluster did not start in {START_ATTEMPTS} attempts:\n" + "\n=====\n".join(failures))

    def _start_once(self, should_stop) -> bool:
        import ray._private.services

        # A short path: Ray's unix sockets live under it (107-byte limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lumos-fake-", dir="/tmp"))
        ports = dict(zip(HEAD_PORT_FLAGS, free_ports(len(HEAD_PORT_FLAGS)), strict=True))
        self.address = f"{ray._private.services.get_node_ip_address()}:{ports['port']}"
        config = self.temp_dir / "autoscaling.json"
        config.write_text(json.dumps(autoscaling_config(self.address, max_workers=self.max_workers,
                                                        idle_timeout_s=self.idle_timeout_s,
                                                        worker_cpus=self.worker_cpus)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(self.env, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS")
        cmd = [str(RAY_BIN), "start", "--head", "--block", f"--autoscaling-config={config}", "--num-cpus=0",
               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
               f"--object-store-memory={100 << 20}"] + [f"--{k}={v}" for k, v in ports.items()]
        with open(self.temp_dir / "ray-start.log", "w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None or self._raylet_failed() or should_stop():
                return False
            with contextlib.suppress(Exception):
                if any(n["alive"] and n["head"] for n in self.nodes()):
                    time.sleep(3)  # the raylet aborts if its agents take > 15 s to register: check it again
                    self._remember_pids()
                    return self.proc.poll() is None and not self._raylet_failed()
            time.sleep(0.5)
        return False

    def _raylet_failed(self) -> bool:
        err = self.temp_dir / "session_latest" / "logs" / "raylet.err"
        return err.exists() and "Check failed" in err.read_text(errors="replace")

    def _log_tail(self) -> str:
        if self.temp_dir is None:
            return ""
        parts = []
        for path in [self.temp_dir / "ray-start.log", *sorted((self.temp_dir / "session_latest" / "logs").glob(
                "monitor*"))]:
            if path.exists():
                parts.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    def nodes(self) -> list[dict]:
        """Every node the GCS knows: ``{"id", "alive", "head", "cpus"}``."""
        if self._gcs is None:
            from ray._raylet import GcsClient

            self._gcs = GcsClient(address=self.address)
        try:
            infos = self._gcs.get_all_node_info(timeout=30).values()
        except Exception:
            self._gcs = None  # reconnect on the next call
            raise
        return [{"id": n.node_id.hex(), "alive": n.state == 0, "head": n.is_head_node,
                 "cpus": n.resources_total.get("CPU", 0.0)} for n in infos]

    def workers(self) -> list[str]:
        """Ids of the live worker nodes."""
        return sorted(n["id"] for n in self.nodes() if n["alive"] and not n["head"])

    def _remember_pids(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.started_pids |= descendants(self.proc.pid) | {self.proc.pid}

    def shutdown(self, remove_temp_dir: bool = True) -> None:
        """Stop this cluster only: SIGTERM to its ``ray start --block`` owner, then SIGKILL to whatever is left of
        the processes it started (its process tree, and processes naming its temp dir)."""
        self._remember_pids()
        if self.temp_dir is not None:
            self.started_pids |= pids_naming(str(self.temp_dir))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_cmdline(p) for p in self.started_pids):
            time.sleep(0.5)
        for pid in self.started_pids | (pids_naming(str(self.temp_dir)) if self.temp_dir else set()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.started_pids, self.proc, self._gcs = set(), None, None
        if remove_temp_dir and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


class NodeTimeline:
    """Samples the live worker nodes every ``interval_s`` and keeps the changes: ``[(seconds since start, count,
    added ids, removed ids)]``."""

    def __init__(self, cluster: FakeAutoscalingCluster, events: Path | None = None):
        self.cluster, self.events = cluster, events
        self.t0 = time.monotonic()
        self.changes: list[dict] = []
        self._live: set[str] = set()
        self.peak = 0

    def sample(self) -> set[str]:
        with contextlib.suppress(Exception):  # a GCS call can time out on a saturated machine: next sample
            now = set(self.cluster.workers())
            if now != self._live:
                change = {"t": round(time.monotonic() - self.t0, 1), "workers": len(now),
                          "added": sorted(now - self._live), "removed": sorted(self._live - now)}
                self.changes.append(change)
                self.peak = max(self.peak, len(now))
                if self.events is not None:
                    with open(self.events, "a") as f:
                        f.write(json.dumps(change) + "\n")
                self._live = now
                self.cluster._remember_pids()
        return self._live

    def summary(self) -> dict:
        added = sum(len(c["added"]) for c in self.changes)
        removed = sum(len(c["removed"]) for c in self.changes)
        return {"nodes_added": added, "nodes_removed": removed, "peak_workers": self.peak, "changes": self.changes}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cluster/fake_cluster.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--max-workers", type=int, default=3, help="worker nodes the autoscaler may add (1..8)")
    p.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs of each worker node")
    p.add_argument("--idle-timeout-s", type=float, default=10.0, help="an idle worker node is removed after this")
    p.add_argument("--scale-in-timeout-s", type=float, default=180.0,
                   help="with a command: how long to wait for the workers to be removed after it ends")
    p.add_argument("--info", type=Path, default=None,
                   help="write the address, temp dir and client env (with the auth token) here, mode 0600")
    p.add_argument("--events", type=Path, default=None, help="append node changes here as JSON lines")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="after --: a command to run against the cluster (RAY_ADDRESS and the token are set)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not 1 <= args.max_workers <= 8:
        parser.error("--max-workers must be 1..8")
    if args.worker_cpus <= 0 or args.idle_timeout_s <= 0 or args.scale_in_timeout_s <= 0:
        parser.error("--worker-cpus, --idle-timeout-s and --scale-in-timeout-s must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = FakeAutoscalingCluster(max_workers=args.max_workers, idle_timeout_s=args.idle_timeout_s,
                                     worker_cpus=args.worker_cpus)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = 0
    try:
        cluster.start(should_stop=lambda: stop["signal"] is not None)
        if stop["signal"] is not None:
            return 130
        timeline = NodeTimeline(cluster, args.events)
        if args.info is not None:
            fd = os.open(args.info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"address": cluster.address, "temp_dir": str(cluster.temp_dir), "env": cluster.env,
                           "pid": os.getpid()}, f)
        print(f"fake cluster up: {cluster.address} (head 0 CPUs, 0..{args.max_workers} x {args.worker_cpus:g}-CPU "
              f"workers, idle timeout {args.idle_timeout_s:g} s, temp dir {cluster.temp_dir})", flush=True)
        if args.command:
            job = subprocess.Popen(args.command, env={**os.environ, **cluster.env})
            while job.poll() is None:
                if stop["signal"] is not None:
                    job.send_signal(signal.SIGINT)
                    stop["signal"] = None
                timeline.sample()
                time.sleep(0.5)
            rc = job.returncode
            t_end = time.monotonic() - timeline.t0
            deadline = time.monotonic() + args.scale_in_timeout_s
            while timeline.sample() and time.monotonic() < deadline and stop["signal"] is None:
                time.sleep(0.5)
            summary = timeline.summary() | {"command_rc": rc, "command_end_t": round(t_end, 1),
                                            "scaled_in": not timeline.sample()}
            print("nodes: " + json.dumps(summary), flush=True)
            if rc == 0 and not summary["scaled_in"]:
                print(f"error: workers still up {args.scale_in_timeout_s:g} s after the command ended", file=sys.stderr)
                rc = 1
        else:
            print("Ctrl-C stops it", flush=True)
            while stop["signal"] is None:
                timeline.sample()
                time.sleep(0.5)
    except RuntimeError as e:
        first, _, rest = str(e).partition("\n")
        print(f"error: {first}", file=sys.stderr)
        if rest:
            print(rest, file=sys.stderr)
        rc = 1
    finally:
        cluster.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
