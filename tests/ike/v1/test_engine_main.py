"""Two IKEv1 endpoints in memory: main mode + quick mode and what can go wrong there."""

from __future__ import annotations

import pytest

from core.ike.events import (
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaOutboundReady,
    DownReason,
    ExchangeFailed,
    IkeSaDown,
    IkeSaUp,
    LogMessage,
)
from core.ike.policy import Identity
from core.ike.v1.constants import ExchangeType
from core.ike.v1.message import peek_header
from core.ike.v1.sa import SaState
from core.ike.v2.state import IkeState
from core.ike.v2.ts import describe
from tests.ike.v1.pair import Pair, mirror, policy


def _established(pair: Pair) -> tuple[ChildSaInstalled, ChildSaInstalled]:
    assert len(pair.a.of(IkeSaUp)) == 1 and len(pair.b.of(IkeSaUp)) == 1
    child_a, child_b = pair.a.of(ChildSaInstalled), pair.b.of(ChildSaInstalled)
    assert len(child_a) == 1 and len(child_b) == 1
    return child_a[0], child_b[0]


def _exchanges(pair: Pair) -> list[str]:
    return [ExchangeType(peek_header(d.data[4:] if d.data[:4] == bytes(4) else d.data)
                         .exchange).name for d in pair.a.sent + pair.b.sent]


def test_main_mode_then_quick_mode_agree_on_spis_and_keys() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.spi_in == b.info.spi_out and a.info.spi_out == b.info.spi_in
    assert a.info.keys.encr_out == b.info.keys.encr_in
    assert a.info.keys.integ_out == b.info.keys.integ_in
    assert a.info.keys.encr_in == b.info.keys.encr_out
    assert a.info.keys.encr_out != a.info.keys.encr_in
    assert len(a.info.keys.encr_out) == 32 and len(a.info.keys.integ_out) == 32
    assert (a.info.encr, a.info.encr_key_bits, a.info.integ) == ("AES_CBC", 256,
                                                                 "HMAC_SHA2_256_128")
    assert a.info.mode == "tunnel" and not a.info.encap
    assert a.info.local_ts == ("0.0.0.0/0",) and a.info.remote_ts == ("0.0.0.0/0",)
    up_a, up_b = pair.a.of(IkeSaUp)[0].info, pair.b.of(IkeSaUp)[0].info
    assert up_a.ike_version == 1 and up_a.exchange_mode == "main" and up_a.initiator
    assert not up_b.initiator and up_a.spi_i == up_b.spi_i and up_a.spi_r == up_b.spi_r
    assert up_a.algorithms == "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519"
    # Six main mode messages, three quick mode messages.
    assert _exchanges(pair).count("MAIN") == 6 and _exchanges(pair).count("QUICK") == 3
    # The responder sends only once the initiator proved it has the SA (HASH(3)).
    assert not b.outbound and pair.b.of(ChildSaOutboundReady)[0].spi_in == b.info.spi_in
    assert a.outbound


def test_status_surface_matches_ikev2() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.state == SaState.ESTABLISHED and sa.state.value == "established"
    assert sa.info().peer == "peer" and sa.dpd_probes == 0 and sa.last_heard == pair.now
    assert sa.local.port == 500 and sa.remote.port == 500 and not sa.uses_nat_t
    # The attributes the daemon reads from IKEv2 SAs mean the same here.
    assert sa.state == IkeState.ESTABLISHED and sa.is_established
    assert sa.spi_i == bytes.fromhex(sa.info().spi_i) and len(sa.spi_r) == 8
    assert sa.negotiated is not None and sa.negotiated.describe() == sa.info().algorithms
    assert sa.peer_id_text == "198.51.100.2" and sa.rekey_at and sa.expire_at
    (child,) = sa.children
    assert child.state.value == "installed" and child.outbound_installed and not child.redundant
    assert child.negotiated.describe() == "AES_CBC_256/HMAC_SHA2_256_128"
    assert [describe(ts) for ts in child.local_ts + child.remote_ts] == ["0.0.0.0/0"] * 2
    assert child.mode == "tunnel" and not child.encap
    assert child.expire_at == pair.now + p.child_lifetime
    assert child.rekey_at is not None and pair.now < child.rekey_at < child.expire_at
    assert child.created_at == pair.now and child.spi_in and child.spi_out


