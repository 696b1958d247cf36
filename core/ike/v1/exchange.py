"""What a phase 1 and a quick mode exchange keep alike: the messages they last received
and sent, and the one they retransmit until it is answered (sans-IO)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.ike.v1.sa import IsakmpSa, Retransmit


class Exchange:
    """`last_in` is the peer's last message (a copy of it is a retransmission, answered
    with `last_out` by `IsakmpSa.replay`); `retransmit_record` the message of ours that
    waits for an answer."""

    def __init__(self, sa: IsakmpSa) -> None:
        self.sa = sa
        self.last_in: bytes | None = None
        self.last_out: bytes | None = None
        self.replayed: tuple[bytes, float] | None = None  # (what we answered, when)
        self.retransmit_record: Retransmit | None = None

    def _transmit(self, data: bytes, now: float, *, track: bool) -> None:
        """Send `data`; with `track`, resend it until an answer comes."""
        self.last_out = data
        if track:
            self.retransmit_record = self.sa.send_tracked(data, now)
        else:
            self.retransmit_record = None
            self.sa.emit(data, now)

    def _retransmit_if_due(self, what: str, now: float) -> bool:
        """Resend the tracked message if it is due; False once every try is used up."""
        record = self.retransmit_record
        if record is None or self.sa.retransmit(record, what, now):
            return True
        self.retransmit_record = None
        return False
