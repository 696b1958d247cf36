"""Loop timers for the sans-IO engine: one handle at the engine's next deadline, and
periodic ticks (inbound-traffic polling, name re-resolution)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable

# A deadline already in the past runs after this delay, so that an engine that keeps
# returning a past deadline cannot spin the loop.
MIN_DELAY = 0.005


class DeadlineTimer:
    """Calls `callback` once when the loop's clock reaches the deadline last scheduled."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None

    @property
    def deadline(self) -> float | None:
        return self._deadline

    def schedule(self, deadline: float | None) -> None:
        """Move the timer to `deadline` (None: nothing pending)."""
        if deadline == self._deadline and self._handle is not None:
            return
        self.cancel()
        if deadline is None:
            return
        self._deadline = deadline
        at = max(deadline, self._loop.time() + MIN_DELAY)
        self._handle = self._loop.call_at(at, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._deadline = None

    def _fire(self) -> None:
        self._handle = None
        self._deadline = None
        self._callback()


class Periodic:
    """Calls `callback` every `interval` seconds until cancelled."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval: float, callback: Callable[[], None]
    ) -> None:
        self._loop = loop
        self.interval = interval
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = loop.call_later(interval, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None

    def _fire(self) -> None:
        self._handle = self._loop.call_later(self.interval, self._fire)
        self._callback()


def wall_time(monotonic: float, now: float) -> float:
    """The wall-clock (Unix) time of the loop-clock instant `monotonic`, given the loop's
    `now`.  Computed on each call, so a wall-clock step shows at once."""
    return time.time() + (monotonic - now)


def iso_time(unix_time: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-11-02T10:15:30.123Z."""
    moment = datetime.datetime.fromtimestamp(unix_time, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
