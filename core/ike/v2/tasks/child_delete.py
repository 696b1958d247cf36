"""INFORMATIONAL with a Delete payload for Child SAs (RFC 7296 1.4.1, 2.25.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ike.constants import ExchangeType, PayloadType, ProtocolId
from core.ike.errors import IkeError
from core.ike.v2.child import ChildSa, ChildState
from core.ike.v2.message import Message
from core.ike.v2.payloads import DeletePayload, Payload
from core.ike.v2.tasks.base import Task
from core.ike.v2.tasks.common import Payloads, spi_bytes

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa


class ChildDelete(Task):
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, child: ChildSa, reason: str) -> None:
        self.child = child
        self.reason = reason

    def can_start(self, sa: IkeSa) -> bool:
        return self.child in sa.children

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        self.child.state = ChildState.DELETING
        return [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP,
                                                   (spi_bytes(self.child.spi_in),)))]

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        sa.remove_child(self.child, self.reason, now)
        return False

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        sa.remove_child(self.child, self.reason, now)


def respond_child_delete(sa: IkeSa, payload: DeletePayload, now: float) -> Payloads:
    """Delete the pairs the peer names; answer with our halves of them, leaving out those
    we are deleting ourselves (RFC 7296 1.4.1)."""
    ours: list[bytes] = []
    for spi in payload.spis:
        if len(spi) != 4:
            continue
        child = sa.find_child_by_out(int.from_bytes(spi, "big"))
        if child is None:
            continue
        if child.state != ChildState.DELETING:
            ours.append(spi_bytes(child.spi_in))
        sa.remove_child(child, "deleted by peer", now)
    if not ours:
        return []
    return [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP, tuple(ours)))]
