"""Engine behaviour the daemon ran into, kept as strict xfail reproducers for the engine's
owner: each turns into a failure (XPASS) once fixed, so it can then move to tests/ike."""

from __future__ import annotations

import pytest

from core.ike.events import Address, DownReason, IkeSaDown
from tests.ike.v2.pair import A_ADDR, B_ADDR, Pair, mirror, policy


@pytest.mark.xfail(
    strict=True,
    reason="engine: INITIAL_CONTACT sent while an IKE SA with the "
    "peer exists; with the duplicate rule both SAs die (reported to the lead)",
)
def test_both_sides_initiating_with_a_lost_first_packet_keeps_one_sa() -> None:
    # Both gateways start at about the same time; A's first IKE_SA_INIT is lost (B is not
    # listening yet).  B's own initiation succeeds.  A's retransmission then builds a
    # second IKE SA whose IKE_AUTH carries INITIAL_CONTACT, although A holds an SA with B:
    # B destroys its working SA, A's duplicate rule (keep the lowest SPIi) deletes the
    # new one, and B is left with nothing and re-establishes (seconds without a tunnel;
    # seen in every two-daemon start in namespaces).
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
