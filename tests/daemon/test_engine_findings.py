"""Engine behaviour the daemon ran into in namespaces, reproduced in memory (regression
tests; they may move to tests/ike)."""

from __future__ import annotations

from core.ike.events import Address, DownReason, IkeSaDown
from tests.ike.v2.pair import A_ADDR, B_ADDR, Pair, mirror, policy


def test_both_sides_initiating_with_a_lost_first_packet_keeps_one_sa() -> None:
    # Both gateways start at about the same time; A's first IKE_SA_INIT is lost (B is not
    # listening yet).  B's own initiation succeeds.  A's retransmission then builds a
    # second IKE SA.  Its IKE_AUTH used to carry INITIAL_CONTACT although A held an SA
    # with B: B destroyed its working SA, A's duplicate rule (keep the lowest SPIi) deletes the
    # new one, and B is left with nothing and re-establishes (seconds without a tunnel;
    # seen in two-daemon starts in namespaces).  Fixed: no INITIAL_CONTACT then.
    p = policy()
    pair = Pair(p, mirror(p), seed=1)
    pair.drop = lambda side, data: side is pair.a and len(pair.a.sent) == 1
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    pair.deliver()
    pair.drop = lambda side, data: False
    pair.advance(5)
    lost = [
        e
        for s in (pair.a, pair.b)
        for e in s.events
        if isinstance(e, IkeSaDown) and e.reason is DownReason.DELETED_BY_PEER
    ]
    assert lost == [], "an established IKE SA was torn down by the duplicate resolution"
