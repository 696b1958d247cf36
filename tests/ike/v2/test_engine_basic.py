"""Two IKEv2 endpoints in memory: IKE_SA_INIT + IKE_AUTH and what can go wrong there."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.crypto.random import SeededRandomSource
from core.ike.constants import PayloadType
from core.ike.events import (
    Address,
    ChildSaInstalled,
    DownReason,
    ExchangeFailed,
    IkeSaDown,
    IkeSaUp,
    LogMessage,
)
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.message import decode_message, encode_message
from core.ike.v2.sa import IkeState
from tests.ike.v2.pair import A_ADDR, B_ADDR, Pair, mirror, policy

SCANNER = "203.0.113.66"


def _established(pair: Pair) -> tuple[ChildSaInstalled, ChildSaInstalled]:
    ups_a, ups_b = pair.a.of(IkeSaUp), pair.b.of(IkeSaUp)
    assert len(ups_a) == 1 and len(ups_b) == 1
    child_a, child_b = pair.a.of(ChildSaInstalled), pair.b.of(ChildSaInstalled)
    assert len(child_a) == 1 and len(child_b) == 1
    return child_a[0], child_b[0]


def test_initiator_and_responder_agree_on_spis_and_keys() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.spi_in == b.info.spi_out and a.info.spi_out == b.info.spi_in
    assert a.info.keys.encr_out == b.info.keys.encr_in
    assert a.info.keys.encr_in == b.info.keys.encr_out
    assert a.info.keys.encr_out != a.info.keys.encr_in
    assert a.info.encr == "AES_GCM_16" and a.info.encr_key_bits == 256
    assert a.info.mode == "tunnel" and not a.info.encap
    assert a.info.local_ts == ("0.0.0.0/0",) and a.info.remote_ts == ("0.0.0.0/0",)
    up = pair.a.of(IkeSaUp)[0].info
    assert up.initiator and up.algorithms.startswith("AES_GCM_16_256")
    assert not pair.b.of(IkeSaUp)[0].info.initiator
    # Exactly four messages: IKE_SA_INIT and IKE_AUTH, request and response.
    assert len(pair.a.sent) == 2 and len(pair.b.sent) == 2


@pytest.mark.parametrize(
    ("ike", "esp"),
    [
        ("aes256gcm16-prfsha256-x25519", "aes256gcm16"),
        ("aes256-sha256-modp2048", "aes256-sha256-modp2048"),
        ("chacha20poly1305-prfsha256-ecp256", "chacha20poly1305"),
        ("aes128-sha1-modp2048", "aes128-sha1"),
        ("aes128gcm16-prfsha384-ecp384", "aes128gcm16-esn"),
        ("aes256-sha512-ecp521", "aes256-sha384"),
        ("aes256-sha256-modp3072", "aes256-sha512"),
    ],
)
def test_proposal_matrix(ike: str, esp: str) -> None:
    p = policy(ike=ike, esp=esp)
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.keys.encr_out == b.info.keys.encr_in
    assert a.info.keys.integ_out == b.info.keys.integ_in
    assert a.info.esn == ("-esn" in esp)


def test_wrong_psk_fails_cleanly_on_both_sides() -> None:
    p = policy()
    pair = Pair(p, mirror(p, psk=b"another secret entirely"))
    pair.connect()
    downs_a, downs_b = pair.a.of(IkeSaDown), pair.b.of(IkeSaDown)
    assert [d.reason for d in downs_a] == [DownReason.AUTH_FAILED]
    assert [d.reason for d in downs_b] == [DownReason.AUTH_FAILED]
    assert not pair.a.of(ChildSaInstalled) and not pair.b.of(ChildSaInstalled)
    failures = pair.b.of(ExchangeFailed)
    assert failures and "pre-shared keys differ" in failures[0].message
    assert pair.a.of(ExchangeFailed)[0].notify == "AUTHENTICATION_FAILED"


def test_proposal_mismatch_says_why() -> None:
    p = policy(ike="aes256gcm16-prfsha256-x25519")
    pair = Pair(p, mirror(p, ike_proposals=policy(ike="aes128-sha1-modp2048").ike_proposals))
    pair.connect()
    assert [d.reason for d in pair.a.of(IkeSaDown)] == [DownReason.NO_PROPOSAL]
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"
    assert not pair.b.of(IkeSaUp)
    assert pair.b.endpoint.half_open_count == 0
    # The responder's operator sees why as well (the daemon's `last_error`).
    (refused,) = pair.b.of(ExchangeFailed)
    assert refused.peer == "peer" and refused.exchange == "IKE_SA_INIT"
    assert refused.notify == "NO_PROPOSAL_CHOSEN" and "proposal" in refused.message


def test_refused_ike_sa_init_is_reported_to_every_peer_with_that_address() -> None:
    """Peers configured with the request's source address are the ones it came from."""
    p = policy(ike="aes256gcm16-prfsha256-x25519")
    theirs = policy(ike="aes128-sha1-modp2048").ike_proposals
    candidates = [mirror(p, name, ike_proposals=theirs) for name in ("one", "two")]
    pair = Pair(p, mirror(p))
    pair.b.endpoint = Ikev2Endpoint(candidates, SeededRandomSource(3))
    pair.connect()
    refused = pair.b.of(ExchangeFailed)
    assert sorted(e.peer for e in refused) == ["one", "two"]
    assert {e.notify for e in refused} == {"NO_PROPOSAL_CHOSEN"}


