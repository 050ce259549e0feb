"""Exclusive claims on an output directory (local or s3://): one job writes into a directory at a time.

A claim is a small JSON file, ``<dir>/_claim.json``: ``{"token", "job", "host", "pid", "pid_started", "started",
"heartbeat", "ttl_s"}``. :func:`acquire` creates it only if it is absent (local: a hard link of a complete temp
file, which fails when the name exists; S3: ``PutObject`` with ``If-None-Match: *``), so of two jobs started
together exactly one gets it; the other gets :class:`ClaimError`, one line naming the holder. While a job runs, a
daemon thread rewrites the heartbeat every ``ttl_s / 4`` seconds.

A claim is stale — and is taken over — when its process is gone on this host (same host name, the pid no longer
runs or runs a different process, by its start time), or when its heartbeat is older than ``ttl_s`` (a job on
another host that was killed, or a host that died). Take-over replaces exactly the stale claim that was read
(local: under an ``flock`` on ``_claim.json.lock``, re-read before the replace; S3: ``PutObject`` with
``If-Match: <etag>``), so two jobs taking over the same stale claim cannot both win.

The file starts with ``_``, so shard readers and Ray Train ignore it. A finished job removes its claim
(:meth:`Claim.release`, also on Ctrl-C). Credentials are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from lumos import storage

log = logging.getLogger("lumos.claims")

CLAIM_FILE = "_claim.json"
DEFAULT_TTL_S = 120.0


class ClaimError(RuntimeError):
    """The directory is claimed by another live job (one line)."""


def _pid_started(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).create_time(), 2)
    except Exception:  # psutil missing, or no such process
        return None


def _pid_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` runs on this host and is the process that wrote the claim (same start time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if started is None:
        return True
    now = _pid_started(pid)
    return now is None or abs(now - started) < 1.0


def stale_reason(doc: dict, now: float | None = None) -> str | None:
    """Why a claim document is stale (``None`` if its job may still run)."""
    now = time.time() if now is None else now
    if doc.get("host") == socket.gethostname() and isinstance(doc.get("pid"), int):
        if not _pid_alive(doc["pid"], doc.get("pid_started")):
            return f"process {doc['pid']} on {doc['host']} is gone"
    ttl = float(doc.get("ttl_s") or DEFAULT_TTL_S)
    beat = float(doc.get("heartbeat") or 0)
    if now - beat > ttl:
        return f"no heartbeat for {now - beat:.0f} s (ttl {ttl:.0f} s)"
    return None


def describe(doc: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(doc.get("started") or 0)))
    return f"{doc.get('job', 'a job')} (pid {doc.get('pid')} on {doc.get('host')}, since {started})"


# ---- one claim file on local disk or S3 -------------------------------------------------------------------------
class _LocalFile:
    def __init__(self, path: str):
        self.path = path

    def read(self) -> tuple[dict | None, str | None]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(data), data.decode("utf-8", "replace")
        except ValueError:
            return {}, data.decode("utf-8", "replace")  # unreadable: treated as stale-by-heartbeat

    def _tmp(self, doc: dict) -> str:
        tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True)
        return tmp

    def create(self, doc: dict) -> tuple[bool, str | None]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self._tmp(doc)
        try:
            os.link(tmp, self.path)  # atomic, fails if the name exists
            return True, json.dumps(doc, sort_keys=True)
        except FileExistsError:
            return False, None
        finally:
            os.unlink(tmp)

    def replace(self, doc: dict, version: str | None) -> tuple[bool, str | None]:
        """Replace the claim iff it still reads ``version``."""
        import fcntl

        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _, now = self.read()
                if now != version:
                    return False, None
                os.replace(self._tmp(doc), self.path)
                return True, json.dumps(doc, sort_keys=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def delete(self, version: str | None) -> None:
        import fcntl

        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.read()[1] == version:
                    os.unlink(self.path)
                    os.unlink(self.path + ".lock")  # a finished job leaves nothing behind
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class _S3File:
    """Conditional writes through boto3 (pyarrow has none); endpoint and keys from the standard AWS environment."""

    def __init__(self, uri: str):
        import boto3

        bucket_key = uri[len("s3://"):]
        self.bucket, _, self.key = bucket_key.partition("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = boto3.client("s3", endpoint_url=endpoint or None,
                                   region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                                   or "us-east-1")

    @staticmethod
    def _code(e: Exception) -> str:
        return getattr(e, "response", {}).get("Error", {}).get("Code", "")

    def read(self) -> tuple[dict | None, str | None]:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as e:
            if self._code(e) in ("NoSuchKey", "404", "NotFound"):
                return None, None
            raise
        data = obj["Body"].read()
        try:
            return json.loads(data), obj["ETag"]
        except ValueError:
            return {}, obj["ETag"]

    def _put(self, doc: dict, **cond) -> tuple[bool, str | None]:
        try:
            r = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(doc, sort_keys=True).encode(),
                                       ContentType="application/json", **cond)
        except Exception as e:
            if self._code(e) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False, None
            raise
        return True, r["ETag"]

    def create(self, doc: dict) -> tuple[bool, str | None]:
        return self._put(doc, IfNoneMatch="*")

    def replace(self, doc: dict, version: str | None) -> tuple[bool, str | None]:
        return self._put(doc, IfMatch=version) if version else self.create(doc)

    def delete(self, version: str | None) -> None:
        if self.read()[1] == version:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


def _claim_file(uri: str):
    if storage.is_s3(uri):
        return _S3File(uri)
    return _LocalFile(storage.resolve(uri)[1])


@dataclass
class Claim:
    """A held claim; :meth:`release` (or leaving the ``with`` block) removes it."""

    uri: str
    doc: dict
    _file: object = field(repr=False)
    _version: str | None = field(repr=False)
    took_over: str | None = None
    """Why a stale claim was replaced, if one was."""
    lost: bool = False
    """Set when a heartbeat found the claim replaced by another job (it was taken over as stale)."""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start_heartbeat(self) -> None:
        interval = max(0.05, float(self.doc["ttl_s"]) / 4)

        def beat() -> None:
            while not self._stop.wait(interval):
                self.heartbeat()

        self._thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
        self._thread.start()

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; ``False`` (and ``lost``) if another job replaced the claim."""
        with self._lock:
            if self._stop.is_set() or self.lost:
                return not self.lost
            doc = dict(self.doc, heartbeat=time.time())
            try:
                ok, version = self._file.replace(doc, self._version)
            except Exception as e:  # a storage hiccup: try again at the next beat
                log.warning("claim %s: heartbeat failed (%s)", self.uri, type(e).__name__)
                return True
            if ok:
                self.doc, self._version = doc, version
            else:
                self.lost = True
                log.error("claim %s was taken over by another job: this job's output may be mixed with its", self.uri)
            return ok

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.lost:
                return
            try:
                self._file.delete(self._version)
            except Exception as e:
                log.warning("claim %s: could not remove it (%s); the next job takes it over", self.uri,
                            type(e).__name__)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(dir_uri: str, job: str, *, ttl_s: float = DEFAULT_TTL_S, heartbeat: bool = True,
            what: str = "--out") -> Claim:
    """Claim ``dir_uri`` (local or s3://) for ``job``; take over a stale claim.

    Args:
        dir_uri: the directory to claim (created locally if missing).
        job: what holds the claim, for the message another job gets (e.g. ``tokenize_jobs.video``).
        ttl_s: a claim whose heartbeat is older than this is stale.
        heartbeat: start the heartbeat thread.
        what: how the message names the directory (``--out``, ``checkpoint.storage + checkpoint.name``).

    Raises:
        ClaimError: another live job holds the claim (one line).
    """
    uri = storage.join(dir_uri, CLAIM_FILE)
    cf = _claim_file(uri)
    now = time.time()
    doc = {"token": uuid.uuid4().hex, "job": job, "host": socket.gethostname(), "pid": os.getpid(),
           "pid_started": _pid_started(os.getpid()), "started": now, "heartbeat": now, "ttl_s": float(ttl_s)}
    took_over = None
    for _ in range(5):
        ok, version = cf.create(doc)
        if not ok:
            old, old_version = cf.read()
            if old is None:
                continue  # released in between: try to create again
            reason = stale_reason(old)
            if reason is None:
                raise ClaimError(f"{what} {dir_uri} is in use by {describe(old)}; wait for it to finish, or if "
                                 f"that job is gone delete {uri}")
            ok, version = cf.replace(doc, old_version)
            if not ok:
                continue  # somebody else changed it: look again
            took_over = f"{describe(old)}: {reason}"
            log.warning("took over the stale claim on %s of %s", dir_uri, took_over)
        claim = Claim(uri, doc, cf, version, took_over)
        if heartbeat:
            claim.start_heartbeat()
        return claim
    raise ClaimError(f"{what} {dir_uri}: the claim {uri} keeps changing; is another job starting there?")


__all__ = ["CLAIM_FILE", "Claim", "ClaimError", "DEFAULT_TTL_S", "acquire", "describe", "stale_reason"]
