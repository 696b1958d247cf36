"""IKEv1 rekeys that fail: the old SA is rekeyed again before it expires, and what expires
anyway is replaced, so the tunnel comes back by itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.ike.events import ChildSaDeleted, ChildSaInstalled, DownReason, IkeSaDown, IkeSaRekeyed
from core.ike.policy import PeerPolicy
from core.ike.v1 import proposals, quick
from core.ike.v1.constants import ExchangeType
from core.ike.v1.endpoint import Ikev1Endpoint
from core.ike.v1.errors import NoProposalChosen
from core.ike.v1.message import peek_header
from core.ike.v1.sa import IsakmpSa
from tests.ike.v1.pair import Pair, Side, mirror, policy


def a_rekeys(*, child_lifetime: float = 28800.0, ike_lifetime: float = 86400.0) -> Pair:
    """An established pair where A does the rekeying (B is passive: a responder's shorter
    lifetime would bind both sides in IKEv1)."""
    p = policy(dpd_interval=0, child_lifetime=child_lifetime, ike_lifetime=ike_lifetime)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    assert live_children(pair.a)
    return pair


def live_children(side: Side) -> set[int]:
    spis: set[int] = set()
    for event in side.events:
        if isinstance(event, ChildSaInstalled):
            spis.add(event.info.spi_in)
        elif isinstance(event, ChildSaDeleted):
            spis.discard(event.spi_in)
    return spis


def expired(side: Side) -> list[ChildSaDeleted]:
    return [e for e in side.of(ChildSaDeleted) if e.reason == "lifetime expired"]


def assert_one_pair(pair: Pair) -> None:
    sa_a, sa_b = (side.endpoint.current_sa("peer") for side in (pair.a, pair.b))
    assert sa_a is not None and sa_b is not None
    assert [(c.spi_in, c.spi_out) for c in sa_a.children] == \
        [(c.spi_out, c.spi_in) for c in sa_b.children]
    assert len(sa_a.children) == 1


def _header(data: bytes) -> tuple[int, int]:
    header = peek_header(data[4:] if data[:4] == bytes(4) else data)
    return header.exchange, header.message_id


def refuse_quick_modes(monkeypatch: pytest.MonkeyPatch, pair: Pair,
                       until: Callable[[int, float], bool]) -> list[float]:
    """B (the only responder of quick modes here) answers them with NO-PROPOSAL-CHOSEN, an
    informational notify, while `until(refusals so far, now)`; returns their times."""
    selector = proposals.select_esp
    refused: list[float] = []

    def select(*args: Any, **kwargs: Any) -> Any:
        if until(len(refused), pair.now):
            refused.append(pair.now)
            raise NoProposalChosen("test: B refuses the quick mode")
        return selector(*args, **kwargs)

    monkeypatch.setattr(quick, "select_esp", select)
    return refused


# -- quick mode ------------------------------------------------------------------------------
def test_refused_quick_mode_rekey_is_retried_before_the_ipsec_sa_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(child_lifetime=600)
    refused = refuse_quick_modes(monkeypatch, pair, lambda n, now: n < 3)
    pair.advance(650)
    assert len(refused) == 3 and max(refused) - min(refused) < 60
    assert expired(pair.a) == []
    assert_one_pair(pair)


def test_unanswered_quick_mode_rekey_is_retried_before_the_ipsec_sa_expires() -> None:
    pair = a_rekeys(child_lifetime=2000)
    blocked: list[int] = []

    def drop(sender: Side, data: bytes) -> bool:
        exchange, message_id = _header(data)
        if exchange != ExchangeType.QUICK:
            return False
        if sender is pair.a and not blocked:
            blocked.append(message_id)  # the first rekey: B's answers to it get lost
        return sender is pair.b and message_id in blocked

    pair.drop = drop
    pair.advance(2050)
    assert blocked
    assert expired(pair.a) == []
    assert not pair.a.of(IkeSaDown)
    assert_one_pair(pair)


def test_quick_mode_rekey_refused_until_expiry_is_replaced_by_a_new_ipsec_sa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(child_lifetime=600)
    expiry = pair.now + 600
    refused = refuse_quick_modes(monkeypatch, pair, lambda n, now: now < expiry)
    pair.advance(650)
    assert 3 <= len(refused) <= 30
    assert len(expired(pair.a)) == 1
    assert not pair.a.of(IkeSaDown)
    assert_one_pair(pair)


# -- phase 1 ---------------------------------------------------------------------------------
def refuse_phase1(monkeypatch: pytest.MonkeyPatch, endpoint: Ikev1Endpoint,
                  refusing: list[bool]) -> list[int]:
    """B refuses new phase 1s (NO-PROPOSAL-CHOSEN, no peer for it) while `refusing[0]`."""
    candidates = endpoint._candidates
    refused: list[int] = []

    def pick(local: Any, remote: Any) -> tuple[PeerPolicy, ...]:
        if refusing[0]:
            refused.append(1)
            return ()
        return candidates(local, remote)

    monkeypatch.setattr(endpoint, "_candidates", pick)
    return refused


def test_refused_phase1_replacement_is_retried_with_a_backoff_before_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(ike_lifetime=1000, child_lifetime=50000)
    refusing = [True]
    refused = refuse_phase1(monkeypatch, pair.b.endpoint, refusing)
    pair.advance(1001)
    assert 2 <= len(refused) <= 30  # a growing backoff, not one try a second
    assert [d.reason for d in pair.a.of(IkeSaDown) if d.reason != DownReason.NO_PROPOSAL] \
        == [DownReason.EXPIRED]
    refusing[0] = False
    pair.advance(120)
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.is_established
    assert_one_pair(pair)


def test_phase1_replacement_refused_twice_still_replaces_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = a_rekeys(ike_lifetime=1000, child_lifetime=50000)
    refusing = [True]
    refused = refuse_phase1(monkeypatch, pair.b.endpoint, refusing)
    original = pair.a.endpoint.current_sa("peer")
    while len(refused) < 2:
        pair.advance(1)
    refusing[0] = False
    pair.advance(200)
    assert pair.a.of(IkeSaRekeyed)
    assert DownReason.EXPIRED not in [d.reason for d in pair.a.of(IkeSaDown)]
    current = pair.a.endpoint.current_sa("peer")
    assert isinstance(current, IsakmpSa) and current is not original
    assert_one_pair(pair)


def test_unconfirmed_rekey_leaving_no_ipsec_sa_is_renegotiated_by_the_responder() -> None:
    """B rekeys and deletes the old pair; every copy of its HASH(3) is lost, so A drops
    the new pair unconfirmed (telling B) and holds none: A negotiates a new one."""
    p = policy(dpd_interval=0, child_lifetime=600)
    pair = Pair(p, mirror(p, child_lifetime=600))
    pair.connect()
    first: list[tuple[Side, int, bytes]] = []

    def drop(sender: Side, data: bytes) -> bool:
        exchange, message_id = _header(data)
        if exchange != ExchangeType.QUICK:
            return False
        if not first:
            first.append((sender, message_id, data))  # the first rekey's message 1
            return False
        rekeyer, rekey_id, message_1 = first[0]
        return sender is rekeyer and message_id == rekey_id and data != message_1  # HASH(3)

    pair.drop = drop
    pair.advance(700)
    assert first
    assert "quick mode not confirmed" in [e.reason for e in pair.a.of(ChildSaDeleted)] + \
        [e.reason for e in pair.b.of(ChildSaDeleted)]
    assert_one_pair(pair)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
