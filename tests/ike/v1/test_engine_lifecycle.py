"""IKEv1 over time: DPD, rekeying (quick mode and phase 1), loss, duplicates, passive mode."""

from __future__ import annotations

from typing import Any

import pytest

from core.ike.events import (
    Address,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaOutboundReady,
    DownReason,
    DpdAnswered,
    DpdProbeSent,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    PeerDead,
)
from core.ike.v1 import natt
from core.ike.v1.constants import ExchangeType
from core.ike.v1.endpoint import REPLACED_SA_GRACE
from core.ike.v1.message import peek_header
from core.ike.v1.sa import SaState
from tests.ike.v1.pair import A_ADDR, B_ADDR, Pair, Side, mirror, policy


def _exchange(data: bytes) -> int:
    return peek_header(data[4:] if data[:4] == bytes(4) else data).exchange


def _drop_nth(pair: Pair, side: Side, exchange: ExchangeType, index: int) -> list[bytes]:
    """Drop the `index`-th message of `exchange` that `side` sends (once)."""
    seen: list[bytes] = []
    dropped: list[bytes] = []

    def drop(sender: Side, data: bytes) -> bool:
        if sender is not side or len(data) < 28 or _exchange(data) != exchange:
            return False
        seen.append(data)
        if len(seen) == index + 1 and not dropped:
            dropped.append(data)
            return True
        return False

    pair.drop = drop
    return dropped


def _up(pair: Pair) -> None:
    assert pair.a.of(IkeSaUp) and pair.b.of(IkeSaUp)
    assert pair.a.of(ChildSaInstalled) and pair.b.of(ChildSaInstalled)
    assert pair.b.of(ChildSaOutboundReady)


# -- DPD -------------------------------------------------------------------------------------
def test_idle_peer_is_probed_and_answers() -> None:
    p = policy(dpd_interval=10)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    pair.advance(35)
    assert len(pair.a.of(DpdProbeSent)) == 3 and len(pair.a.of(DpdAnswered)) == 3
    assert all(e.attempt == 1 and e.of == 6 for e in pair.a.of(DpdProbeSent))
    assert not pair.a.of(PeerDead) and not pair.b.of(DpdProbeSent)  # B is passive
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.dpd_probes == 0


def test_traffic_from_the_peer_saves_the_probes() -> None:
    p = policy(dpd_interval=10)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    for _ in range(8):
        pair.a.endpoint.note_inbound_traffic("peer", pair.now)
        pair.advance(5)
    assert not pair.a.of(DpdProbeSent)


def test_dead_peer_is_detected_and_reestablished() -> None:
    p = policy(dpd_interval=10, dpd_retries=2)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    pair.drop = lambda side, data: side is pair.b
    pair.advance(41)
    assert [e.attempt for e in pair.a.of(DpdProbeSent)] == [1, 2, 3]
    dead = pair.a.of(PeerDead)
    assert len(dead) == 1 and dead[0].silence == pytest.approx(40, abs=1)
    assert pair.a.of(IkeSaDown)[-1].reason == DownReason.PEER_DEAD
    assert pair.a.of(ChildSaDeleted)[-1].reason == DownReason.PEER_DEAD.value
    # The peer comes back: the endpoint re-establishes with backoff.
    pair.drop = lambda side, data: False
    pair.advance(5)
    assert len(pair.a.of(IkeSaUp)) == 2 and len(pair.a.of(ChildSaInstalled)) == 2


def test_peer_without_dpd_support_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_vendor_ids(*args: Any) -> list[tuple[int, Any]]:
        return []

    p = policy(dpd_interval=10)
    pair = Pair(p, mirror(p))
    monkeypatch.setattr(natt, "our_vendor_ids", no_vendor_ids)
    monkeypatch.setattr(natt, "reply_vendor_ids", no_vendor_ids)
    pair.connect()
    pair.advance(60)
    assert not pair.a.of(DpdProbeSent) and pair.a.of(IkeSaUp)