def test_refused_ike_sa_init_is_not_pinned_on_several_dynamic_peers() -> None:
    """Any host may send IKE_SA_INIT: when several dynamic peers could have sent it, the
    refusal is logged, and no peer's status (`last_error`) is overwritten."""
    p = policy(ike="aes256gcm16-prfsha256-x25519")
    theirs = policy(ike="aes128-sha1-modp2048").ike_proposals
    candidates = [mirror(p, name, remote_address=None, ike_proposals=theirs)
                  for name in ("one", "two")]
    pair = Pair(p, mirror(p))
    pair.b.endpoint = Ikev2Endpoint(candidates, SeededRandomSource(3))
    pair.connect()
    assert pair.b.of(ExchangeFailed) == []
    lines = [e.message for e in pair.b.of(LogMessage) if "refused IKE_SA_INIT" in e.message]
    assert lines and "one, two" in lines[0] and A_ADDR in lines[0]
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"  # still answered


def test_refused_ike_sa_init_is_reported_to_the_one_dynamic_peer_it_concerns() -> None:
    p = policy(ike="aes256gcm16-prfsha256-x25519")
    theirs = policy(ike="aes128-sha1-modp2048").ike_proposals
    pair = Pair(p, mirror(p, remote_address=None, ike_proposals=theirs))
    pair.connect()
    (refused,) = pair.b.of(ExchangeFailed)
    assert refused.peer == "peer" and refused.notify == "NO_PROPOSAL_CHOSEN"


def test_malformed_ike_sa_init_is_not_pinned_on_a_dynamic_peer() -> None:
    """A request without an SA payload is nobody's configuration problem."""
    p = policy()
    pair = Pair(p, mirror(p, remote_address=None))
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    message = decode_message(request.data)
    stripped = replace(message, payloads=[(kind, payload) for kind, payload in message.payloads
                                          if kind != PayloadType.SA])
    pair.b.endpoint.receive(encode_message(stripped), Address(B_ADDR, 500),
                            Address(A_ADDR, 500), pair.now)
    assert not [e for e in pair.b.endpoint.pop_events() if isinstance(e, ExchangeFailed)]
    assert pair.b.endpoint.pop_datagrams()  # the sender is still told (INVALID_SYNTAX)


def test_refusal_from_elsewhere_leaves_a_dynamic_peer_that_is_up_alone() -> None:
    p = policy()
    pair = Pair(p, mirror(p, remote_address=None))
    pair.connect()
    assert pair.b.of(IkeSaUp)
    scanner = Pair(policy(ike="aes128-sha1-modp2048"), mirror(p)).a.endpoint
    scanner.connect("peer", Address(SCANNER, 500), Address(B_ADDR, 500), pair.now)
    [request] = scanner.pop_datagrams()
    pair.b.endpoint.receive(request.data, Address(B_ADDR, 500), Address(SCANNER, 500),
                            pair.now)
    events = pair.b.endpoint.pop_events()
    assert not [e for e in events if isinstance(e, ExchangeFailed)]
    assert any(isinstance(e, LogMessage) and SCANNER in e.message for e in events)


def test_esp_mismatch_closes_the_ike_sa() -> None:
    p = policy(esp="aes256gcm16")
    pair = Pair(p, mirror(p, esp_proposals=policy(esp="aes128-sha1").esp_proposals))
    pair.connect()
    assert not pair.a.of(ChildSaInstalled) and not pair.b.of(ChildSaInstalled)
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.NO_PROPOSAL
    assert pair.b.of(IkeSaDown)[0].reason == DownReason.DELETED_BY_PEER


