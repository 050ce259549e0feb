"""Merge batches that wait for a busy sampler into one sampler call (request-level continuous batching).

Ray Serve's ``@serve.batch`` (2.60) forms the next batch while the previous one still runs: a request that
arrives during a long sampler call ends up in a small batch of whatever came within ``batch_wait_timeout_s`` of
it, and these small batches then queue one behind the other. :class:`Coalescer` sits behind ``@serve.batch``
(with several batches allowed in flight): every gathered batch joins one pending list, and a single worker
takes up to ``max_rows`` pending jobs per call of the blocking ``run`` function (in a thread, so the event loop
keeps gathering). While the sampler is idle nothing changes: the first batch runs at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class Coalescer:
    """Run jobs through ``run(list_of_jobs) -> list_of_results`` with at most ``max_rows`` jobs per call.

    Args:
        run: blocking function; called in a worker thread, one call at a time.
        max_rows: most jobs per call.
    """

    def __init__(self, run: Callable[[list[Any]], list[Any]], max_rows: int):
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows} must be >= 1")
        self.run, self.max_rows = run, max_rows
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.worker: asyncio.Task | None = None
        self.calls: list[int] = []
        """Jobs per ``run`` call so far (for tests and logs)."""

    async def submit(self, jobs: Sequence[Any]) -> list[Any]:
        """Queue ``jobs`` and wait for their results (in order)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in jobs]
        self.pending.extend(zip(jobs, futures))
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._drain())
        return list(await asyncio.gather(*futures))

    async def _drain(self) -> None:
        while self.pending:
            live = [(job, fut) for job, fut in self.pending if not fut.done()]  # drop cancelled callers
            take, self.pending = live[: self.max_rows], live[self.max_rows:]
            if not take:
                continue
            self.calls.append(len(take))
            try:
                results = await asyncio.to_thread(self.run, [job for job, _ in take])
            except Exception as e:  # the caller sees the error; the worker goes on
                for _, fut in take:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), result in zip(take, results):
                if not fut.done():
                    fut.set_result(result)


__all__ = ["Coalescer"]