# -- passive mode ----------------------------------------------------------------------------
def test_passive_side_never_initiates_anything() -> None:
    p = policy(passive=True, dpd_interval=5, child_lifetime=100, ike_lifetime=300)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    pair.advance(1000)
    assert not pair.a.sent and not pair.b.sent


def test_passive_responder_lets_the_peer_drive() -> None:
    active = policy(local=B_ADDR, remote=A_ADDR, local_id=B_ADDR, remote_id=A_ADDR,
                    dpd_interval=0, child_lifetime=100, ike_lifetime=1000)
    passive = policy(passive=True, dpd_interval=5, child_lifetime=100, ike_lifetime=1000)
    pair = Pair(passive, active)
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    pair.deliver()
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.rekey_at is None and sa.children[0].rekey_at is None
    pair.advance(250)
    assert len(pair.a.of(ChildSaInstalled)) >= 3  # B rekeyed; A only answered
    assert not pair.a.of(DpdProbeSent)
    headers_a = [peek_header(d.data) for d in pair.a.sent]
    headers_b = [peek_header(d.data) for d in pair.b.sent]
    quick_b = {h.message_id for h in headers_b if h.exchange == ExchangeType.QUICK}
    assert all(h.message_id in quick_b for h in headers_a if h.exchange == ExchangeType.QUICK)
    assert all(h.cky_r != bytes(8) for h in headers_a)  # never a first phase 1 message


# -- quick mode rekey ------------------------------------------------------------------------
def _check_make_before_break(side: Side, old_spi: int) -> None:
    events = side.events
    new = next(e for e in events if isinstance(e, ChildSaInstalled)
               and e.info.spi_in != old_spi)
    deleted = next(e for e in events if isinstance(e, ChildSaDeleted) and e.spi_in == old_spi)
    assert events.index(new) < events.index(deleted)
    if not new.outbound:
        ready = next(e for e in events if isinstance(e, ChildSaOutboundReady)
                     and e.spi_in == new.info.spi_in)
        assert events.index(ready) < events.index(deleted)


