"""Rekeying, DPD, NAT traversal and passive mode between two in-memory endpoints."""

from __future__ import annotations

import random

import pytest

from core.ike.errors import TemporaryFailure, TsUnacceptable
from core.ike.events import (
    Address,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaOutboundReady,
    DownReason,
    DpdAnswered,
    DpdProbeSent,
    ExchangeFailed,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    LogMessage,
    PeerDead,
)
from core.ike.v2.child import ChildState
from core.ike.v2.payloads import DeletePayload
from core.ike.v2.sa import IkeSa, IkeState
from core.ike.v2.tasks import child_create, child_delete
from core.ike.v2.tasks.common import Payloads
from tests.ike.v2.pair import A_ADDR, B_ADDR, NAT_ADDR, Pair, Side, mirror, policy


def live_children(side: Side) -> set[tuple[int, int]]:
    """(spi_in, spi_out) pairs installed and not deleted, as the dataplane would hold them."""
    pairs: dict[int, int] = {}
    for event in side.events:
        if isinstance(event, ChildSaInstalled):
            pairs[event.info.spi_in] = event.info.spi_out
        elif isinstance(event, ChildSaDeleted):
            pairs.pop(event.spi_in, None)
    return set(pairs.items())


def outbound_spis(side: Side) -> list[int]:
    """Outbound SPIs in the order they were installed and still present."""
    order: list[int] = []
    spi_out_of: dict[int, int] = {}
    for event in side.events:
        if isinstance(event, ChildSaInstalled):
            spi_out_of[event.info.spi_in] = event.info.spi_out
            if event.outbound:
                order.append(event.info.spi_out)
        elif isinstance(event, ChildSaOutboundReady):
            order.append(spi_out_of[event.spi_in])
        elif isinstance(event, ChildSaDeleted):
            order = [s for s in order if s != event.spi_out]
    return order


def assert_consistent(pair: Pair) -> None:
    """Exactly one SA pair on both sides, mirrored, and each side sends on it."""
    a, b = live_children(pair.a), live_children(pair.b)
    assert len(a) == 1 and len(b) == 1, (a, b)
    (a_in, a_out), = a
    (b_in, b_out), = b
    assert (a_in, a_out) == (b_out, b_in)
    assert outbound_spis(pair.a)[-1] == a_out
    assert outbound_spis(pair.b)[-1] == b_out


def up_pair(**changes: object) -> Pair:
    p = policy(**changes)
    pair = Pair(p, mirror(p))
    pair.connect()
    assert pair.a.of(IkeSaUp) and pair.b.of(IkeSaUp)
    return pair


# -- Child SA rekey ---------------------------------------------------------------------
def test_child_rekey_by_lifetime_is_make_before_break() -> None:
    pair = up_pair(child_lifetime=600.0)
    pair.advance(600)
    installs = pair.a.of(ChildSaInstalled)
    assert len(installs) >= 2
    assert_consistent(pair)
    # The responder of the rekey got its outbound SA only when the old one went, and
    # before the old one's removal (make before break).
    responder = pair.a if pair.b.of(ChildSaInstalled)[-1].outbound else pair.b
    events = responder.events
    ready = next(i for i, e in enumerate(events) if isinstance(e, ChildSaOutboundReady))
    deleted = next(i for i, e in enumerate(events) if isinstance(e, ChildSaDeleted))
    assert ready < deleted
    assert ready == deleted - 1


def test_child_rekey_on_command_with_pfs() -> None:
    pair = up_pair(esp="aes256-sha256-modp2048")
    old = live_children(pair.a)
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert_consistent(pair)
    assert live_children(pair.a) != old
    # With PFS, each rekey uses fresh DH: keys differ from the old ones.
    first, second = pair.a.of(ChildSaInstalled)[0], pair.a.of(ChildSaInstalled)[-1]
    assert first.info.keys.encr_out != second.info.keys.encr_out


def test_simultaneous_child_rekey_leaves_one_pair() -> None:
    pair = up_pair()
    assert pair.a.endpoint.rekey("peer", pair.now)
    assert pair.b.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert_consistent(pair)
    # Two new SA pairs were created, one was redundant and closed.
    assert len(pair.a.of(ChildSaInstalled)) == 3
    assert len(pair.b.of(ChildSaInstalled)) == 3


def test_simultaneous_child_rekey_for_many_seeds() -> None:
    for seed in range(20):
        p = policy()
        pair = Pair(p, mirror(p), seed=seed * 3)
        pair.connect()
        pair.a.endpoint.rekey("peer", pair.now)
        pair.b.endpoint.rekey("peer", pair.now)
        pair.deliver()
        assert_consistent(pair)