@pytest.mark.parametrize(("ike", "esp"), [
    ("aes256-sha256-x25519", "aes256-sha256"),
    ("aes128-sha1-modp2048", "aes128-sha1"),
    ("aes256-sha384-ecp384", "aes128gcm16"),
    ("aes192-sha512-ecp521", "aes256gcm16"),
    ("aes128-sha256-ecp256", "aes256-sha512"),
    ("aes256-sha256-modp3072", "aes192-sha384"),
])
def test_proposal_matrix(ike: str, esp: str) -> None:
    p = policy(ike=ike, esp=esp)
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.keys.encr_out == b.info.keys.encr_in
    assert a.info.keys.integ_out == b.info.keys.integ_in
    if "gcm" in esp:
        assert a.info.encr == "AES_GCM_16" and a.info.integ == "NONE"
        assert len(a.info.keys.encr_out) == a.info.encr_key_bits // 8 + 4  # salt
        assert a.info.keys.integ_out == b""


def test_responder_picks_the_first_acceptable_of_several() -> None:
    p = policy(ike="aes256-sha512-ecp384,aes128-sha256-x25519", esp="aes256gcm16,aes128-sha1")
    pair = Pair(p, mirror(p, ike_proposals=policy(ike="aes128-sha256-x25519").ike_proposals,
                          esp_proposals=policy(esp="aes128-sha1").esp_proposals))
    pair.connect()
    a, _b = _established(pair)
    assert "CURVE_25519" in pair.a.of(IkeSaUp)[0].info.algorithms
    assert a.info.encr == "AES_CBC" and a.info.integ == "HMAC_SHA1_96"


def test_pfs_uses_a_fresh_key_exchange() -> None:
    p = policy(esp="aes128-sha256-ecp256")
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.keys.encr_out == b.info.keys.encr_in
    # The same pair without PFS derives other keys from the same randomness.
    plain = Pair(policy(), mirror(policy()))
    plain.connect()
    assert plain.a.of(ChildSaInstalled)[0].info.keys.encr_out != a.info.keys.encr_out


def test_pfs_mismatch_is_refused() -> None:
    p = policy(esp="aes128-sha256-ecp256")
    pair = Pair(p, mirror(p, esp_proposals=policy(esp="aes128-sha256").esp_proposals))
    pair.connect()
    assert not pair.a.of(ChildSaInstalled)
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"


def test_wrong_psk_fails_cleanly_on_both_sides() -> None:
    p = policy()
    pair = Pair(p, mirror(p, psk=b"another secret entirely"))
    pair.connect()
    assert [d.reason for d in pair.a.of(IkeSaDown)] == [DownReason.AUTH_FAILED]
    assert [d.reason for d in pair.b.of(IkeSaDown)] == [DownReason.AUTH_FAILED]
    assert not pair.a.of(ChildSaInstalled) and not pair.b.of(ChildSaInstalled)
    failure_b = pair.b.of(ExchangeFailed)[0]
    assert "pre-shared keys" in failure_b.message and failure_b.notify == "AUTHENTICATION_FAILED"
    assert pair.a.of(ExchangeFailed)[0].notify == "AUTHENTICATION_FAILED"
    # The initiator retries later with backoff; nothing else is sent meanwhile.
    assert pair.a.endpoint.next_timer() is not None


def test_phase1_proposal_mismatch_says_why() -> None:
    p = policy(ike="aes256-sha256-x25519")
    pair = Pair(p, mirror(p, ike_proposals=policy(ike="aes128-sha1-modp2048").ike_proposals))
    pair.connect()
    assert [d.reason for d in pair.a.of(IkeSaDown)] == [DownReason.NO_PROPOSAL]
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"
    assert not pair.b.of(IkeSaUp) and not pair.b.of(IkeSaDown)
    assert "no acceptable ISAKMP transform" in pair.b.of(ExchangeFailed)[0].message
    assert pair.b.endpoint.half_open_count == 0


def test_esp_mismatch_closes_the_isakmp_sa() -> None:
    p = policy(esp="aes256gcm16")
    pair = Pair(p, mirror(p, esp_proposals=policy(esp="aes128-sha1").esp_proposals))
    pair.connect()
    assert not pair.a.of(ChildSaInstalled) and not pair.b.of(ChildSaInstalled)
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.NO_PROPOSAL
    assert pair.b.of(IkeSaDown)[0].reason == DownReason.DELETED_BY_PEER


def test_aead_only_ike_proposal_is_not_usable_with_ikev1() -> None:
    p = policy(ike="aes256gcm16-prfsha256-x25519")
    pair = Pair(p, mirror(p))
    pair.connect()
    assert not pair.a.sent
    assert "AES-CBC" in pair.a.of(ExchangeFailed)[0].message
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.NO_PROPOSAL


def test_transport_mode() -> None:
    p = policy(mode="transport", esp="aes128gcm16")
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.mode == b.info.mode == "transport"
    assert a.info.local_ts == ("198.51.100.1/32",) and b.info.local_ts == ("198.51.100.2/32",)