def test_quick_mode_rekey_before_the_soft_lifetime() -> None:
    p = policy(child_lifetime=100, dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    first_a = pair.a.of(ChildSaInstalled)[0].info
    pair.advance(95)
    installs_a, installs_b = pair.a.of(ChildSaInstalled), pair.b.of(ChildSaInstalled)
    assert len(installs_a) == 2 and len(installs_b) == 2
    new_a, new_b = installs_a[1].info, installs_b[1].info
    assert new_a.keys.encr_out == new_b.keys.encr_in and new_a.spi_in == new_b.spi_out
    assert new_a.established_at < first_a.expire_at
    _check_make_before_break(pair.a, first_a.spi_in)
    _check_make_before_break(pair.b, first_a.spi_out)
    for side in (pair.a, pair.b):
        sa = side.endpoint.current_sa("peer")
        assert sa is not None and len(sa.children) == 1
    # Replacing marks the old SA on the side that rekeyed.
    rekeyer = pair.a if installs_a[1].outbound else pair.b
    assert rekeyer.of(ChildSaInstalled)[1].replaces_spi_in is not None


def test_explicit_quick_mode_rekey() -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    assert not pair.a.endpoint.rekey("peer", pair.now)
    pair.connect()
    old = pair.a.of(ChildSaInstalled)[0].info
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    pair.advance(2)  # the replaced pair lingers for Timing.delete_old_child_after
    new = pair.a.of(ChildSaInstalled)[1]
    assert new.outbound and new.replaces_spi_in == old.spi_in
    assert [e.spi_in for e in pair.a.of(ChildSaDeleted)] == [old.spi_in]
    assert [e.spi_out for e in pair.b.of(ChildSaDeleted)] == [old.spi_in]
    assert pair.b.of(ChildSaInstalled)[1].replaces_spi_in == old.spi_out


def test_expired_child_without_rekey_is_deleted() -> None:
    p = policy(child_lifetime=100, dpd_interval=0)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    pair.drop = lambda side, data: side is pair.b  # B never answers the rekey
    pair.advance(101)
    assert [e.reason for e in pair.a.of(ChildSaDeleted)] == ["lifetime expired"]


# -- phase 1 rekey ---------------------------------------------------------------------------
def test_phase1_is_replaced_before_it_expires_and_keeps_the_ipsec_sas() -> None:
    p = policy(ike_lifetime=1000, dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    old_spi = pair.a.of(IkeSaUp)[0].info.spi_i
    child = pair.a.of(ChildSaInstalled)[0].info
    pair.advance(960)
    rekeyed_a, rekeyed_b = pair.a.of(IkeSaRekeyed), pair.b.of(IkeSaRekeyed)
    assert len(rekeyed_a) == 1 and len(rekeyed_b) == 1
    assert rekeyed_a[0].old.spi_i == old_spi and rekeyed_a[0].new.spi_i != old_spi
    assert not pair.a.of(ChildSaDeleted) and not pair.b.of(ChildSaDeleted)
    assert not [e for e in pair.a.of(IkeSaDown) + pair.b.of(IkeSaDown)]  # REPLACED is quiet
    for side in (pair.a, pair.b):
        sa = side.endpoint.current_sa("peer")
        assert sa is not None and sa.state == SaState.ESTABLISHED
        assert sa.info().spi_i == rekeyed_a[0].new.spi_i
        assert [c.spi_in for c in sa.children] in ([child.spi_in], [child.spi_out])
        assert len(side.endpoint._sas) == 1
    assert len(pair.a.of(IkeSaUp)) == 1


def test_explicit_phase1_rekey_then_quick_mode_rekey_on_the_new_sa() -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    assert pair.b.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    assert len(pair.a.of(IkeSaRekeyed)) == 1 and len(pair.b.of(IkeSaRekeyed)) == 1
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    pair.advance(2)  # the replaced pair lingers for Timing.delete_old_child_after
    assert len(pair.a.of(ChildSaInstalled)) == 2 and len(pair.b.of(ChildSaDeleted)) == 1
    assert len(pair.a.of(ChildSaDeleted)) == 1


# -- loss, duplicates, timeouts ---------------------------------------------------------------
@pytest.mark.parametrize(("sender", "exchange", "index"), [
    ("a", ExchangeType.MAIN, 0), ("b", ExchangeType.MAIN, 0), ("a", ExchangeType.MAIN, 1),
    ("b", ExchangeType.MAIN, 1), ("a", ExchangeType.MAIN, 2), ("b", ExchangeType.MAIN, 2),
    ("a", ExchangeType.QUICK, 0), ("b", ExchangeType.QUICK, 0), ("a", ExchangeType.QUICK, 1),
])
def test_any_lost_message_is_recovered(sender: str, exchange: ExchangeType, index: int) -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    dropped = _drop_nth(pair, pair.a if sender == "a" else pair.b, exchange, index)
    pair.connect()
    pair.advance(30)
    assert dropped
    _up(pair)
    assert len(pair.a.of(IkeSaUp)) == 1 and len(pair.a.of(ChildSaInstalled)) == 1
    assert len(pair.b.of(ChildSaInstalled)) == 1
    resent = [d.data for _n, d in pair.wire if d.data == dropped[0]]
    assert len(resent) == 2  # the very same bytes went out again


@pytest.mark.parametrize(("sender", "index"), [("a", 0), ("b", 0), ("a", 1)])
def test_lost_aggressive_mode_messages_are_recovered(sender: str, index: int) -> None:
    p = policy(exchange_mode="aggressive", dpd_interval=0)
    pair = Pair(p, mirror(p))
    dropped = _drop_nth(pair, pair.a if sender == "a" else pair.b, ExchangeType.AGGRESSIVE,
                        index)
    pair.connect()
    pair.advance(30)
    assert dropped
    _up(pair)
    assert len(pair.b.of(IkeSaUp)) == 1 and len(pair.b.of(ChildSaInstalled)) == 1


def test_duplicated_messages_get_the_cached_answers() -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.duplicate = True
    pair.connect()
    _up(pair)
    assert len(pair.a.of(ChildSaInstalled)) == 1 and len(pair.b.of(ChildSaInstalled)) == 1
    responses = [d.data for d in pair.b.sent]
    # Every answer of B went out twice, byte for byte.
    assert len(responses) == 8 and all(responses[i] == responses[i + 1]
                                       for i in range(0, 8, 2))


def test_no_answer_gives_up_after_the_retransmit_schedule() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.drop = lambda side, data: True
    pair.connect()
    pair.advance(200)
    first_sa = [d for d in pair.a.sent if d.data == pair.a.sent[0].data]
    assert len(first_sa) == 6  # first try plus five retransmissions
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.TIMEOUT
    assert len(pair.a.sent) > 6  # then re-established (with backoff)


def test_half_open_responder_times_out() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.drop = lambda side, data: side is pair.a and len(pair.a.sent) > 1
    pair.connect()
    assert pair.b.endpoint.half_open_count == 1
    pair.advance(31)
    assert pair.b.endpoint.half_open_count == 0
    assert pair.b.of(IkeSaDown)[-1].reason == DownReason.TIMEOUT


def test_simultaneous_connect_converges_on_one_isakmp_sa() -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    pair.deliver()
    pair.advance(10)
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert sa_a.info().spi_i == sa_b.info().spi_i
    assert len(pair.a.endpoint._sas) == 1 and len(pair.b.endpoint._sas) == 1
    assert sa_a.children and len(sa_a.children) == len(sa_b.children)
    ins = {c.spi_in for c in sa_a.children}
    assert ins == {c.spi_out for c in sa_b.children}


def test_initial_contact_replaces_stale_sas_after_a_peer_restart() -> None:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    # A restarts: a fresh endpoint with the same policy connects again.
    from core.crypto.random import SeededRandomSource
    from core.ike.v1.endpoint import Ikev1Endpoint

    pair.a.endpoint = Ikev1Endpoint([p], SeededRandomSource(99))
    pair.connect()
    assert len(pair.b.of(IkeSaUp)) == 2 and not pair.b.of(IkeSaRekeyed)
    assert len(pair.b.of(ChildSaDeleted)) == 1  # the stale IPsec SA
    assert len(pair.b.endpoint._sas) == 1


def test_replaced_sa_whose_delete_was_lost_expires_quietly() -> None:
    p = policy(ike_lifetime=1000, dpd_interval=0)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    pair.drop = lambda side, data: side is pair.a and _exchange(data) == \
        ExchangeType.INFORMATIONAL
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    assert len(pair.b.endpoint._sas) == 2  # the old one waits for a DELETE that never comes
    pair.advance(1001)
    assert len(pair.b.endpoint._sas) == 1
    assert not pair.b.of(ChildSaDeleted) and not pair.b.of(IkeSaDown)
    sa = pair.b.endpoint.current_sa("peer")
    assert sa is not None and len(sa.children) == 1


# -- who deletes a replaced ISAKMP SA (interop with strongSwan) -------------------------------
def _informationals(pair: Pair, sender: str, cookies: bytes, after: int) -> int:
    """How many INFORMATIONAL messages `sender` sent on the SA with `cookies`, from wire
    position `after` on."""
    count = 0
    for name, datagram in pair.wire[after:]:
        data = datagram.data[4:] if datagram.data[:4] == bytes(4) else datagram.data
        if name == sender and len(data) >= 28 and data[:16] == cookies and \
                _exchange(data) == ExchangeType.INFORMATIONAL:
            count += 1
    return count


def test_the_responder_deletes_what_the_peer_replaced_after_a_grace() -> None:
    """strongSwan replaces its ISAKMP SA by a new phase 1 and leaves the old one to the
    responder, which deletes it 10 s later: so must we, DELETE included."""
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    old_a = pair.a.endpoint.current_sa("peer")
    assert old_a is not None
    old_cookies = old_a.cookies
    # A behaves like charon: no DELETE for what it replaced.
    pair.drop = lambda side, data: side is pair.a and _exchange(data) == \
        ExchangeType.INFORMATIONAL
    mark = len(pair.wire)
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    assert len(pair.b.endpoint._sas) == 2
    pair.drop = lambda side, data: False
    pair.advance(REPLACED_SA_GRACE - 1)
    assert len(pair.b.endpoint._sas) == 2 and _informationals(pair, "b", old_cookies, mark) == 0
    pair.advance(2)
    assert len(pair.b.endpoint._sas) == 1
    assert _informationals(pair, "b", old_cookies, mark) == 1  # B's DELETE
    assert not pair.a.of(ChildSaDeleted) and not pair.b.of(ChildSaDeleted)
    for side in (pair.a, pair.b):
        sa = side.endpoint.current_sa("peer")
        assert sa is not None and sa.cookies != old_cookies and len(sa.children) == 1


def test_aggressive_mode_replacement_sends_no_delete_behind_its_last_message() -> None:
    """Our last aggressive mode message may reach the peer after the next one; a DELETE
    of the old ISAKMP SA sent at once could be handled first there (charon then drops the
    IPsec SAs with it).  The old SA goes after the grace instead."""
    a = policy(local_id="fqdn:a.example", remote_id="fqdn:b.example",
               exchange_mode="aggressive", dpd_interval=0)
    b = policy(local=B_ADDR, remote=A_ADDR, local_id="fqdn:b.example",
               remote_id="fqdn:a.example", dpd_interval=0)
    pair = Pair(a, b)
    pair.connect()
    old = pair.a.endpoint.current_sa("peer")
    assert old is not None and old.aggressive
    old_cookies = old.cookies
    mark = len(pair.wire)
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    assert len(pair.a.of(IkeSaRekeyed)) == 1 and len(pair.b.of(IkeSaRekeyed)) == 1
    assert _informationals(pair, "a", old_cookies, mark) == 0
    assert len(pair.a.endpoint._sas) == 2 and len(pair.b.endpoint._sas) == 2
    pair.advance(REPLACED_SA_GRACE + 1)
    assert len(pair.a.endpoint._sas) == 1 and len(pair.b.endpoint._sas) == 1
    assert not pair.a.of(ChildSaDeleted) and not pair.b.of(ChildSaDeleted)
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None and sa_a.cookies == sa_b.cookies
    assert [c.spi_in for c in sa_a.children] == [c.spi_out for c in sa_b.children]


def test_main_mode_replacement_deletes_the_old_sa_at_once() -> None:
    """In main mode the peer's message comes last: it holds the new SA when we delete."""
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    old = pair.a.endpoint.current_sa("peer")
    assert old is not None
    mark = len(pair.wire)
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    assert _informationals(pair, "a", old.cookies, mark) == 1
    assert len(pair.a.endpoint._sas) == 1 and len(pair.b.endpoint._sas) == 1


@pytest.mark.parametrize("seed", range(6))
def test_a_collision_whose_initial_contact_arrives_late_still_converges(seed: int) -> None:
    """Both sides start phase 1 at once; B's main mode message 5 (with INITIAL-CONTACT:
    B had no SA when it started) is lost once, so A's SA is up on both sides before B's
    retransmission arrives.  That INITIAL-CONTACT belongs to a colliding SA, not to a
    restart: the collision rule (lowest initiator cookie) must decide on both sides, or
    each keeps a different ISAKMP SA and DPD declares the peer dead (seen in CI under loss)."""
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p), seed=seed)
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    (b_own,) = list(pair.b.endpoint._sas.values())
    lost: list[bytes] = []

    def drop(side: Side, data: bytes) -> bool:
        if side is pair.b and not lost and data[:8] == b_own.cky_i and data[19] & 1:
            lost.append(data)  # B's first encrypted message of its own SA: message 5
            return True
        return False

    pair.drop = drop
    pair.deliver()
    assert lost
    pair.advance(30)
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert (sa_a.cky_i, sa_a.cky_r) == (sa_b.cky_i, sa_b.cky_r)
    ins = {c.spi_in for c in sa_a.children if c.state.value == "installed"}
    assert ins and ins == {c.spi_out for c in sa_b.children if c.state.value == "installed"}
