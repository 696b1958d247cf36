"""Failed rekeys (RFC 7296 2.8, 2.25): the old SA is rekeyed again before its hard expiry,
and an SA that expires anyway is replaced, so the tunnel comes back by itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from core.ike.constants import DhGroup, NotifyType
from core.ike.errors import (
    ChildSaNotFound,
    IkeError,
    InvalidKePayload,
    NoProposalChosen,
    TemporaryFailure,
)
from core.ike.events import ChildSaDeleted, ChildSaInstalled, DownReason, IkeSaDown, IkeSaRekeyed
from core.ike.v2.message import Message
from core.ike.v2.sa import IkeSa
from core.ike.v2.tasks import child_create, ike_rekey
from core.ike.v2.tasks.child_create import ChildCreate
from core.ike.v2.tasks.common import Payloads
from tests.ike.v2.pair import B_ADDR, Pair, mirror, policy
from tests.ike.v2.test_engine_lifecycle import assert_consistent, live_children, up_pair

Refusal = Callable[[], IkeError]


def a_rekeys(*, child_lifetime: float = 28800.0, ike_lifetime: float = 86400.0) -> Pair:
    """An established pair whose lifetimes run out on A first: A does the rekeying."""
    p = replace(policy(), child_lifetime=child_lifetime, ike_lifetime=ike_lifetime)
    pair = Pair(p, replace(mirror(p), child_lifetime=child_lifetime * 10,
                           ike_lifetime=ike_lifetime * 10))
    pair.connect()
    assert live_children(pair.a)
    return pair


def refuse_child_rekeys(monkeypatch: pytest.MonkeyPatch, refusal: Refusal, times: int,
                        *, new_too: bool = False) -> list[float]:
    """B refuses A's next `times` Child SA rekeys (and new Child SAs with `new_too`);
    the list returned fills with the times of the refusals."""
    responder = child_create.respond_create_child
    refused: list[float] = []

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        rekey = message.notify(NotifyType.REKEY_SA) is not None
        if sa.local.host == B_ADDR and len(refused) < times and (rekey or new_too):
            refused.append(now)
            raise refusal()
        return responder(sa, message, now)

    monkeypatch.setattr(child_create, "respond_create_child", respond)
    return refused


def expired_deletes(pair: Pair) -> list[ChildSaDeleted]:
    return [e for e in pair.a.of(ChildSaDeleted) if e.reason == "lifetime expired"]


@pytest.mark.parametrize("refusal", [
    lambda: NoProposalChosen("test: B refuses"),
    lambda: TemporaryFailure("test: B is busy"),
    lambda: InvalidKePayload(DhGroup.MODP_2048),  # a group A does not offer
], ids=["no-proposal", "temporary-failure", "invalid-ke-unknown-group"])
def test_refused_child_rekey_is_retried_before_the_hard_expiry(
    monkeypatch: pytest.MonkeyPatch, refusal: Refusal,
) -> None:
    pair = a_rekeys(child_lifetime=600.0)
    refused = refuse_child_rekeys(monkeypatch, refusal, times=3)
    pair.advance(650)
    assert len(refused) == 3
    assert max(refused) - min(refused) < 60  # a few seconds apart, not minutes
    assert expired_deletes(pair) == []  # the old SA never ran out
    assert len(pair.a.of(ChildSaInstalled)) == 2
    assert_consistent(pair)


def test_invalid_ke_rekey_is_retried_at_once_with_the_group_the_peer_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = up_pair(esp="aes256gcm16-modp2048-ecp256")
    refused = refuse_child_rekeys(monkeypatch, lambda: InvalidKePayload(DhGroup.ECP_256),
                                  times=1)
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert len(refused) == 1
    assert len(pair.a.of(ChildSaInstalled)) == 2
    assert_consistent(pair)


def test_child_rekey_refused_until_the_hard_expiry_is_replaced_by_a_new_child_sa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(child_lifetime=600.0)
    (old,) = live_children(pair.a)
    refused = refuse_child_rekeys(monkeypatch, lambda: NoProposalChosen("test"), times=10**6)
    pair.advance(601)
    assert 3 <= len(refused) <= 30  # bounded backoff, every try before the expiry
    assert max(refused) < 1000.0 + 600.0
    assert len(expired_deletes(pair)) == 1
    assert old not in live_children(pair.a)
    assert_consistent(pair)  # a fresh Child SA (no REKEY_SA) took its place
    assert not pair.a.of(IkeSaDown)


def test_peer_refusing_the_replacement_gets_the_tunnel_re_established(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B refuses every CREATE_CHILD_SA: at the hard expiry A has no Child SA and cannot
    get one on this IKE SA, so it closes it and starts again (IKE_AUTH carries the
    Child SA)."""
    pair = a_rekeys(child_lifetime=600.0, ike_lifetime=7200.0)
    refuse_child_rekeys(monkeypatch, lambda: NoProposalChosen("test"), times=10**6,
                        new_too=True)
    pair.advance(640)
    downs = pair.a.of(IkeSaDown)
    assert [d.reason for d in downs] == [DownReason.NO_PROPOSAL]
    assert_consistent(pair)
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.is_established


