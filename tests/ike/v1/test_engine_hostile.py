"""Hostile or unexpected messages on an established ISAKMP SA: each gets the RFC's answer
(a protected notify, or silence) and an event, and the SA survives."""

from __future__ import annotations

from core.ike.events import (
    Address,
    ChildSaDeleted,
    ExchangeFailed,
    IkeSaDown,
    LogMessage,
)
from core.ike.v1 import informational
from core.ike.v1.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.v1.message import decode_message, peek_header
from core.ike.v1.payloads import (
    DeletePayload,
    HashPayload,
    NoncePayload,
    NotifyPayload,
    PayloadList,
    encode_chain,
)
from core.ike.v1.sa import IsakmpSa
from tests.ike.v1.pair import A_ADDR, B_ADDR, Pair, mirror, policy

FROM_A = (Address(B_ADDR, 500), Address(A_ADDR, 500))  # (local, remote) at B


def _established() -> tuple[Pair, IsakmpSa, IsakmpSa]:
    p = policy(dpd_interval=0)
    pair = Pair(p, mirror(p))
    pair.connect()
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    pair.a.events.clear()
    pair.b.events.clear()
    return pair, sa_a, sa_b


def _protected(sa: IsakmpSa, exchange: ExchangeType, payloads: PayloadList, *,
               message_id: int = 0x1234, good_hash: bool = True) -> bytes:
    digest = sa.auth_hash(message_id.to_bytes(4, "big"), encode_chain(payloads))
    if not good_hash:
        digest = bytes(len(digest))
    data, _iv = sa.build(exchange, message_id, [(PayloadType.HASH, HashPayload(digest)),
                                                *payloads], sa.exchange_iv(message_id))
    return data


def _answers(pair: Pair, sa_b: IsakmpSa) -> list[NotifyPayload]:
    """The notifies B sent back (B's informational messages, opened with B's keys)."""
    found: list[NotifyPayload] = []
    for datagram in pair.b.endpoint.pop_datagrams():
        header = peek_header(datagram.data)
        if header.exchange == ExchangeType.INFORMATIONAL:
            message = decode_message(datagram.data, sa_b.cipher,
                                     sa_b.exchange_iv(header.message_id))
            found += message.notifies()
    return found


def test_unsupported_exchange_gets_unsupported_exchange_type() -> None:
    pair, sa_a, sa_b = _established()
    data = _protected(sa_a, ExchangeType.TRANSACTION, [])
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    assert [n.notify_type for n in _answers(pair, sa_b)] == [
        NotifyType.UNSUPPORTED_EXCHANGE_TYPE]
    assert any("unsupported TRANSACTION" in e.message
               for e in pair.b.endpoint.pop_events() if isinstance(e, LogMessage))
    assert sa_b.is_established


def test_quick_mode_with_a_bad_hash_is_refused() -> None:
    pair, sa_a, sa_b = _established()
    data = _protected(sa_a, ExchangeType.QUICK, [(PayloadType.NONCE, NoncePayload(b"n" * 16))],
                      good_hash=False)
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    assert [n.notify_type for n in _answers(pair, sa_b)] == [
        NotifyType.INVALID_HASH_INFORMATION]
    failed = [e for e in pair.b.endpoint.pop_events() if isinstance(e, ExchangeFailed)]
    assert failed and failed[0].exchange == "QUICK" and "HASH(1)" in failed[0].message
    assert sa_b.is_established and len(sa_b.children) == 1


def test_quick_mode_without_an_sa_payload_is_malformed() -> None:
    pair, sa_a, sa_b = _established()
    data = _protected(sa_a, ExchangeType.QUICK, [(PayloadType.NONCE, NoncePayload(b"n" * 16))])
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    assert [n.notify_type for n in _answers(pair, sa_b)] == [NotifyType.PAYLOAD_MALFORMED]
    assert sa_b.is_established


def test_informational_with_a_bad_hash_is_ignored() -> None:
    pair, sa_a, sa_b = _established()
    delete: PayloadList = [(PayloadType.DELETE, DeletePayload(ProtocolId.ISAKMP, (sa_a.cookies,)))]
    pair.b.endpoint.receive(_protected(sa_a, ExchangeType.INFORMATIONAL, delete,
                                       good_hash=False), *FROM_A, pair.now)
    events = pair.b.endpoint.pop_events()
    assert not _answers(pair, sa_b) and sa_b.is_established
    assert any(isinstance(e, LogMessage) and "HASH(1)" in e.message for e in events)
    assert not any(isinstance(e, IkeSaDown) for e in events)


