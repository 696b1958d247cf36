"""The task interface: one exchange, built and processed by the initiator of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ike.constants import ExchangeType
from core.ike.errors import IkeError
from core.ike.v2.message import Message
from core.ike.v2.payloads import Payload

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa


class Task:
    """An exchange we initiate.  The SA's task manager sends `build`'s payloads as a
    request, retransmits it, and hands the response to `process`."""

    exchange: ExchangeType

    def can_start(self, sa: IkeSa) -> bool:
        """Checked when the task reaches the front of the queue; False drops it."""
        return True

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        raise NotImplementedError

    def sent(self, sa: IkeSa, message: bytes) -> None:
        """The encoded request (IKE_SA_INIT keeps it for AUTH)."""

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        """Handle the response; return True to send the request again (message ID 0)."""
        raise NotImplementedError

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        """The response carried an error or could not be processed."""

    def timed_out(self, sa: IkeSa, now: float) -> None:
        """No response after every retransmission: the peer is gone (RFC 7296 2.4)."""
        from core.ike.events import DownReason

        sa.destroy(DownReason.TIMEOUT, now, detail=f"{self.exchange.name} got no answer")

    def retransmit_delay(self, sa: IkeSa, sent_before: int) -> float | None:
        """A task-specific retransmission delay, or None for the standard schedule."""
        return None

    def max_sends(self, sa: IkeSa) -> int | None:
        return None