@pytest.mark.parametrize("seed", range(40))
def test_simultaneous_child_rekey_in_any_message_order(seed: int) -> None:
    """Both sides rekey at once and every message may overtake any other (a collision
    matrix by enumeration): one mirrored pair survives, each side sends on it."""
    pair = up_pair()
    pair.a.endpoint.rekey("peer", pair.now)
    pair.b.endpoint.rekey("peer", pair.now)
    pair.deliver_shuffled(random.Random(seed))
    pair.advance(30)
    assert_consistent(pair)


@pytest.mark.parametrize("seed", range(20))
def test_simultaneous_ike_rekey_in_any_message_order(seed: int) -> None:
    pair = up_pair()
    pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.b.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver_shuffled(random.Random(seed))
    pair.advance(30)
    sa_a = pair.a.endpoint.current_sa("peer")
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r)
    assert len(sa_a.children) == len(sa_b.children) == 1
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert_consistent(pair)


def test_simultaneous_child_rekey_with_a_delayed_response() -> None:
    """B's answer to A's rekey arrives only after A has answered B's rekey."""
    pair = up_pair()
    held: list[bytes] = []

    def hold_first_response_of_b(side: Side, data: bytes) -> bool:
        if side is pair.b and not held and data[19] & 0x20 and data[18] == 36:
            held.append(data)
            return True
        return False

    pair.a.endpoint.rekey("peer", pair.now)
    pair.b.endpoint.rekey("peer", pair.now)
    pair.drop = hold_first_response_of_b
    pair.deliver()
    pair.drop = lambda side, data: False
    pair.advance(30)  # A retransmits; B answers from its cache
    assert_consistent(pair)


def test_rekey_answered_with_temporary_failure_is_retried() -> None:
    pair = up_pair()
    # B is busy rekeying its IKE SA: a Child SA rekey from A gets TEMPORARY_FAILURE.
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None
    sa_b.state = IkeState.REKEYING
    pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    sa_b.state = IkeState.ESTABLISHED
    assert len(live_children(pair.a)) == 1
    pair.advance(10)
    assert_consistent(pair)
    assert len(pair.a.of(ChildSaInstalled)) == 2


def test_child_delete_crossing_a_rekey() -> None:
    pair = up_pair()
    pair.a.endpoint.rekey("peer", pair.now)
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None
    from core.ike.v2.tasks.child_delete import ChildDelete

    sa_b.queue(ChildDelete(sa_b.children[0], "operator"))
    sa_b.handle_timer(pair.now)
    pair.deliver()
    pair.advance(10)
    assert live_children(pair.a) == set() and live_children(pair.b) == set()


# -- IKE SA rekey -------------------------------------------------------------------------
def test_ike_rekey_moves_children_and_deletes_the_old_sa() -> None:
    pair = up_pair()
    children = live_children(pair.a)
    old = pair.a.endpoint.current_sa("peer")
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    new = pair.a.endpoint.current_sa("peer")
    assert new is not None and old is not None and new is not old
    assert old.state == IkeState.DESTROYED and new.state == IkeState.ESTABLISHED
    assert new.spi_i != old.spi_i
    assert live_children(pair.a) == children  # nothing happened to the Child SAs
    assert pair.a.of(IkeSaRekeyed) and pair.b.of(IkeSaRekeyed)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
    # The successor works: a Child SA rekey runs over it.
    assert pair.b.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert_consistent(pair)


def test_ike_rekey_by_lifetime() -> None:
    pair = up_pair(ike_lifetime=900.0, child_lifetime=5000.0)
    pair.advance(900)
    assert pair.a.of(IkeSaRekeyed)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
    assert len(live_children(pair.a)) == 1


def test_simultaneous_ike_rekey() -> None:
    for seed in range(10):
        p = policy()
        pair = Pair(p, mirror(p), seed=seed * 5)
        pair.connect()
        pair.a.endpoint.rekey("peer", pair.now, ike=True)
        pair.b.endpoint.rekey("peer", pair.now, ike=True)
        pair.deliver()
        pair.advance(10)
        sa_a = pair.a.endpoint.current_sa("peer")
        sa_b = pair.b.endpoint.current_sa("peer")
        assert sa_a is not None and sa_b is not None
        assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r), seed
        assert sa_a.state == sa_b.state == IkeState.ESTABLISHED
        assert len(sa_a.children) == 1 and len(sa_b.children) == 1
        assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
        # Only one IKE SA per side is left.
        assert len(pair.a.endpoint._sas) == 1 and len(pair.b.endpoint._sas) == 1
        assert pair.a.endpoint.rekey("peer", pair.now)
        pair.deliver()
        assert_consistent(pair)


