"""The cluster recipes against a real Ray head node: ``ray start --head`` with token auth, then ``ray job submit``.

One head node (its own temp dir, free ports, ``RAY_AUTH_MODE=token`` with a token of its own in
``RAY_AUTH_TOKEN``, so ``~/.ray`` is never touched) is started for the module and stopped at the end by
terminating the ``ray start --block`` process that owns it, then any leftover process whose command line names
its temp dir. Never a bare ``ray stop``: that would kill every Ray process of the user on the machine.

The jobs go through ``cluster/submit.sh`` exactly as on a cluster, with ``LUMOS_ROOT`` pointing at a local
directory instead of ``s3://$BUCKET/lumos``: the shapes-world corpus, then the tokenization job on it.

Ray 2.60's raylet aborts when the node's dashboard agent takes more than 15 s (hard-coded) to publish its port;
on a heavily loaded machine that happens, so the fixture checks the raylet itself and starts afresh (up to
``START_ATTEMPTS`` times) instead of trusting the first HTTP answer of the dashboard.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "cluster"))
from fake_cluster import free_ports  # noqa: E402  (cluster/ holds scripts, not a package)

SUBMIT = REPO / "cluster" / "submit.sh"
RAY_BIN = Path(sys.executable).parent / "ray"
START_TIMEOUT_S = 120
START_ATTEMPTS = 3
JOB_TIMEOUT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.ray]

PORT_FLAGS = [
    "port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
    "node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port",
]


@dataclass
class HeadNode:
    address: str
    """Job API / dashboard URL."""
    env: dict[str, str]
    """Environment for clients of this cluster (token auth on, the cluster's token)."""
    token: str
    temp_dir: Path

    def diagnostics(self) -> str:
        """Tails of the head node's dashboard/raylet/GCS logs, for failure messages."""
        logs = self.temp_dir / "session_latest" / "logs"
        parts = []
        for name in ("dashboard.log", "dashboard.err", "raylet.out", "gcs_server.out", "raylet.err"):
            path = logs / name
            if path.exists():
                lines = [ln for ln in path.read_text(errors="replace").splitlines()
                         if ln.strip() and not ln.startswith(("/", "    "))]  # no native stack frames
                parts.append(f"--- {name}\n" + "\n".join(lines[-12:]))
        return "\n".join(parts)


def _get(url: str, token: str | None, timeout: float = 5) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait_until_up(proc: subprocess.Popen, address: str, token: str, temp_dir: Path) -> bool:
    """True once the job API answers and the node's dashboard agent has published its port (the raylet aborts
    if the agent takes more than ~15 s to do so, which happens on a loaded 2-CPU machine); False if the head
    node died while starting."""
    deadline = time.monotonic() + START_TIMEOUT_S
    session = temp_dir / "session_latest"
    while time.monotonic() < deadline:
        if proc.poll() is not None or _raylet_failed(temp_dir):
            return False
        try:
            api_up = _get(f"{address}/api/version", token, timeout=2) == 200
        except OSError:
            api_up = False
        if api_up and list(session.glob("dashboard_agent_listen_port_*")):
            time.sleep(3)  # the raylet reads the port file and registers the agent
            return proc.poll() is None and _raylet_alive(temp_dir)
        time.sleep(0.5)
    return False


def _raylet_failed(temp_dir: Path) -> bool:
    err = temp_dir / "session_latest" / "logs" / "raylet.err"
    return err.exists() and "Check failed" in err.read_text(errors="replace")


def _raylet_alive(temp_dir: Path) -> bool:
    """The head's raylet runs and has not hit a fatal check (``ray start --block`` notices a death late)."""
    raylets = [pid for pid in _pids_naming(str(temp_dir)) if _argv0(pid).endswith("raylet")]
    return bool(raylets) and not _raylet_failed(temp_dir)


def _argv0(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _pids_naming(marker: str) -> list[int]:
    """Processes (of any user-visible kind) whose command line contains ``marker`` (our unique temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop(proc: subprocess.Popen, temp_dir: Path) -> None:
    """Stop only this head node: its ``ray start --block`` owner, then stragglers that name its temp dir."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while _pids_naming(str(temp_dir)) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in _pids_naming(str(temp_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_head(env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    """``ray start --head --block`` in a fresh temp dir on free ports; returns (process, job API URL, temp dir)."""
    # A short path: Ray's unix sockets live under it (107-byte limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="lumos-ray-", dir="/tmp"))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    cmd = [str(RAY_BIN), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           f"--object-store-memory={256 * 1024 * 1024}"] + [f"--{k}={v}" for k, v in ports.items()]
    with open(temp_dir / "ray-start.log", "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{ports['dashboard-port']}", temp_dir


@pytest.fixture(scope="module")
def head_node():
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        # Job entrypoints run `python` from PATH: make it this venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    failures = []
    for _ in range(START_ATTEMPTS):
        proc, address, temp_dir = _start_head(env)
        head = HeadNode(address=address, env=env, token=token, temp_dir=temp_dir)
        if _wait_until_up(proc, address, token, temp_dir):
            break
        failures.append(f"{(temp_dir / 'ray-start.log').read_text()[-1500:]}\n{head.diagnostics()}")
        _stop(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    else:
        pytest.fail(f"head node did not start in {START_ATTEMPTS} attempts:\n" + "\n=====\n".join(failures))
    try:
        yield head
    finally:
        _stop(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class JobResult:
    head: HeadNode
    submit: subprocess.CompletedProcess
    """The ``ray job submit --no-wait`` call."""
    status: str
    """Final Ray job status (SUCCEEDED, FAILED, STOPPED) or ``NOT SUBMITTED``."""
    message: str
    logs: str

    def explain(self) -> str:
        return (f"status={self.status} message={self.message}\nlogs:\n{self.logs[-4000:]}\n"
                f"submit rc={self.submit.returncode}\n{self.submit.stdout[-2000:]}\n{self.submit.stderr[-2000:]}\n"
                f"{self.head.diagnostics()}")


def _get_json(head: HeadNode, path: str) -> dict:
    req = urllib.request.Request(f"{head.address}{path}", headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_for_job(head: HeadNode, submission_id: str, submit: subprocess.CompletedProcess) -> JobResult:
    """Poll the job API until the job ends (log tailing over a websocket is fragile on a loaded 2-CPU box)."""
    if submit.returncode != 0:
        return JobResult(head, submit, "NOT SUBMITTED", "", "")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        info = _get_json(head, f"/api/jobs/{submission_id}")
        if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
            logs = _get_json(head, f"/api/jobs/{submission_id}/logs")["logs"]
            return JobResult(head, submit, info["status"], info.get("message") or "", logs)
        time.sleep(2)


def ray_job_submit(head: HeadNode, *entrypoint: str) -> JobResult:
    """``ray job submit --working-dir <repo> --runtime-env cluster/runtime_env.yaml -- ENTRYPOINT``."""
    sid = f"test-{secrets.token_hex(4)}"
    cmd = [str(RAY_BIN), "job", "submit", "--address", head.address, "--submission-id", sid, "--no-wait",
           "--working-dir", str(REPO), "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
           *entrypoint]
    r = subprocess.run(cmd, env=head.env, cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    return wait_for_job(head, sid, r)


def submit_sh(head: HeadNode, job: str, root: Path, *args: str, **env: str) -> JobResult:
    """``cluster/submit.sh --no-wait JOB ARGS`` with the run rooted at a local directory."""
    sid = f"test-{job}-{secrets.token_hex(4)}"
    full_env = {**head.env, "RAY": str(RAY_BIN), "RAY_ADDRESS": head.address, "LUMOS_ROOT": str(root),
                "SUBMISSION_ID": sid, **env}
    r = subprocess.run(["bash", str(SUBMIT), "--no-wait", job, *args], env=full_env, cwd=REPO, capture_output=True,
                       text=True, timeout=JOB_TIMEOUT_S)
    return wait_for_job(head, sid, r)


def _module_exists(module: str) -> bool:
    return (REPO / (module.replace(".", "/") + ".py")).exists()


def test_job_api_requires_the_cluster_token(head_node):
    assert _get(f"{head_node.address}/api/jobs/", head_node.token) == 200
    assert _get(f"{head_node.address}/api/jobs/", None) == 401
    assert _get(f"{head_node.address}/api/jobs/", "not-the-token") == 403
    env = {**head_node.env, "RAY_AUTH_TOKEN": "not-the-token"}
    r = subprocess.run([str(RAY_BIN), "job", "list", "--address", head_node.address], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


def test_submit_ships_the_checkout_as_working_dir(head_node):
    """The job imports this checkout's code from the uploaded working dir, without .venv/.git in it, and gets
    the env_vars of cluster/runtime_env.yaml."""
    probe = ("import json, os, lumos; print('PROBE', json.dumps({'lumos': lumos.__file__, 'cwd': os.getcwd(), "
             "'entries': sorted(os.listdir('.')), 'nccl': os.environ.get('NCCL_SOCKET_IFNAME')}))")
    job = ray_job_submit(head_node, "python", "-c", probe)
    assert job.status == "SUCCEEDED", job.explain()
    line = next(ln for ln in job.logs.splitlines() if ln.startswith("PROBE "))
    probe_out = json.loads(line[len("PROBE "):])
    assert probe_out["cwd"].startswith(str(head_node.temp_dir)), probe_out["cwd"]
    assert probe_out["lumos"].startswith(probe_out["cwd"]), "lumos must come from the uploaded working dir"
    assert {"lumos", "cluster", "pyproject.toml"} <= set(probe_out["entries"])
    assert not {".venv", ".git", ".cache", "runs"} & set(probe_out["entries"])
    assert probe_out["nccl"] == "^lo,docker"


def test_failed_job_is_reported_failed(head_node):
    job = ray_job_submit(head_node, "python", "-c", "import sys; sys.exit(3)")
    assert job.status == "FAILED", job.explain()
    assert "exit code 3" in job.message


def test_submit_sh_synth_then_tokenize(head_node, tmp_path):
    """cluster/submit.sh on the run layout: synth writes raw/corpus/, tokenize turns it into shards/corpus/."""
    if not _module_exists("tokenize_jobs.synth"):
        pytest.skip("tokenize_jobs.synth not written yet")
    root = tmp_path / "lumos"
    # Trailing ARGS go to the module: small clips keep the test light.
    job = submit_sh(head_node, "synth", root, "--size", "32", "--fps", "4", "--seconds", "2", VIDEOS="2", SEED="0")
    assert job.status == "SUCCEEDED", job.explain()
    raw = root / "raw" / "corpus"
    rows = [json.loads(ln) for ln in (raw / "manifest.jsonl").read_text().splitlines() if ln.strip()]
    assert len(rows) == 2
    for row in rows:
        assert row["caption"]
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else raw / row["path"]
        assert path.is_file() and path.stat().st_size > 0, path

    if not _module_exists("tokenize_jobs.video"):
        pytest.skip("tokenize_jobs.video not written yet")
    # Stage 2 of the layout, train-tokenizer, writes checkpoints/video_tokenizer; a freshly initialised debug
    # tokenizer stands in for it (tokenize's default --tokenizer is that path).
    from lumos.tokenizers.video import build_video_tokenizer, save_video_tokenizer

    save_video_tokenizer(str(root / "checkpoints" / "video_tokenizer"), build_video_tokenizer("debug", seed=0))
    # Pools sized for this 2-CPU head instead of the 512-vCPU recipe defaults (the env vars and trailing ARGS
    # are the documented way to resize them).
    job = submit_sh(head_node, "tokenize", root, "--decode-cpus", "0.5", "--tokenize-cpus", "0.5",
                    "--fps", "4", "--seconds", "1", "--target-size", "64", "--patch", "16",
                    DECODE_CONCURRENCY="1,1", TOKENIZE_CONCURRENCY="1,1")
    assert job.status == "SUCCEEDED", job.explain()
    shards = root / "shards" / "corpus"
    manifest = json.loads((shards / "_manifest.json").read_text())
    assert manifest["counts"]["inputs"] == 2, manifest
    table = ds.dataset(str(shards), format="parquet", exclude_invalid_files=True,
                       ignore_prefixes=["_", "."]).to_table()
    assert table.num_rows == manifest["counts"]["clips_written"] >= 1
    assert manifest["counts"]["unaccounted_inputs"] == 0
    assert manifest["tokenizer"]["uri"].endswith("checkpoints/video_tokenizer")
    assert {"clip_id", "caption", "text_ids", "video_tokens", "grid_t", "grid_h", "grid_w"} <= set(table.column_names)
