"""INFORMATIONAL with a Delete payload for the IKE SA (RFC 7296 1.4.1, 2.25.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ike.constants import ExchangeType, PayloadType, ProtocolId
from core.ike.errors import IkeError
from core.ike.events import DownReason
from core.ike.v2.message import Message
from core.ike.v2.payloads import DeletePayload, Payload
from core.ike.v2.state import IkeState
from core.ike.v2.tasks.base import Task

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa

DELETE_TRIES = 3  # a DELETE is not worth the full retransmission schedule


class IkeDelete(Task):
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, reason: DownReason = DownReason.DELETED_BY_US, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        if sa.state != IkeState.REKEYED:
            sa.state = IkeState.DELETING
        return [(PayloadType.DELETE, DeletePayload(ProtocolId.IKE, ()))]

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        self._finish(sa, now)
        return False

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        self._finish(sa, now)

    def timed_out(self, sa: IkeSa, now: float) -> None:
        self._finish(sa, now)

    def max_sends(self, sa: IkeSa) -> int | None:
        return DELETE_TRIES

    def _finish(self, sa: IkeSa, now: float) -> None:
        replaced = sa.state == IkeState.REKEYED
        sa.destroy(DownReason.REPLACED if replaced else self.reason, now, detail=self.detail,
                   keep_children=replaced)