# -- DPD ---------------------------------------------------------------------------------
def test_liveness_check_after_silence() -> None:
    pair = up_pair(dpd_interval=10.0)
    pair.advance(11)
    assert pair.a.of(DpdProbeSent) and pair.a.of(DpdAnswered)
    assert not pair.a.of(PeerDead)


def test_dead_peer_is_detected_and_re_established() -> None:
    pair = up_pair(dpd_interval=10.0, dpd_retries=3)
    b_alive = [True]
    pair.drop = lambda side, data: not b_alive[0]
    b_alive[0] = False
    start = pair.now
    while not pair.a.of(PeerDead) and pair.now - start < 120:
        pair.advance(1)
    detected_after = pair.now - start
    assert pair.a.of(PeerDead), "A never declared B dead"
    down = pair.a.of(IkeSaDown)[0]
    assert down.reason == DownReason.PEER_DEAD
    probes = pair.a.of(DpdProbeSent)
    assert [p.attempt for p in probes[:4]] == [1, 2, 3, 4]
    # Documented bound: dpd_interval of silence, then dpd_retries + 1 probes an interval
    # apart: at most (dpd_retries + 2) x dpd_interval.
    assert 10 * (3 + 1) <= detected_after <= 10 * (3 + 2) + 1
    b_alive[0] = True
    pair.advance(60)
    assert len(pair.a.of(IkeSaUp)) == 2  # re-established after backoff


def test_passive_side_never_probes_or_initiates() -> None:
    p = policy(dpd_interval=10.0, child_lifetime=300.0, ike_lifetime=600.0)
    pair = Pair(p, mirror(p, passive=True))
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    pair.deliver()
    assert pair.b.sent == []  # a passive peer waits for the other side
    pair.connect()
    pair.advance(2000)
    assert [d for d in pair.b.sent if _is_request(d.data)] == []
    assert pair.b.of(DpdProbeSent) == []
    assert len(live_children(pair.b)) == 1
    # A closes; the passive side does not try to come back.
    pair.a.endpoint.disconnect("peer", pair.now)
    pair.deliver()
    before = len(pair.b.sent)
    pair.advance(600)
    assert len(pair.b.sent) == before


def _is_request(data: bytes) -> bool:
    body = data[4:] if data[:4] == b"\x00\x00\x00\x00" else data
    return len(body) >= 28 and not body[19] & 0x20


# -- NAT traversal -------------------------------------------------------------------------
def test_initiator_behind_nat_floats_to_4500() -> None:
    p = policy()
    b_policy = mirror(p, remote_address=None)
    pair = Pair(p, b_policy, nat_a=True)
    pair.connect()
    up_a, up_b = pair.a.of(IkeSaUp)[0].info, pair.b.of(IkeSaUp)[0].info
    assert up_a.nat_local and not up_a.nat_remote
    assert up_b.nat_remote and not up_b.nat_local
    assert up_a.local.port == 4500 and up_b.remote == (NAT_ADDR, 5500)
    child_a, child_b = pair.a.of(ChildSaInstalled)[0].info, pair.b.of(ChildSaInstalled)[0].info
    assert child_a.encap and child_b.encap
    assert child_b.remote.port == 5500
    # Keepalives from the side behind the NAT.
    pair.advance(25)
    assert any(d.data == b"\xff" for d in pair.a.sent)
    assert up_a.local.host == A_ADDR


def test_forced_encapsulation_without_nat() -> None:
    pair = up_pair(nat_traversal="force")
    info = pair.a.of(IkeSaUp)[0].info
    assert info.nat_forced and info.local.port == 4500
    assert pair.b.of(IkeSaUp)[0].info.nat_remote  # the faked hash makes B see a NAT
    assert pair.a.of(ChildSaInstalled)[0].info.encap
    assert pair.b.of(ChildSaInstalled)[0].info.encap


def test_nat_traversal_off_sends_no_detection() -> None:
    pair = up_pair(nat_traversal="off")
    assert not pair.a.of(ChildSaInstalled)[0].info.encap
    assert pair.a.of(IkeSaUp)[0].info.local.port == 500