def test_invalid_ke_payload_retry_uses_the_responders_group() -> None:
    p = policy(ike="aes256-sha256-x25519-modp2048")
    pair = Pair(p, mirror(p, ike_proposals=policy(ike="aes256-sha256-modp2048").ike_proposals))
    pair.connect()
    _established(pair)
    assert "MODP_2048" in pair.a.of(IkeSaUp)[0].info.algorithms
    assert len(pair.a.sent) == 3  # two IKE_SA_INIT requests, one IKE_AUTH
    assert not pair.b.of(ExchangeFailed)  # asking for another group is no failure


def test_cookie_challenge_when_half_open_threshold_reached() -> None:
    p = policy()
    pair = Pair(p, mirror(p), cookie_threshold=0)
    pair.connect()
    _established(pair)
    assert pair.b.endpoint.cookies_sent == 1
    assert len(pair.a.sent) == 3


def test_lost_first_message_is_retransmitted() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    dropped: list[bytes] = []

    def drop_first(side: object, data: bytes) -> bool:
        if not dropped:
            dropped.append(data)
            return True
        return False

    pair.drop = drop_first
    pair.connect()
    assert not pair.a.of(IkeSaUp)
    pair.advance(5)
    _established(pair)
    assert pair.a.sent[1].data == dropped[0]  # the same bytes went out again


def test_duplicated_requests_get_the_cached_response() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.duplicate = True
    pair.connect()
    _established(pair)
    # B answered each duplicate with the same cached bytes.
    responses = [d.data for d in pair.b.sent]
    assert len(responses) == 4 and responses[0] == responses[1] and responses[2] == responses[3]


def test_no_answer_gives_up_after_the_retransmit_schedule() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.drop = lambda side, data: True
    pair.connect()
    pair.advance(200)
    sends = [d for d in pair.a.sent]
    assert len(sends) >= 6  # first try plus five retransmissions, then re-establish
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.TIMEOUT


def test_transport_mode() -> None:
    p = policy(mode="transport", esp="aes128gcm16")
    pair = Pair(p, mirror(p))
    pair.connect()
    a, b = _established(pair)
    assert a.info.mode == b.info.mode == "transport"
    assert a.info.local_ts == ("198.51.100.1/32",)


def test_mode_mismatch_is_refused() -> None:
    p = policy(mode="transport")
    pair = Pair(p, mirror(p, mode="tunnel"))
    pair.connect()
    assert not pair.a.of(ChildSaInstalled)
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"


def test_remote_id_mismatch_fails_authentication() -> None:
    p = policy()
    from core.ike.policy import Identity

    pair = Pair(p, mirror(p, remote_id=Identity.parse("fqdn:someone.else")))
    pair.connect()
    assert pair.b.of(IkeSaDown)[0].reason == DownReason.AUTH_FAILED
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.AUTH_FAILED


def test_disconnect_deletes_both_sides() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    pair.a.endpoint.disconnect("peer", pair.now)
    pair.deliver()
    assert pair.a.of(IkeSaDown)[-1].reason == DownReason.DELETED_BY_US
    assert pair.b.of(IkeSaDown)[-1].reason == DownReason.DELETED_BY_PEER
    assert pair.b.endpoint.current_sa("peer") is None
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is None or sa.state == IkeState.DESTROYED


def test_unsupported_critical_payload_in_ike_sa_init_is_answered() -> None:
    from core.ike.constants import NotifyType
    from core.ike.events import Address
    from core.ike.v2.message import decode_message
    from tests.ike.v2.pair import A_ADDR, B_ADDR

    p = policy()
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    request = pair.a.endpoint.pop_datagrams()[0].data
    # Append a critical payload of unknown type 200 to the chain: re-link the last payload.
    tail = bytes([0, 0x80, 0, 8]) + b"\x00" * 4
    body = bytearray(request + tail)
    offset = 28
    next_type = body[16]
    while True:
        length = int.from_bytes(body[offset + 2 : offset + 4], "big")
        if body[offset] == 0 and offset + length == len(request):
            body[offset] = 200
            break
        next_type = body[offset]
        offset += length
    assert next_type  # walked at least one payload
    body[24:28] = len(body).to_bytes(4, "big")
    pair.b.endpoint.receive(bytes(body), Address(B_ADDR, 500), Address(A_ADDR, 500), pair.now)
    answers = pair.b.endpoint.pop_datagrams()
    assert len(answers) == 1
    answer = decode_message(answers[0].data)
    note = answer.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert note is not None and note.data == bytes([200])
    assert pair.b.endpoint.half_open_count == 0
