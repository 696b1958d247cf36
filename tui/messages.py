"""Messages the feed workers post to the app; the app is the only reader of the source."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from core.daemon.control.protocol import JsonDict
from tui.model import Snapshot


class StatusUpdated(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class EventArrived(Message):
    def __init__(self, event: JsonDict) -> None:
        super().__init__()
        self.event = event


@dataclass(frozen=True)
class Link:
    """The state of the console's link to the core."""

    connected: bool
    message: str = ""
    retry_in: float | None = None  # seconds until the next attempt, when not connected
    attempts: int = 0


class LinkChanged(Message):
    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link