def test_active_side_comes_back_after_the_peer_deletes() -> None:
    pair = up_pair()
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    pair.a.endpoint.disconnect("peer", pair.now)
    pair.deliver()
    assert pair.b.of(IkeSaDown)[-1].reason == DownReason.DELETED_BY_PEER
    pair.advance(5)
    assert len(pair.b.of(IkeSaUp)) == 2  # B wants the tunnel up and re-initiated


@pytest.mark.parametrize("seed", range(30))
def test_child_rekey_crossing_an_ike_rekey(seed: int) -> None:
    """RFC 7296 2.25.2: one side rekeys the Child SA while the other rekeys the IKE SA;
    in every message order both end with one IKE SA and one mirrored Child SA pair."""
    pair = up_pair()
    pair.a.endpoint.rekey("peer", pair.now)
    pair.b.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver_shuffled(random.Random(seed))
    pair.advance(30)
    sa_a = pair.a.endpoint.current_sa("peer")
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r)
    assert_consistent(pair)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)


@pytest.mark.parametrize("seed", range(30))
def test_ike_delete_crossing_an_ike_rekey(seed: int) -> None:
    pair = up_pair()
    pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.b.endpoint.disconnect("peer", pair.now)
    pair.deliver_shuffled(random.Random(seed))
    pair.advance(30)
    # B closed; A wants the tunnel and re-establishes it.  Whatever happened, nothing
    # stale is left: both hold the same single pair (or none).
    a, b = live_children(pair.a), live_children(pair.b)
    assert {(o, i) for i, o in a} == b and len(a) <= 1
    assert pair.b.of(IkeSaDown)[0].reason == DownReason.DELETED_BY_US


