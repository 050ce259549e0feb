"""Children that a test stops with Ctrl-C (SIGINT) must start with SIGINT at its default.

A shell that runs a command in the background (``make test &``, ``nohup ... &``) starts it with SIGINT ignored;
every child inherits the ignore, and a Python child that starts with SIGINT ignored never raises
``KeyboardInterrupt`` (Python only installs its handler when the parent left SIGINT at its default). A Ctrl-C test
run that way would see its job finish instead of stopping. ``preexec_fn=default_sigint`` gives the child the
disposition an interactive Ctrl-C meets.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``subprocess.Popen(preexec_fn=...)``: reset SIGINT to its default in the child before it execs."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
