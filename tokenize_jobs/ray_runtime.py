"""Starting or joining Ray: one helper with one retry policy for every job, the demo, the benchmarks and the tests.

A process reuses a Ray it already initialised. Otherwise :func:`start_ray` joins ``address`` (or ``RAY_ADDRESS``, as
under ``ray job submit``) or starts a local Ray. A local raylet can miss its start-up deadline on a saturated machine,
and Ray reports that as a bare ``Exception``; so every start is tried :data:`START_TRIES` times, :data:`RETRY_WAIT_S`
apart, with ``ray.shutdown()`` in between, and the last failure raises ``RuntimeError("could not start or join Ray:
<first line>")``. It lives here, below ``workflows/``, so that the tokenization jobs can use it too.
"""

from __future__ import annotations

import logging
import os
import time
from types import ModuleType

from tokenize_jobs.cli import first_line

log = logging.getLogger(__name__)

START_TRIES = 3
"""Attempts to start or join Ray before giving up."""
RETRY_WAIT_S = 5.0
"""Seconds between attempts (a saturated machine needs a moment before the next raylet start)."""
DEEPSPEED_ENV = ("DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR")
"""Variables DeepSpeed reads in Ray's workers: which accelerator, and where its compiled ops are cached."""


def deepspeed_env(cpu: bool = False) -> dict[str, str]:
    """This process's :data:`DEEPSPEED_ENV` variables for a ``runtime_env``; ``DS_ACCELERATOR=cpu`` (unless set) when
    the workers train on CPU."""
    env = {k: os.environ[k] for k in DEEPSPEED_ENV if k in os.environ}
    if cpu:
        env.setdefault("DS_ACCELERATOR", "cpu")
    return env


def start_ray(*, address: str | None = None, env_vars: dict[str, str] | None = None, local: dict | None = None,
              **init_kwargs) -> ModuleType:
    """Initialise Ray once per process (see the module docstring); returns the ``ray`` module.

    Args:
        address: the cluster to join; ``None`` = ``RAY_ADDRESS`` if set, else a new local Ray.
        env_vars: environment variables for every worker (``runtime_env={"env_vars": ...}``).
        local: ``ray.init`` options used only when this call starts a local Ray (no ``address``, no
            ``RAY_ADDRESS``), e.g. ``include_dashboard`` or ``object_store_memory``.
        **init_kwargs: further ``ray.init`` options (``log_to_driver``, ``include_dashboard``, ``num_cpus``, ...).

    Raises:
        RuntimeError: Ray could not be started or joined after :data:`START_TRIES` attempts.
    """
    import ray

    if ray.is_initialized():
        return ray
    kwargs = dict(init_kwargs)
    if address is not None:
        kwargs["address"] = address
    if env_vars is not None:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    if local and address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs.update(local)
    for attempt in range(1, START_TRIES + 1):
        try:
            ray.init(**kwargs)
            return ray
        except Exception as e:  # noqa: BLE001 - Ray raises bare Exceptions for start-up timeouts
            ray.shutdown()
            first = first_line(e)
            if attempt == START_TRIES:
                raise RuntimeError(f"could not start or join Ray: {first}") from e
            log.warning("Ray did not start (%s); retrying in %.0f s (%d/%d)", first, RETRY_WAIT_S, attempt,
                        START_TRIES)
            time.sleep(RETRY_WAIT_S)
    raise AssertionError("unreachable")