def test_child_sa_not_found_creates_a_new_child_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = up_pair()
    refused = refuse_child_rekeys(monkeypatch, lambda: ChildSaNotFound("test: lost it"),
                                  times=1)
    (old,) = live_children(pair.a)
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert len(refused) == 1
    assert old not in live_children(pair.a)
    assert len(pair.a.of(ChildSaInstalled)) == 2


def test_child_rekey_without_an_answer_re_establishes_the_peer() -> None:
    pair = a_rekeys(child_lifetime=600.0)
    b_silent = [False]
    pair.drop = lambda side, data: side is pair.b and b_silent[0]
    assert pair.a.endpoint.rekey("peer", pair.now)
    b_silent[0] = True
    pair.deliver()
    pair.advance(200)  # every retransmission unanswered (RFC 7296 2.4)
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.TIMEOUT
    b_silent[0] = False
    pair.advance(60)
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.is_established and len(sa.children) == 1


def test_queued_child_rekey_moves_to_the_successor_of_a_rekeyed_ike_sa() -> None:
    pair = up_pair()
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)  # now in flight
    (child,) = sa.children
    child.rekey_at = None  # as the lifetime timer does when it queues the rekey
    sa.queue(ChildCreate(rekey_of=child))
    pair.deliver()
    pair.advance(1)
    assert pair.a.of(IkeSaRekeyed)
    assert len(pair.a.of(ChildSaInstalled)) == 2  # the successor rekeyed it
    assert_consistent(pair)


# -- the IKE SA -------------------------------------------------------------------------
def refuse_ike_rekeys(monkeypatch: pytest.MonkeyPatch, times: int) -> list[float]:
    responder = ike_rekey.respond_ike_rekey
    refused: list[float] = []

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if sa.local.host == B_ADDR and len(refused) < times:
            refused.append(now)
            raise NoProposalChosen("test: B refuses the IKE rekey")
        return responder(sa, message, now)

    monkeypatch.setattr(ike_rekey, "respond_ike_rekey", respond)
    return refused


def test_refused_ike_rekey_is_retried_before_the_hard_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(ike_lifetime=100.0, child_lifetime=5000.0)
    refused = refuse_ike_rekeys(monkeypatch, times=2)
    pair.advance(100)
    assert len(refused) == 2
    assert pair.a.of(IkeSaRekeyed)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
    assert_consistent(pair)


def test_ike_sa_refused_every_rekey_is_re_established_at_its_hard_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(ike_lifetime=300.0, child_lifetime=5000.0)
    refused = refuse_ike_rekeys(monkeypatch, times=10**6)
    pair.advance(301)
    assert 2 <= len(refused) <= 30 and max(refused) < 1300.0
    assert [d.reason for d in pair.a.of(IkeSaDown)] == [DownReason.EXPIRED]
    pair.advance(60)
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.is_established and len(sa.children) == 1
    assert_consistent(pair)
