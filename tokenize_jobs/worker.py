"""The decode child process and its supervisor (DESIGN §5: one bad input never stalls the job).

decord can hang or crash on broken files, so every input is fetched, opened and read in a child process. The
parent (:class:`DecodeWorker`, one per decode actor) sends one step at a time — open an input, read one clip —
and waits at most ``ClipSettings.timeout_s``; on a timeout or a crash it kills the child, starts a fresh one, and
the input (or clip) becomes an error row. The child is a fresh interpreter started with ``subprocess``, not
``multiprocessing``: a spawned multiprocessing child re-imports the parent's ``__main__``, which inside a Ray worker
is Ray's own worker script. Requests travel over a socket pair with ``multiprocessing.connection`` framing.
The child imports decord, PyAV and Pillow but not torch, so it starts in about a second.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from tokenize_jobs.cli import one_line
from tokenize_jobs.decode import ClipPlan, ClipSettings, InputError, VideoInfo
from tokenize_jobs.readers import open_reader, source_ext

STARTUP_TIMEOUT_S = 120.0
"""Deadline for a decode child to start (imports decord, PyAV, Pillow; seconds on a loaded machine)."""

def fetch(source: str) -> tuple[str, bool]:
    """A local path holding ``source``'s bytes: the file itself, or a temp copy of an S3 object.

    Returns:
        ``(path, is_temp)``.

    Raises:
        InputError: stage ``read`` for a missing, unreadable or empty file.
    """
    from lumos import storage

    if not storage.is_s3(source):
        if not os.path.exists(source):
            raise InputError("read", "no such file")
        if os.path.isdir(source):
            raise InputError("read", "is a directory")
        try:
            with open(source, "rb") as f:
                head = f.read(1)
        except OSError as e:
            raise InputError("read", one_line(e)) from None
        if not head:
            raise InputError("read", "empty file (0 bytes)")
        return source, False
    try:
        data = storage.read_bytes(source)
    except FileNotFoundError:
        raise InputError("read", "no such object") from None
    except Exception as e:  # noqa: BLE001 - S3 errors come in many types
        raise InputError("read", one_line(e)) from None
    if not data:
        raise InputError("read", "empty object (0 bytes)")
    fd, path = tempfile.mkstemp(suffix=source_ext(source), prefix="lumos-src-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path, True


class _ChildState:
    """The currently open input of a child process."""

    def __init__(self) -> None:
        self.reader = None
        self.temp: str | None = None

    def ping(self) -> str:
        return "ok"

    def close(self) -> None:
        self.reader = None
        if self.temp:
            try:
                os.unlink(self.temp)
            except OSError:
                pass
        self.temp = None

    def open(self, source: str, settings: ClipSettings) -> VideoInfo:
        self.close()
        path, is_temp = fetch(source)
        self.temp = path if is_temp else None
        self.reader = open_reader(path, source, settings)
        try:
            info = self.reader.info()
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError("open", f"cannot probe: {one_line(e)}") from None
        check_info(info, settings)
        return info

    def read(self, indices: list[int], strategy: str, bucket: tuple[int, int]) -> tuple[np.ndarray, float]:
        from lumos.buckets import resize_center_crop

        t0 = time.perf_counter()
        try:
            frames = self.reader.read(indices, strategy)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise InputError("decode", one_line(e)) from None
        decode_s = time.perf_counter() - t0
        if frames.shape[0] != len(indices) or frames.ndim != 4:
            raise InputError("decode", f"got frames of shape {frames.shape} for {len(indices)} samples")
        return resize_center_crop(frames, bucket), decode_s


def check_info(info: VideoInfo, settings: ClipSettings) -> None:
    """Reject inputs with no frames or over the resolution limit before decoding anything."""
    if info.num_frames < 1 or info.width < 1 or info.height < 1:
        raise InputError("open", "no video frames")
    if max(info.width, info.height) > settings.max_resolution:
        raise InputError("open", f"resolution {info.width}x{info.height} over the limit "
                                 f"{settings.max_resolution} (--max-resolution)")


def child_main(fd: int) -> None:
    """Entry point of the decode child process: serve ``(op, args)`` requests on the socket ``fd``."""
    from multiprocessing.connection import Connection

    import av  # noqa: F401 - import everything up front so the first clip is not charged for it
    import decord  # noqa: F401
    import PIL.Image  # noqa: F401

    import lumos.buckets  # noqa: F401 - numpy + Pillow only: no torch in the child

    conn = Connection(fd)
    state = _ChildState()
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        op, args = msg
        try:
            result = ("ok", getattr(state, op)(*args))
        except InputError as e:
            result = ("err", e.stage, e.message)
        except Exception as e:  # noqa: BLE001 - anything else is reported, never fatal to the worker
            result = ("err", "decode" if op == "read" else "open", one_line(e))
        conn.send(result)
    state.close()


class DecodeWorker:
    """A decode child process with a per-step timeout; restarted after a timeout or a crash.

    Args:
        settings: clip settings (its ``timeout_s`` bounds every step).
    """

    def __init__(self, settings: ClipSettings):
        self.settings = settings
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._ready = False  # the running child has answered a ping (its imports are done)

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        fd = theirs.fileno()
        cmd = [sys.executable, "-c", f"from tokenize_jobs.worker import child_main; child_main({fd})"]
        self._proc = subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self._ready = False

    def _call(self, op: str, args: tuple, stage: str, timeout_s: float | None = None):
        self.launch()
        timeout_s = timeout_s or self.settings.timeout_s
        try:
            self._conn.send((op, args))
            ready = self._conn.poll(timeout_s)
        except OSError:
            ready = True  # the child is gone; recv below reports it
        if not ready:
            self._kill()
            raise InputError(stage, f"timed out after {timeout_s:g} s")
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.wait(10) if self._proc is not None else None
            self._kill()
            raise InputError(stage, f"decoder process died (exit code {code})") from None
        if reply[0] == "err":
            raise InputError(reply[1], reply[2])
        return reply[1]

    def launch(self) -> None:
        """Start the child process without waiting for it (its imports overlap with the caller's own start-up)."""
        if not self._alive():
            self._kill()
            self._start()

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Start the child if it is not running and wait until it has imported its decoders, so later steps are
        timed on their work alone.

        Raises:
            InputError: stage ``open`` if the child does not come up within ``timeout_s``.
        """
        self.launch()
        if not self._ready:
            self._call("ping", (), "open", timeout_s)
            self._ready = True

    def open(self, source: str) -> VideoInfo:
        """Fetch and open ``source`` in the child; returns what is known before decoding frames."""
        self.start()
        return self._call("open", (source, self.settings), "open")

    def read(self, plan: ClipPlan, strategy: str, bucket: tuple[int, int]) -> tuple[np.ndarray, float]:
        """Frames of one clip of the open input, resized into ``bucket``.

        Returns:
            uint8 (N, bucket H, bucket W, 3) and the seconds spent decoding (excluding the resize).
        """
        return self._call("read", (plan.indices, strategy, bucket), "decode")

    def close(self) -> None:
        """Stop the child process."""
        if self._alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
