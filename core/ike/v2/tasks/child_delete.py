"""INFORMATIONAL with a Delete payload for Child SAs (RFC 7296 1.4.1, 2.25.1)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ike.constants import ExchangeType, PayloadType, ProtocolId
from core.ike.errors import IkeError
from core.ike.v2.child import ChildSa, ChildState
from core.ike.v2.message import Message
from core.ike.v2.payloads import DeletePayload, Payload
from core.ike.v2.tasks.base import Task
from core.ike.v2.tasks.common import Payloads, error_notify, notify_name, spi_bytes

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa


class ChildDelete(Task):
    """Delete `child`.  If the peer answers with an error notify it refused the request
    (RFC 7296 2.21.2) and still holds the pair, sending on it: with `keep_if_refused` (an SA
    we replaced and no longer send on) we keep accepting it until it expires."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, child: ChildSa, reason: str, *, keep_if_refused: bool = False) -> None:
        self.child = child
        self.reason = reason
        self.keep_if_refused = keep_if_refused

    def can_start(self, sa: IkeSa) -> bool:
        return self.child in sa.children

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        self.child.state = ChildState.DELETING
        return [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP,
                                                   (spi_bytes(self.child.spi_in),)))]

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        refusal = error_notify(message)
        if refusal is not None and self.keep_if_refused and now < self.child.expire_at:
            sa.log("warning", f"peer refused to delete Child SA {self.child.spi_in:08x} "
                   f"({notify_name(refusal.notify_type)}): accepting it until it expires")
            self.child.state = ChildState.REKEYED
            return False
        sa.remove_child(self.child, self.reason, now)
        return False

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        sa.remove_child(self.child, self.reason, now)


class UnusedChildDelete(Task):
    """DELETE for a Child SA the peer created for us but we never installed: its response
    to our CREATE_CHILD_SA was unusable (RFC 7296 3.3.6: we terminate the exchange; the
    peer already holds the SA).  `spi_in` is the SPI we offered, the peer's outbound."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, spi_in: int) -> None:
        self.spi_in = spi_in

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        sa.log("info", f"deleting the Child SA the peer created with our SPI "
               f"{self.spi_in:08x} (its response was unusable)")
        return [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP, (spi_bytes(self.spi_in),)))]

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        return False


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
        replaced = child.replaces
        if replaced is not None and replaced in sa.children and \
                replaced.state == ChildState.REKEYED and not _still_replaced(sa, replaced, child):
            replaced.state = ChildState.INSTALLED  # its successor never came: it carries on
        sa.remove_child(child, "deleted by peer", now)
    if not ours:
        return []
    return [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP, tuple(ours)))]


def _still_replaced(sa: IkeSa, old: ChildSa, leaving: ChildSa) -> bool:
    """Whether a live Child SA other than `leaving` descends from `old` through `replaces`:
    the winner of a rekey collision, when the peer deletes its redundant sibling (which also
    names `old`), or `leaving`'s own successor, when the peer deletes `leaving` after
    rekeying it while `old` lingers (the peer refused its DELETE)."""
    for child in sa.children:
        if child is leaving or child.redundant or child.expired or \
                child.state == ChildState.DELETING:
            continue
        seen: set[int] = set()
        ancestor = child.replaces
        while ancestor is not None and id(ancestor) not in seen:
            if ancestor is old:
                return True
            seen.add(id(ancestor))
            ancestor = ancestor.replaces
    return False
