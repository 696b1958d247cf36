"""The daemon's event bus: engine events and daemon events as JSON-ready dicts, fanned out
to subscribers (control connections that sent `subscribe`, the embedded console).

Every event is a dict with at least `type` (the event class name, e.g. "IkeSaUp",
"ChildSaInstalled", "PeerState", "ConfigReloaded", "Log") and `time` (ISO UTC).  Keys
never leave the daemon: `ChildSaInfo.keys` is not serialised.  A subscriber that falls
behind loses events and is told so with an `EventsLost` event carrying the count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from core.daemon.timers import iso_time
from core.ike.events import Address, IkeEvent

JsonDict = dict[str, Any]
SUBSCRIBER_QUEUE = 4096  # events buffered per subscriber before it starts losing them
_SECRET_FIELDS = frozenset({"keys", "psk"})
_ESP_SPI_FIELDS = frozenset({"spi_in", "spi_out", "replaces_spi_in"})


def esp_spi(spi: int) -> str:
    """An ESP SPI as status and events show it: 8 hex digits."""
    return f"{spi:08x}"


def address_json(address: Address | None) -> JsonDict | None:
    if address is None:
        return None
    return {"address": address.host, "port": address.port}


def engine_event_json(event: IkeEvent, to_wall: Callable[[float], float]) -> JsonDict:
    """An engine event as a dict: `type` plus its fields; loop-clock instants (fields
    ending in `_at`) become ISO wall-clock times, ESP SPIs hex, enums their values."""
    body = _value(event, to_wall)
    assert isinstance(body, dict)
    return {"type": type(event).__name__, "time": iso_time(time.time()), **body}


def _value(value: object, to_wall: Callable[[float], float], name: str = "") -> object:
    if isinstance(value, Address):
        return address_json(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _value(getattr(value, field.name), to_wall, field.name)
            for field in dataclasses.fields(value)
            if field.name not in _SECRET_FIELDS
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_value(item, to_wall) for item in value]
    if name in _ESP_SPI_FIELDS and isinstance(value, int):
        return esp_spi(value)
    if name.endswith("_at") and isinstance(value, float):
        return iso_time(to_wall(value))
    return value


class Subscription:
    """One subscriber's queue; iterate with `await next_event()`."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[JsonDict] = asyncio.Queue(maxsize)
        self.lost = 0

    def offer(self, event: JsonDict) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lost += 1

    async def next_event(self) -> JsonDict:
        if self.lost and self._queue.empty():
            lost, self.lost = self.lost, 0
            return {"type": "EventsLost", "time": iso_time(time.time()), "count": lost}
        event = await self._queue.get()
        return event

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self.published = 0

    def subscribe(self, maxsize: int = SUBSCRIBER_QUEUE) -> Subscription:
        subscription = Subscription(self, maxsize)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event_type: str, **fields: Any) -> None:
        self.publish_dict({"type": event_type, "time": iso_time(time.time()), **fields})

    def publish_dict(self, event: JsonDict) -> None:
        self.published += 1
        for subscription in list(self._subscribers):
            subscription.offer(event)

    def publish_made(self, make: Callable[[], JsonDict]) -> None:
        """Publish the event `make` builds, built only when someone listens: turning an
        engine event into JSON costs more than everything else the daemon does with it."""
        if self._subscribers:
            self.publish_dict(make())
        else:
            self.published += 1


class BusLogHandler(logging.Handler):
    """Publishes log records as `Log` events (with the peer, when the record names one),
    so the console can show each tunnel's log."""

    def __init__(self, bus: EventBus, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._bus = bus

    def emit(self, record: logging.LogRecord) -> None:
        self._bus.publish_made(lambda: _log_event(record))


def _log_event(record: logging.LogRecord) -> JsonDict:
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    return {
        "type": "Log",
        "time": iso_time(time.time()),
        "level": record.levelname.lower(),
        "logger": record.name,
        "peer": getattr(record, "peer", None),
        "message": message,
    }
