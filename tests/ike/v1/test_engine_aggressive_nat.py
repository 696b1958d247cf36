"""Aggressive mode (FQDN identities, a dynamic side behind NAT) and NAT traversal."""

from __future__ import annotations

from typing import Any

import pytest

from core.ike.events import (
    Address,
    ChildSaInstalled,
    DownReason,
    ExchangeFailed,
    IkeSaDown,
    IkeSaUp,
    LogMessage,
)
from core.ike.v1 import natt
from core.ike.v1.constants import (
    VID_NATT_DRAFT_02,
    VID_NATT_DRAFT_03,
    VID_NATT_RFC3947,
    ExchangeType,
    PayloadType,
)
from core.ike.v1.message import decode_message, peek_header
from core.ike.v1.payloads import VendorIdPayload
from tests.ike.v1.pair import A_ADDR, B_ADDR, NAT_ADDR, Pair, policy


def _dynamic_pair(**changes_b: Any) -> Pair:
    """A has no fixed address and sits behind a NAT; B knows it only by its FQDN."""
    a = policy(local=None, local_id="fqdn:a.example", remote_id="fqdn:b.example",
               dpd_interval=0)
    b = policy(local=B_ADDR, remote=None, local_id="fqdn:b.example",
               remote_id="fqdn:a.example", dpd_interval=0, **changes_b)
    return Pair(a, b, nat_a=True)


def _wire(pair: Pair) -> list[tuple[str, int, list[int], int]]:
    """(sender, exchange, plaintext payload types, destination port) of each message."""
    found = []
    for sender, datagram in pair.wire:
        data = datagram.data[4:] if datagram.local.port == 4500 else datagram.data
        if len(data) < 28:
            continue
        header = peek_header(data)
        types = [] if header.encrypted else decode_message(data).types()
        found.append((sender, header.exchange, types, datagram.remote.port))
    return found


def test_aggressive_mode_with_fqdn_identities() -> None:
    a = policy(local_id="fqdn:a.example", remote_id="fqdn:b.example", exchange_mode="aggressive")
    b = policy(local=B_ADDR, remote=A_ADDR, local_id="fqdn:b.example",
               remote_id="fqdn:a.example")
    pair = Pair(a, b)
    pair.connect()
    up_a, up_b = pair.a.of(IkeSaUp)[0].info, pair.b.of(IkeSaUp)[0].info
    assert up_a.exchange_mode == up_b.exchange_mode == "aggressive"
    child_a, child_b = pair.a.of(ChildSaInstalled)[0], pair.b.of(ChildSaInstalled)[0]
    assert child_a.info.keys.encr_out == child_b.info.keys.encr_in
    phase1_messages = [w for w in _wire(pair) if w[1] == ExchangeType.AGGRESSIVE]
    assert len(phase1_messages) == 3
    # Message 1 carries SA, KE, Ni and the identity in clear; message 3 is encrypted.
    assert phase1_messages[0][2][:4] == [PayloadType.SA, PayloadType.KE, PayloadType.NONCE,
                                         PayloadType.ID]
    assert PayloadType.HASH in phase1_messages[1][2] and phase1_messages[2][2] == []
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None and str(sa_b.peer_id) == "a.example"


def test_dynamic_side_behind_nat_uses_aggressive_mode_and_floats() -> None:
    pair = _dynamic_pair()
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert sa_a.exchange_mode == "aggressive"
    assert sa_a.nat_local and not sa_a.nat_remote and sa_a.uses_nat_t
    assert sa_b.nat_remote and not sa_b.nat_local
    assert sa_a.local == Address(A_ADDR, 4500) and sa_a.remote == Address(B_ADDR, 4500)
    assert sa_b.remote == Address(NAT_ADDR, 5500)  # the NAT's mapping of A's port 4500
    info_a = pair.a.of(ChildSaInstalled)[0].info
    info_b = pair.b.of(ChildSaInstalled)[0].info
    assert info_a.encap and info_b.encap and info_a.mode == "tunnel"
    assert info_b.remote == Address(NAT_ADDR, 5500)
    ports = [(sender, port) for sender, exchange, _t, port in _wire(pair)]
    # Messages 1 and 2 on port 500 (B answers the NAT's mapping of it) ...
    assert ports[:2] == [("a", 500), ("b", 1500)]
    # ... then 4500 (with the non-ESP marker), which the NAT maps to 5500.
    assert ports[2:] and all(port == (4500 if s == "a" else 5500) for s, port in ports[2:])
    # The side behind the NAT keeps its mapping open.
    pair.advance(45)
    assert pair.keepalives >= 2


def test_responder_picks_the_peer_and_its_psk_by_identity() -> None:
    pair = _dynamic_pair()
    other = policy(name="other", local=B_ADDR, remote=None, local_id="fqdn:b.example",
                   remote_id="fqdn:c.example", psk=b"the other peer's key")
    endpoint = pair.b.endpoint
    endpoint.remove_peer("peer", pair.now)
    endpoint.add_peer(other)
    endpoint.add_peer(policy(local=B_ADDR, remote=None, local_id="fqdn:b.example",
                             remote_id="fqdn:a.example", dpd_interval=0))
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    assert pair.b.of(IkeSaUp)[0].info.peer == "peer"
    assert endpoint.current_sa("other") is None
    assert endpoint.current_sa("peer") is not None


