"""Liveness check: an empty INFORMATIONAL request (RFC 7296 1.4, 2.4).

Sent after `dpd_interval` of silence from the peer, retried every `dpd_interval` up to
`dpd_retries` times; no answer declares the peer dead, so a dead peer is detected after
about dpd_interval x (dpd_retries + 1) seconds of silence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ike.constants import ExchangeType
from core.ike.events import DownReason, DpdAnswered, DpdProbeSent, PeerDead
from core.ike.v2.message import Message
from core.ike.v2.payloads import Payload
from core.ike.v2.tasks.base import Task

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa


class Dpd(Task):
    exchange = ExchangeType.INFORMATIONAL

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        sa.dpd_probes = 1
        sa.events.append(DpdProbeSent(sa.name, 1, sa.policy.dpd_retries + 1))
        return []

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        sa.dpd_probes = 0
        sa.events.append(DpdAnswered(sa.name))
        return False

    def retransmit_delay(self, sa: IkeSa, sent_before: int) -> float | None:
        if sent_before > 0:
            sa.dpd_probes = sent_before + 1
            sa.events.append(DpdProbeSent(sa.name, sent_before + 1, sa.policy.dpd_retries + 1))
        return max(sa.policy.dpd_interval, 1.0)

    def max_sends(self, sa: IkeSa) -> int | None:
        return sa.policy.dpd_retries + 1

    def timed_out(self, sa: IkeSa, now: float) -> None:
        sa.events.append(PeerDead(sa.name, now - sa.last_heard))
        sa.destroy(DownReason.PEER_DEAD, now, detail="no answer to liveness checks")