def test_a_lost_first_packet_does_not_build_a_duplicate_ike_sa() -> None:
    """A's first IKE_SA_INIT is lost and B initiates meanwhile: when B's SA comes up, A
    drops its own half-done initiation instead of building a second SA later."""
    p = policy()
    pair = Pair(p, mirror(p), seed=1)
    pair.drop = lambda side, data: side is pair.a and len(pair.a.sent) == 1
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    pair.b.endpoint.connect("peer", Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    pair.deliver()
    pair.drop = lambda side, data: False
    pair.advance(60)
    assert len(pair.a.of(ChildSaInstalled)) == 1 and len(pair.b.of(ChildSaInstalled)) == 1
    assert not pair.a.of(ChildSaDeleted) and not pair.b.of(ChildSaDeleted)
    assert_consistent(pair)


def test_peer_reauthentication_make_before_break_keeps_the_new_sa() -> None:
    """RFC 7296 2.8.3: the peer builds a new IKE SA beside the working one, then deletes
    the old.  That is not a simultaneous-initiation duplicate: the new SA must survive."""
    pair = up_pair()
    old_a = pair.a.endpoint.current_sa("peer")
    peer_b = pair.b.endpoint._peers["peer"]
    peer_b.local, peer_b.remote = Address(B_ADDR, 500), Address(A_ADDR, 500)
    pair.advance(5)
    pair.b.endpoint._initiate(peer_b, pair.now)  # B reauthenticates: a second IKE SA
    pair.deliver()
    new_b = pair.b.endpoint.current_sa("peer")
    assert new_b is not None and new_b.is_established
    assert old_a is not None and old_a.is_established  # nothing deleted yet
    old_b = next(s for s in peer_b.sas if s is not new_b)
    from core.ike.v2.tasks.ike_delete import IkeDelete

    old_b.queue(IkeDelete(DownReason.REPLACED))
    old_b.handle_timer(pair.now)
    pair.b.endpoint._collect(old_b, pair.now)
    pair.deliver()
    sa_a = pair.a.endpoint.current_sa("peer")
    assert sa_a is not None and sa_a is not old_a
    assert (sa_a.spi_i, sa_a.spi_r) == (new_b.spi_i, new_b.spi_r)
    assert len(sa_a.children) == 1
    assert_consistent(pair)


# -- failed exchanges leave nothing behind ----------------------------------------------
def test_unusable_child_rekey_response_gets_the_peers_new_sa_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The responder installed a new Child SA; the initiator cannot use the response (here
    its traffic selectors) and ends the exchange (RFC 7296 3.3.6).  It must delete the
    responder's SA, which would otherwise stay orphaned until it expired."""
    pair = up_pair()
    old_a, old_b = live_children(pair.a), live_children(pair.b)

    def unacceptable(narrowed: object, proposed: object) -> None:
        raise TsUnacceptable("test: the responder narrowed to something we never proposed")

    monkeypatch.setattr(child_create.ts_mod, "check_subset", unacceptable)
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert pair.a.of(ExchangeFailed)[-1].exchange == "CREATE_CHILD_SA"
    assert len(pair.b.of(ChildSaInstalled)) == 2  # B did install one ...
    assert live_children(pair.a) == old_a and live_children(pair.b) == old_b  # ... and lost it
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None and [c.state for c in sa_b.children] == [ChildState.INSTALLED]
    monkeypatch.undo()
    assert pair.b.endpoint.rekey("peer", pair.now)  # the old SA can still be rekeyed
    pair.deliver()
    assert_consistent(pair)
    assert live_children(pair.a) != old_a


def test_refused_delete_of_a_rekeyed_child_keeps_accepting_it_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """B answers A's DELETE of the rekeyed Child SA with an error notify: B refused the
    request (RFC 7296 2.21.2), keeps the old pair and still sends on it (its outbound moves
    only when the old SA goes).  A, which already sends on the new pair, keeps the old one
    for what B sends until it expires; then both sides hold one pair again."""
    pair = up_pair(child_lifetime=600.0)
    (old_a,) = live_children(pair.a)
    responder = child_delete.respond_child_delete

    def refuse_on_b(sa: IkeSa, payload: DeletePayload, now: float) -> Payloads:
        if not sa.initiator:
            raise TemporaryFailure("test: B refuses the DELETE")
        return responder(sa, payload, now)

    monkeypatch.setattr(child_delete, "respond_child_delete", refuse_on_b)
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    monkeypatch.undo()
    assert old_a in live_children(pair.a)  # B's outbound is A's inbound: still accepted
    assert (old_a[1], old_a[0]) in live_children(pair.b)
    assert outbound_spis(pair.b)[-1] == old_a[0]
    assert outbound_spis(pair.a)[-1] != old_a[1]  # A sends on the new pair
    pair.advance(601)
    assert_consistent(pair)
    assert old_a not in live_children(pair.a)


def test_peer_deleting_its_collision_loser_leaves_a_refused_old_sa_rekeyed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both sides rekey the Child SA at once and B wins.  A refuses B's DELETE of the old
    SA (so B keeps accepting it until it expires); only then does A learn it lost and
    delete its redundant SA, which B created as the old SA's successor.  The old SA is still
    replaced by B's new SA: it must not become rekeyable again (an extra pair), neither then
    nor when A later rekeys B's new SA and deletes it while the old SA lingers."""
    pair = up_pair(child_lifetime=600.0)
    (old_a,) = live_children(pair.a)
    responder = child_delete.respond_child_delete
    held: list[bytes] = []

    def refuse_deleting_a_usable_sa(sa: IkeSa, payload: DeletePayload, now: float) -> Payloads:
        named = [sa.find_child_by_out(int.from_bytes(spi, "big")) for spi in payload.spis]
        if any(c is not None and not c.redundant for c in named):
            raise TemporaryFailure("test: A refuses the DELETE of the old SA")
        return responder(sa, payload, now)

    def hold_bs_answer_to_the_rekey(side: Side, data: bytes) -> bool:
        if side is pair.b and not held and data[19] & 0x20 and data[18] == 36:
            held.append(data)
            return True
        return False

    monkeypatch.setattr(child_delete, "respond_child_delete", refuse_deleting_a_usable_sa)
    assert pair.a.endpoint.rekey("peer", pair.now)
    assert pair.b.endpoint.rekey("peer", pair.now)
    pair.drop = hold_bs_answer_to_the_rekey
    pair.deliver()
    assert any("won" in e.message for e in pair.b.of(LogMessage))  # the seed makes B win
    assert any("refused to delete" in e.message for e in pair.b.of(LogMessage))
    pair.drop = lambda side, data: False
    pair.advance(10)  # A retransmits its rekey, learns it lost and deletes its redundant SA
    monkeypatch.undo()
    assert any("lost" in e.message for e in pair.a.of(LogMessage))
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None
    old_b = next(c for c in sa_b.children if c.spi_in == old_a[1])
    assert old_b.state == ChildState.REKEYED  # still replaced by B's new SA
    assert len([c for c in sa_b.children if c.usable]) == 1
    pair.advance(601)
    old_spi = f"{old_b.spi_in:08x}"
    assert not [e.message for e in pair.b.of(LogMessage) if old_spi in e.message and (
        "rekey of" in e.message or "without a successor" in e.message)]
    assert_consistent(pair)
