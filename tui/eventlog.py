"""Daemon events as log records: a level, the peer they concern and one readable line.

Events arrive as JSON objects with `type` and `time` (core/daemon/bus.py); engine events
carry their dataclass fields (core/ike/events.py), daemon events their own.  Unknown types
are shown generically, so a newer daemon's events still appear.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
DPD_TYPES = frozenset({"DpdProbeSent", "DpdAnswered", "PeerDead"})
_QUIET_DOWN_REASONS = ("deleted", "replaced (rekeyed or re-established)")


@dataclass(frozen=True)
class EventRecord:
    time: str  # ISO UTC as the daemon sent it
    type: str
    peer: str | None
    level: str  # one of LEVELS
    text: str

    @property
    def clock(self) -> str:
        """HH:MM:SS of the ISO time (the whole text when it is not ISO)."""
        _, sep, rest = self.time.partition("T")
        return rest[:8] if sep else self.time

    def at_least(self, level: str) -> bool:
        return _rank(self.level) >= _rank(level)


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 1


def _get(data: Mapping[str, Any], *keys: str) -> Any:
    value: Any = data
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def event_peer(event: Mapping[str, Any]) -> str | None:
    for path in (("peer",), ("info", "peer"), ("new", "peer"), ("name",)):
        value = _get(event, *path)
        if isinstance(value, str) and value:
            return value
    return None


def _ike_up(event: Mapping[str, Any]) -> str:
    info = _get(event, "info") or {}
    remote = _get(info, "remote") or {}
    return (
        f"IKE SA up with {remote.get('address', '?')}:{remote.get('port', '?')}"
        f" ({info.get('algorithms', '?')})"
    )


def _child_installed(event: Mapping[str, Any]) -> str:
    info = _get(event, "info") or {}
    text = f"Child SA installed in {info.get('spi_in', '?')} out {info.get('spi_out', '?')}"
    if event.get("replaces_spi_in"):
        text += f" (rekey of {event['replaces_spi_in']})"
    return text


_DESCRIBE: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "IkeSaUp": _ike_up,
    "IkeSaRekeyed": lambda e: (
        f"IKE SA rekeyed {_get(e, 'old', 'spi_i')} -> {_get(e, 'new', 'spi_i')}"
    ),
    "IkeSaDown": lambda e: f"IKE SA down: {e.get('reason', '?')} {e.get('detail', '')}".rstrip(),
    "ChildSaInstalled": _child_installed,
    "ChildSaOutboundReady": lambda e: f"Child SA {e.get('spi_in', '?')} carries outbound",
    "ChildSaDeleted": lambda e: (
        f"Child SA deleted in {e.get('spi_in', '?')} out {e.get('spi_out', '?')}: "
        f"{e.get('reason', '?')}"
    ),
    "DpdProbeSent": lambda e: f"DPD probe {e.get('attempt', '?')}/{e.get('of', '?')} sent",
    "DpdAnswered": lambda e: "DPD answered",
    "PeerDead": lambda e: f"peer dead (DPD): silent for {e.get('silence', '?')} s",
    "ExchangeFailed": lambda e: (
        f"{e.get('exchange', '?')} failed: {e.get('message', '?')}"
        + (f" [{e['notify']}]" if e.get("notify") else "")
    ),
    "EventsLost": lambda e: f"{e.get('count', '?')} events lost (the console fell behind)",
}


def _level(event: Mapping[str, Any]) -> str:
    kind = event.get("type")
    given = event.get("level")
    if isinstance(given, str) and given in LEVELS:
        return given
    if kind in ("PeerDead",):
        return "error"
    if kind in ("ExchangeFailed", "EventsLost"):
        return "warning"
    if kind == "IkeSaDown":
        return "info" if event.get("reason") in _QUIET_DOWN_REASONS else "warning"
    if kind in ("ChildSaOutboundReady", "DpdAnswered"):
        return "debug"
    return "info"


def _generic(event: Mapping[str, Any]) -> str:
    message = event.get("message")
    if isinstance(message, str):
        return message
    fields = [
        f"{key}={value}"
        for key, value in event.items()
        if key not in ("type", "time", "peer", "level") and not isinstance(value, dict | list)
    ]
    return " ".join(fields) or str(event.get("type", "event"))


def describe(event: Mapping[str, Any]) -> EventRecord:
    kind = str(event.get("type", "Event"))
    time = event.get("time")
    describer = _DESCRIBE.get(kind, _generic)
    return EventRecord(
        time=time if isinstance(time, str) else "",
        type=kind,
        peer=event_peer(event),
        level=_level(event),
        text=describer(event),
    )


class EventStore:
    """The last `limit` events, oldest first."""

    def __init__(self, limit: int = 5000) -> None:
        self._records: deque[EventRecord] = deque(maxlen=limit)

    def add(self, record: EventRecord) -> None:
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[EventRecord]:
        return iter(self._records)

    def for_peer(self, name: str) -> list[EventRecord]:
        return [record for record in self._records if record.peer == name]

    def matching(self, level: str, text: str = "") -> list[EventRecord]:
        needle = text.lower()
        return [
            record
            for record in self._records
            if record.at_least(level)
            and (not needle or needle in f"{record.peer or ''} {record.text}".lower())
        ]
