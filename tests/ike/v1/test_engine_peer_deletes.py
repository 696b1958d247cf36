"""IKEv1: the peer deleting the IPsec SA that carried the traffic leaves us to negotiate a
new one (route-based: the tunnel stays up), e.g. a passive responder that never got our
HASH(3) and dropped the unconfirmed SA after we retired the old one."""

from __future__ import annotations

from core.ike.events import ChildSaDeleted, IkeSaDown
from core.ike.policy import Timing
from core.ike.v1.child import ChildState
from core.ike.v1.constants import ExchangeType
from core.ike.v1.sa import REPLACE_WAIT
from tests.ike.v1.pair import Pair, Side, mirror, policy
from tests.ike.v1.test_engine_rekey_failures import _header, assert_one_pair, live_children


def _lose_the_first_rekeys_hash3(pair: Pair) -> list[tuple[Side, int, bytes]]:
    """Drop every copy of HASH(3) of A's first quick mode rekey."""
    first: list[tuple[Side, int, bytes]] = []

    def drop(sender: Side, data: bytes) -> bool:
        exchange, message_id = _header(data)
        if exchange != ExchangeType.QUICK:
            return False
        if not first:
            if sender is pair.a and message_id:
                first.append((sender, message_id, data))
            return False
        rekeyer, rekey_id, message_1 = first[0]
        return sender is rekeyer and message_id == rekey_id and data != message_1

    pair.drop = drop
    return first


def test_lost_hash3_with_a_passive_responder_is_renegotiated_by_the_initiator() -> None:
    p = policy(dpd_interval=0, child_lifetime=600)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    first = _lose_the_first_rekeys_hash3(pair)
    pair.advance(1200)
    assert first
    assert "quick mode not confirmed" in [e.reason for e in pair.b.of(ChildSaDeleted)]
    assert "deleted by peer" in [e.reason for e in pair.a.of(ChildSaDeleted)]
    assert len(live_children(pair.a)) == 1 and len(live_children(pair.b)) == 1
    assert_one_pair(pair)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)


def test_responder_keeps_the_old_sa_when_its_successor_is_not_confirmed() -> None:
    """A retires the old pair late, so B still holds it when B drops the unconfirmed
    successor: the old one carries the traffic again instead of staying REKEYED."""
    p = policy(dpd_interval=0, child_lifetime=2000,
               timing=Timing(delete_old_child_after=1000.0))
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None
    (old,) = sa_b.children
    _lose_the_first_rekeys_hash3(pair)
    while "quick mode not confirmed" not in [e.reason for e in pair.b.of(ChildSaDeleted)]:
        assert pair.now < 4000
        pair.advance(1)
    assert old in sa_b.children and old.state == ChildState.INSTALLED


def test_peer_deleting_the_only_ipsec_sa_gets_a_new_one_after_the_wait() -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None
    (child,) = sa_b.children
    sa_b.delete_child(child, "test: B deletes it", pair.now)
    pair.b.endpoint._collect(sa_b, pair.now)  # hand the DELETE over, as after any event
    pair.deliver()
    assert live_children(pair.a) == set()
    pair.advance(REPLACE_WAIT + 5)
    assert len(live_children(pair.a)) == 1
    assert_one_pair(pair)