def test_mode_mismatch_is_refused() -> None:
    p = policy(mode="transport")
    pair = Pair(p, mirror(p, mode="tunnel"))
    pair.connect()
    assert not pair.a.of(ChildSaInstalled)
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"


def test_narrower_selectors_from_the_peer_are_accepted_and_reported() -> None:
    import ipaddress

    narrow = (ipaddress.IPv4Network("10.1.0.0/16"),)
    p = policy(local_ts=narrow, remote_ts=(ipaddress.IPv4Network("10.2.0.0/24"),))
    pair = Pair(p, mirror(p, local_ts=(ipaddress.IPv4Network("0.0.0.0/0"),),
                          remote_ts=(ipaddress.IPv4Network("0.0.0.0/0"),)))
    pair.connect()
    a, b = _established(pair)
    assert a.info.local_ts == ("10.1.0.0/16",) and a.info.remote_ts == ("10.2.0.0/24",)
    assert b.info.local_ts == ("10.2.0.0/24",) and b.info.remote_ts == ("10.1.0.0/16",)


def test_wider_selectors_than_allowed_are_refused() -> None:
    import ipaddress

    p = policy()
    pair = Pair(p, mirror(p, local_ts=(ipaddress.IPv4Network("10.2.0.0/24"),)))
    pair.connect()
    assert not pair.a.of(ChildSaInstalled)
    assert pair.b.of(ExchangeFailed)[0].notify == "INVALID_ID_INFORMATION"
    assert pair.a.of(ExchangeFailed)[0].notify == "INVALID_ID_INFORMATION"


def test_remote_id_mismatch_fails_authentication() -> None:
    p = policy()
    pair = Pair(p, mirror(p, remote_id=Identity.parse("fqdn:someone.else")))
    pair.connect()
    assert pair.b.of(IkeSaDown)[0].reason == DownReason.AUTH_FAILED
    assert pair.b.of(ExchangeFailed)[0].notify == "INVALID_ID_INFORMATION"
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.AUTH_FAILED


def test_responder_lifetime_notify_shortens_the_initiators_sa() -> None:
    p = policy(child_lifetime=3600)
    pair = Pair(p, mirror(p, child_lifetime=600))
    pair.connect()
    a, b = _established(pair)
    assert b.info.expire_at == pair.now + 600
    assert a.info.expire_at == pair.now + 600
    assert any("shortened" in e.message for e in pair.a.of(LogMessage))


def test_shorter_phase1_lifetime_wins() -> None:
    p = policy(ike_lifetime=7200)
    pair = Pair(p, mirror(p, ike_lifetime=3600))
    pair.connect()
    assert pair.b.of(IkeSaUp)[0].info.expire_at == pair.now + 3600
    # The initiator learns it from the RESPONDER-LIFETIME notify that follows.
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.expire_at == pair.now + 3600
    assert sa.rekey_at is not None and sa.rekey_at < sa.expire_at


def test_unknown_peer_address_is_refused_with_a_notify() -> None:
    p = policy()
    pair = Pair(p, mirror(p, remote_address="198.51.100.77"))
    pair.connect()
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.NO_PROPOSAL
    assert pair.b.endpoint.half_open_count == 0


def test_disconnect_deletes_both_sides() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    pair.a.endpoint.disconnect("peer", pair.now)
    pair.deliver()
    assert pair.a.of(IkeSaDown)[-1].reason == DownReason.DELETED_BY_US
    assert pair.b.of(IkeSaDown)[-1].reason == DownReason.DELETED_BY_PEER
    assert [e.reason for e in pair.b.of(ChildSaDeleted)] == ["deleted by peer"]
    assert pair.b.endpoint.current_sa("peer") is None
    assert pair.a.endpoint.current_sa("peer") is None
    pair.advance(300)
    assert len(pair.a.of(IkeSaUp)) == 1  # not re-established after disconnect


def test_remove_peer_closes_everything() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    pair.b.endpoint.remove_peer("peer", pair.now)
    pair.deliver()
    assert pair.b.endpoint.peer_names() == []
    assert pair.a.of(IkeSaDown)[-1].reason == DownReason.DELETED_BY_PEER
    assert pair.b.endpoint.next_timer() is None


def test_ipv6_outer_addresses_carry_ipv4_selectors() -> None:
    from core.ike.events import Address

    p = policy(local="2001:db8::1", remote="2001:db8::2")
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", Address("2001:db8::1", 500), Address("2001:db8::2", 500),
                            pair.now)
    pair.deliver()
    a, _b = _established(pair)
    assert a.info.local_ts == ("0.0.0.0/0",) and a.info.remote == Address("2001:db8::2", 500)
    assert pair.b.endpoint.current_sa("peer").peer_id_text == "2001:db8::1"  # type: ignore[union-attr]
