"""Exclusive claims on an output directory (issue 17, defects 1 and 4): one live holder at a time, local and S3,
with real processes; a claim left by a killed process is taken over; a live one on another host is not."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lumos import storage
from lumos.claims import CLAIM_FILE, ClaimError, acquire

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from lumos.claims import acquire
claim = acquire(sys.argv[1], "holder-job", ttl_s=float(sys.argv[2]))
print("held", flush=True)
sys.stdin.readline()   # hold until told (or killed)
claim.release()
print("released", flush=True)
"""


def start_holder(uri: str, ttl_s: float = 120.0) -> subprocess.Popen:
    """A real process that takes the claim and holds it until its stdin gets a line."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, uri, str(ttl_s)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout.readline().strip() == "held"
    return proc



@pytest.fixture(params=["local", "s3"])
def out_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/shards/out"


def test_second_claim_is_refused_while_a_process_holds_it(out_uri):
    holder = start_holder(out_uri)
    try:
        with pytest.raises(ClaimError, match=r"in use by holder-job \(pid \d+") as err:
            acquire(out_uri, "second-job", heartbeat=False)
        assert "\n" not in str(err.value) and CLAIM_FILE in str(err.value)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        holder.wait(timeout=60)
    assert not storage.exists(storage.join(out_uri, CLAIM_FILE))
    claim = acquire(out_uri, "third-job", heartbeat=False)  # free again after release
    assert claim.heartbeat()
    claim.release()
    assert not [f for f in storage.list_files(out_uri) if "_claim" in f]  # no claim or lock file left


def test_claim_of_a_killed_process_is_taken_over(out_uri):
    holder = start_holder(out_uri)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert storage.exists(storage.join(out_uri, CLAIM_FILE))  # the killed job could not clean up
    claim = acquire(out_uri, "rerun", heartbeat=False)
    try:
        assert claim.took_over and f"process {holder.pid}" in claim.took_over
        doc = json.loads(storage.read_text(storage.join(out_uri, CLAIM_FILE)))
        assert doc["pid"] == os.getpid() and doc["job"] == "rerun"
    finally:
        claim.release()


def _foreign_claim(out_uri: str, heartbeat_age_s: float) -> None:
    now = time.time()
    storage.makedirs(out_uri)
    storage.write_text(storage.join(out_uri, CLAIM_FILE), json.dumps({
        "token": "x", "job": "remote-job", "host": socket.gethostname() + "-other", "pid": 1, "pid_started": None,
        "started": now - heartbeat_age_s, "heartbeat": now - heartbeat_age_s, "ttl_s": 60.0}))


def test_claim_from_another_host_counts_by_heartbeat(out_uri):
    _foreign_claim(out_uri, heartbeat_age_s=5)  # fresh heartbeat: that job may still run
    with pytest.raises(ClaimError, match="remote-job"):
        acquire(out_uri, "mine", heartbeat=False)
    _foreign_claim(out_uri, heartbeat_age_s=3600)  # silent for an hour: stale
    claim = acquire(out_uri, "mine", heartbeat=False)
    assert "no heartbeat" in claim.took_over
    claim.release()


def test_heartbeat_refreshes_and_detects_a_take_over(out_uri):
    claim = acquire(out_uri, "mine", heartbeat=False)
    first = claim.doc["heartbeat"]
    assert claim.heartbeat() and claim.doc["heartbeat"] >= first
    _foreign_claim(out_uri, heartbeat_age_s=0)  # another job replaced our claim
    assert not claim.heartbeat() and claim.lost
    claim.release()  # must not delete the other job's claim
    assert json.loads(storage.read_text(storage.join(out_uri, CLAIM_FILE)))["job"] == "remote-job"


@pytest.mark.slow
def test_racing_processes_get_exactly_one_claim(tmp_path):
    """Eight processes start together on one stale claim: exactly one wins."""
    out = str(tmp_path / "race")
    holder = start_holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    script = ("import sys\nfrom lumos.claims import acquire, ClaimError\n"
              "try:\n    c = acquire(sys.argv[1], 'racer', heartbeat=False)\n    print('won', flush=True)\n"
              "    sys.stdin.readline()\n    c.release()\n"
              "except ClaimError:\n    print('refused', flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, out], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    answers = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.communicate("\n", timeout=60)  # the winner releases; the others have exited already
    assert sorted(answers) == ["refused"] * 7 + ["won"]
