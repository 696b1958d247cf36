"""A Child SA expiring (its rekeys all refused) while the IKE SA is rekeyed: the DELETE of
the expired SA and its replacement move to the successor IKE SA with the children, so the
tunnel comes back instead of keeping an expired SA until the IKE SA's lifetime ends."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.ike.constants import NotifyType
from core.ike.errors import NoProposalChosen
from core.ike.events import IkeSaRekeyed
from core.ike.v2.message import Message
from core.ike.v2.sa import IkeSa
from core.ike.v2.tasks import child_create
from core.ike.v2.tasks.common import Payloads
from core.ike.v2.tasks.dpd import Dpd
from tests.ike.v2.pair import B_ADDR, Pair, mirror, policy
from tests.ike.v2.test_engine_lifecycle import live_children


def _b_refuses_child_rekeys(monkeypatch: pytest.MonkeyPatch) -> None:
    respond_original = child_create.respond_create_child

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if message.notify(NotifyType.REKEY_SA) is not None and sa.local.host == B_ADDR:
            raise NoProposalChosen("refused for the test")
        return respond_original(sa, message, now)

    monkeypatch.setattr(child_create, "respond_create_child", respond)


def _pair_at_child_expiry(monkeypatch: pytest.MonkeyPatch) -> tuple[Pair, IkeSa]:
    p = replace(policy(), child_lifetime=600.0, ike_lifetime=86400.0)
    pair = Pair(p, replace(mirror(p), child_lifetime=6000.0))
    pair.connect()
    _b_refuses_child_rekeys(monkeypatch)
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None
    (child,) = sa.children
    pair.advance(child.expire_at - pair.now - 0.01)
    pair.now = child.expire_at
    return pair, sa


def _exchange_crossing(pair: Pair) -> None:
    """Deliver what B sent (its IKE rekey) before what A sent (its Child SA DELETE)."""
    from_b = pair.b.endpoint.pop_datagrams()
    from_a = pair.a.endpoint.pop_datagrams()
    for d in from_b:
        pair.a.endpoint.receive(d.data, d.remote, d.local, pair.now)
    for d in from_a:
        pair.b.endpoint.receive(d.data, d.remote, d.local, pair.now)


def _assert_tunnel_back(pair: Pair) -> None:
    assert pair.a.of(IkeSaRekeyed)
    current = pair.a.endpoint.current_sa("peer")
    assert current is not None
    assert any(c.usable for c in current.children)
    assert all(not c.expired for c in current.children)
    assert len(live_children(pair.a)) == 1 and len(live_children(pair.b)) == 1


def test_delete_in_flight_when_the_peer_rekeys_the_ike_sa(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pair, _ = _pair_at_child_expiry(monkeypatch)
    pair.a.endpoint.handle_timer(pair.now)  # expiry: DELETE in flight, replacement queued
    assert pair.b.endpoint.rekey("peer", pair.now, ike=True)
    _exchange_crossing(pair)
    pair.deliver()
    pair.advance(600)
    _assert_tunnel_back(pair)


def test_queued_behind_dpd_when_the_peer_rekeys_the_ike_sa(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pair, sa = _pair_at_child_expiry(monkeypatch)
    sa.queue(Dpd(), first=True)
    pair.a.endpoint.handle_timer(pair.now)  # DPD in flight; DELETE and replacement queued
    assert isinstance(sa.active_task(), Dpd)
    assert pair.b.endpoint.rekey("peer", pair.now, ike=True)
    _exchange_crossing(pair)
    pair.deliver()
    pair.advance(600)
    _assert_tunnel_back(pair)


def test_queued_behind_our_own_ike_rekey(monkeypatch: pytest.MonkeyPatch) -> None:
    pair, _ = _pair_at_child_expiry(monkeypatch)
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)  # in flight
    pair.a.endpoint.handle_timer(pair.now)  # expiry queues DELETE + replacement behind it
    pair.deliver()
    pair.advance(600)
    _assert_tunnel_back(pair)