def test_unknown_identity_is_refused() -> None:
    pair = _dynamic_pair()
    pair.b.endpoint.remove_peer("peer", pair.now)
    pair.b.endpoint.add_peer(policy(local=B_ADDR, remote=None, local_id="fqdn:b.example",
                                    remote_id="fqdn:somebody.else"))
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    # B answers INVALID_ID_INFORMATION; the identity is nobody's, so B only logs it.
    assert pair.a.of(ExchangeFailed)[0].notify == "INVALID_ID_INFORMATION"
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.AUTH_FAILED
    assert not pair.b.of(IkeSaUp) and not pair.b.of(ExchangeFailed)
    (line,) = [e for e in pair.b.of(LogMessage) if "refused the aggressive" in e.message]
    assert line.peer == "" and "INVALID_ID_INFORMATION" in line.message
    assert "no peer is configured with identity a.example" in line.message


def test_aggressive_mode_wrong_psk() -> None:
    pair = _dynamic_pair(psk=b"not the same key")
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    assert pair.a.of(ExchangeFailed)[0].notify == "AUTHENTICATION_FAILED"
    assert "HASH_R" in pair.a.of(ExchangeFailed)[0].message
    assert [d.reason for d in pair.a.of(IkeSaDown)] == [DownReason.AUTH_FAILED]
    assert [d.reason for d in pair.b.of(IkeSaDown)] == [DownReason.AUTH_FAILED]


def test_main_mode_behind_nat_floats_after_message_4() -> None:
    a = policy(dpd_interval=0)
    b = policy(local=B_ADDR, remote=NAT_ADDR, local_id=B_ADDR, remote_id=A_ADDR,
               dpd_interval=0)
    pair = Pair(a, b, nat_a=True)
    pair.connect()
    sa_a = pair.a.endpoint.current_sa("peer")
    assert sa_a is not None and sa_a.exchange_mode == "main" and sa_a.nat_local
    ports = [port for _s, exchange, _t, port in _wire(pair) if exchange == ExchangeType.MAIN]
    assert ports == [500, 1500, 500, 1500, 4500, 5500]  # B answers the NAT's mappings
    assert pair.a.of(ChildSaInstalled)[0].info.encap


def test_forced_encapsulation_without_a_nat() -> None:
    a = policy(nat_traversal="force")
    pair = Pair(a, policy(local=B_ADDR, remote=A_ADDR, local_id=B_ADDR, remote_id=A_ADDR))
    pair.connect()
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert sa_a.nat_forced and not sa_a.nat_local and not sa_a.nat_remote
    assert sa_b.nat_remote and not sa_b.nat_forced  # B believes A is behind a NAT
    assert sa_a.local.port == sa_b.local.port == 4500
    assert pair.a.of(ChildSaInstalled)[0].info.encap and pair.b.of(ChildSaInstalled)[0].info.encap
    assert pair.a.of(IkeSaUp)[0].info.nat_forced


def test_forced_encapsulation_needs_a_peer_that_speaks_nat_t() -> None:
    a = policy(nat_traversal="force")
    pair = Pair(a, policy(local=B_ADDR, remote=A_ADDR, local_id=B_ADDR, remote_id=A_ADDR,
                          nat_traversal="off"))
    pair.connect()
    sa_a = pair.a.endpoint.current_sa("peer")
    assert sa_a is not None and not sa_a.uses_nat_t and sa_a.local.port == 500
    assert not pair.a.of(ChildSaInstalled)[0].info.encap


def test_draft_nat_t_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer announcing only the draft VIDs gets NAT-D payload type 130 and the draft
    UDP encapsulation modes."""
    def draft_only(nat_traversal: str) -> list[tuple[int, Any]]:
        return [(PayloadType.VENDOR_ID, VendorIdPayload(v))
                for v in (VID_NATT_DRAFT_03, VID_NATT_DRAFT_02)]

    a = policy(dpd_interval=0)
    b = policy(local=B_ADDR, remote=NAT_ADDR, local_id=B_ADDR, remote_id=A_ADDR)
    pair = Pair(a, b, nat_a=True)
    monkeypatch.setattr(natt, "our_vendor_ids", draft_only)
    pair.connect()
    sa_a = pair.a.endpoint.current_sa("peer")
    assert sa_a is not None and sa_a.natt_draft and sa_a.nat_local
    wire = _wire(pair)
    assert PayloadType.NAT_D_DRAFT in wire[3][2]  # MM4 from B
    assert PayloadType.NAT_D not in wire[3][2]
    mm2 = decode_message(pair.b.sent[0].data)
    vids = {v.data for v in mm2.get_all(PayloadType.VENDOR_ID, VendorIdPayload)}
    assert VID_NATT_DRAFT_03 in vids and VID_NATT_RFC3947 not in vids
    info = pair.a.of(ChildSaInstalled)[0].info
    assert info.encap and info.mode == "tunnel"


def test_nat_mapping_change_is_followed() -> None:
    pair = _dynamic_pair()
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()
    original = pair._translate

    def remapped(sender: Any, datagram: Any) -> tuple[Address, Address]:
        src, dst = original(sender, datagram)
        if sender is pair.a:
            src = Address(src.host, src.port + 1)
        if sender is pair.b and dst.host == A_ADDR:
            dst = Address(A_ADDR, dst.port - 1)
        return src, dst

    pair._translate = remapped  # type: ignore[method-assign]
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    sa_b = pair.b.endpoint.current_sa("peer")
    assert sa_b is not None and sa_b.remote == Address(NAT_ADDR, 5501)
    assert len(pair.b.of(ChildSaInstalled)) == 2
