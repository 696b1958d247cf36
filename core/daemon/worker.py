"""The daemon's single dataplane worker: jobs run one at a time, in the order queued.

Engine events, interface creation and operator reads of counters all go through it, so
every dataplane call happens in the engine's order and none overlaps another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("rbipsec.daemon")

Job = Callable[[], Awaitable[Any]]


class JobWorker:
    """A queue of jobs and the task that runs them; one failing job never stops it."""

    def __init__(self) -> None:
        self._jobs: asyncio.Queue[tuple[Job, asyncio.Future[Any] | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def post(self, job: Job) -> None:
        """Queue a job; its outcome is only logged."""
        self._jobs.put_nowait((job, None))

    async def submit(self, job: Job) -> Any:
        """Queue a job and wait for its result (or its exception)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, future))
        return await future

    async def _run(self) -> None:
        while True:
            job, future = await self._jobs.get()
            try:
                result = await job()
            except Exception as error:  # the worker must survive any one job
                log.exception("internal error in a dataplane job")
                if future is not None and not future.done():
                    future.set_exception(error)
            else:
                if future is not None and not future.done():
                    future.set_result(result)


async def nothing() -> None:
    """A job that does nothing: waiting for it waits for every job queued before it."""
    return None