def test_unprotected_delete_on_an_established_sa_is_ignored() -> None:
    pair, sa_a, sa_b = _established()
    data, _iv = sa_a.build(ExchangeType.INFORMATIONAL, 7, [(PayloadType.DELETE, DeletePayload(
        ProtocolId.ISAKMP, (sa_a.cookies,)))])
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    assert sa_b.is_established
    assert any("unprotected" in e.message for e in pair.b.endpoint.pop_events()
               if isinstance(e, LogMessage))


def test_replayed_informational_is_dropped() -> None:
    pair, sa_a, sa_b = _established()
    child = sa_b.children[0]
    delete: PayloadList = [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP,
                                                 (child.spi_out.to_bytes(4, "big"),)))]
    data = _protected(sa_a, ExchangeType.INFORMATIONAL, delete)
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    events = pair.b.endpoint.pop_events()
    assert len([e for e in events if isinstance(e, ChildSaDeleted)]) == 1
    assert any("duplicated" in e.message for e in events if isinstance(e, LogMessage))


def test_delete_for_an_unknown_spi_is_logged() -> None:
    pair, sa_a, _sa_b = _established()
    unknown = DeletePayload(ProtocolId.ESP, (b"\xde\xad\xbe\xef",))
    delete: PayloadList = [(PayloadType.DELETE, unknown)]
    pair.b.endpoint.receive(_protected(sa_a, ExchangeType.INFORMATIONAL, delete), *FROM_A,
                            pair.now)
    events = pair.b.endpoint.pop_events()
    assert not any(isinstance(e, ChildSaDeleted) for e in events)
    assert any("unknown IPsec SA deadbeef" in e.message for e in events
               if isinstance(e, LogMessage))


def test_r_u_there_is_acknowledged_with_its_sequence_number_only_for_our_sa() -> None:
    pair, sa_a, sa_b = _established()
    for spi, message_id in ((sa_a.cookies, 1), (bytes(16), 2)):
        note = NotifyPayload(NotifyType.R_U_THERE, ProtocolId.ISAKMP, spi, b"\x00\x00\x01\x02")
        pair.b.endpoint.receive(_protected(sa_a, ExchangeType.INFORMATIONAL,
                                           [(PayloadType.NOTIFY, note)], message_id=message_id),
                                *FROM_A, pair.now)
    acks = _answers(pair, sa_b)
    assert [(n.notify_type, n.data) for n in acks] == [(NotifyType.R_U_THERE_ACK,
                                                        b"\x00\x00\x01\x02")]


def test_error_notify_for_no_exchange_is_logged() -> None:
    pair, sa_a, sa_b = _established()
    note = NotifyPayload(NotifyType.INVALID_SPI, ProtocolId.ESP, b"\x01\x02\x03\x04")
    pair.b.endpoint.receive(_protected(sa_a, ExchangeType.INFORMATIONAL,
                                       [(PayloadType.NOTIFY, note)]), *FROM_A, pair.now)
    assert any("peer reported INVALID_SPI" in e.message for e in pair.b.endpoint.pop_events()
               if isinstance(e, LogMessage))
    assert sa_b.is_established


def test_phase1_message_with_a_message_id_is_dropped() -> None:
    pair, sa_a, sa_b = _established()
    data, _iv = sa_a.build(ExchangeType.MAIN, 5, [(PayloadType.NONCE, NoncePayload(b"n" * 16))])
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    assert any("message ID" in e.message for e in pair.b.endpoint.pop_events()
               if isinstance(e, LogMessage))
    assert not pair.b.endpoint.pop_datagrams() and sa_b.is_established


def test_new_main_mode_message_on_an_established_sa_is_dropped() -> None:
    pair, sa_a, sa_b = _established()
    data, _iv = sa_a.build(ExchangeType.MAIN, 0, [(PayloadType.NONCE, NoncePayload(b"n" * 16))])
    pair.b.endpoint.receive(data, *FROM_A, pair.now)
    assert any("after done" in e.message for e in pair.b.endpoint.pop_events()
               if isinstance(e, LogMessage))
    assert sa_b.is_established


def test_delete_of_the_isakmp_sa_ends_it_and_its_ipsec_sas() -> None:
    pair, sa_a, sa_b = _established()
    informational.send_delete_all(sa_a, pair.now)
    pair.a.endpoint._collect(sa_a, pair.now)
    pair.deliver()
    assert [e.reason for e in pair.b.of(ChildSaDeleted)] == ["deleted by peer"]
    assert not sa_b.is_established
