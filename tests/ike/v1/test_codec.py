"""ISAKMP codec: payloads, SA structures, headers, encryption, and malformed input."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.crypto.ikev1 import CbcCipher
from core.errors import DecodeError
from core.ike.constants import IdType as CoreIdType
from core.ike.policy import Identity
from core.ike.v1.constants import (
    VID_NATT_DRAFT_02,
    VID_NATT_DRAFT_02N,
    VID_NATT_DRAFT_03,
    VID_NATT_RFC3947,
    ExchangeType,
    IdType,
    NotifyType,
    PayloadType,
    Phase1Attr,
    Phase1Encr,
    ProtocolId,
)
from core.ike.v1.errors import (
    BadProposalSyntax,
    EncryptedBodyError,
    InvalidFlags,
    InvalidIdInformation,
    InvalidMajorVersion,
    InvalidPayloadType,
    IsakmpError,
    MalformedMessage,
    MissingKeys,
    SituationNotSupported,
    UnequalPayloadLengths,
)
from core.ike.v1.ids import Selector, identity_of, identity_payload, selector_of
from core.ike.v1.message import Message, decode_message, encode_message, peek_header
from core.ike.v1.payloads import (
    Attribute,
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    PayloadList,
    Proposal,
    SaPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
    decode_chain,
    encode_chain,
)
from core.ike.v1.proposals import parse_phase1_transform

# The SA payload body of a recorded main mode offer (see vectors/ikev1_psk.txt): AES-128,
# SHA-1, PSK, MODP-1024, 28800 s as a basic attribute.
GOLDEN_SA_BODY = bytes.fromhex(
    "00000001000000010000002c01010001000000240101000080010007800e0080800200028004000280"
    "030001800b0001800c7080")
CKY_I, CKY_R = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")


def _all_payloads() -> PayloadList:
    transform = Transform(1, 1, (Attribute(Phase1Attr.ENCRYPTION, 7),
                                 Attribute.number(Phase1Attr.LIFE_DURATION, 86400)))
    return [
        (PayloadType.SA, SaPayload((Proposal(1, ProtocolId.ISAKMP, b"", (transform,)),))),
        (PayloadType.KE, KePayload(b"k" * 32)),
        (PayloadType.NONCE, NoncePayload(b"n" * 32)),
        (PayloadType.ID, IdPayload(IdType.FQDN, b"host.example", 17, 500)),
        (PayloadType.HASH, HashPayload(b"h" * 20)),
        (PayloadType.NOTIFY, NotifyPayload(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP,
                                           CKY_I + CKY_R, b"")),
        (PayloadType.DELETE, DeletePayload(ProtocolId.ESP, (b"\x00\x00\x01\x00", b"abcd"))),
        (PayloadType.VENDOR_ID, VendorIdPayload(VID_NATT_RFC3947)),
        (PayloadType.NAT_D, NatDPayload(b"d" * 20)),
        (PayloadType.NAT_OA, NatOaPayload(IdType.IPV4_ADDR, bytes(4))),
        (200, UnknownPayload(b"private")),
    ]


def _message(payloads: PayloadList | None = None, exchange: int = ExchangeType.MAIN,
             message_id: int = 0) -> Message:
    return Message(CKY_I, CKY_R, exchange, message_id, payloads or _all_payloads())


def test_golden_sa_payload_decodes_and_reencodes_byte_for_byte() -> None:
    chain = bytes((0, 0)) + (len(GOLDEN_SA_BODY) + 4).to_bytes(2, "big") + GOLDEN_SA_BODY
    payloads, raw = decode_chain(PayloadType.SA, chain)
    sa = payloads[0][1]
    assert isinstance(sa, SaPayload) and raw == [chain]
    (proposal,) = sa.proposals
    assert (proposal.number, proposal.protocol, proposal.spi) == (1, ProtocolId.ISAKMP, b"")
    (transform,) = proposal.transforms
    assert transform.get(Phase1Attr.KEY_LENGTH) == Attribute(Phase1Attr.KEY_LENGTH, 128)
    assert transform.get(Phase1Attr.LIFE_DURATION) == Attribute(Phase1Attr.LIFE_DURATION, 28800)
    assert sa.encode() == GOLDEN_SA_BODY
    # MODP-1024 (group 2) is not offered by this implementation: the transform is unusable.
    assert parse_phase1_transform(transform) is None


def test_every_payload_round_trips_through_a_chain() -> None:
    payloads = _all_payloads()
    data = encode_chain(payloads)
    decoded, raw = decode_chain(PayloadType.SA, data)
    assert decoded == payloads
    assert b"".join(raw) == data


def test_attribute_forms() -> None:
    assert Attribute(1, 7).encode() == bytes.fromhex("80010007")
    assert Attribute(12, b"\x00\x01\x51\x80").encode() == bytes.fromhex("000c000400015180")
    assert Attribute.number(12, 28800).value == 28800
    big = Attribute.number(12, 86400)
    assert big.value == (86400).to_bytes(4, "big") and big.as_int() == 86400
    with pytest.raises(MalformedMessage):
        Attribute(12, bytes(9)).as_int()


def test_vendor_ids_are_md5_of_their_names() -> None:
    for vid, name in ((VID_NATT_RFC3947, b"RFC 3947"),
                      (VID_NATT_DRAFT_03, b"draft-ietf-ipsec-nat-t-ike-03"),
                      (VID_NATT_DRAFT_02, b"draft-ietf-ipsec-nat-t-ike-02"),
                      (VID_NATT_DRAFT_02N, b"draft-ietf-ipsec-nat-t-ike-02\n")):
        assert vid == hashlib.md5(name).digest()


def test_plain_message_round_trip_and_header() -> None:
    data = encode_message(_message())
    header = peek_header(data)
    assert (header.cky_i, header.cky_r, header.exchange) == (CKY_I, CKY_R, ExchangeType.MAIN)
    assert header.length == len(data) and header.version == 0x10 and not header.encrypted
    assert decode_message(data).payloads == _all_payloads()


def test_encrypted_message_round_trip_pads_and_chains_the_iv() -> None:
    cipher = CbcCipher(Phase1Encr.AES_CBC, bytes(range(16)))
    iv = bytes(16)
    payloads: PayloadList = [(PayloadType.HASH, HashPayload(b"h" * 20)),
                             (PayloadType.NOTIFY, NotifyPayload(NotifyType.R_U_THERE,
                                                                ProtocolId.ISAKMP, b"", b"1234"))]
    data = encode_message(_message(payloads, ExchangeType.INFORMATIONAL, 7), cipher, iv)
    assert (len(data) - 28) % 16 == 0 and data[19] & 1
    message = decode_message(data, cipher, iv)
    assert message.payloads == payloads and message.next_iv == data[-16:]
    # Zero padding after the chain is allowed in an encrypted body only.
    plain_body = cipher.decrypt(iv, data[28:])
    assert plain_body.endswith(bytes(len(plain_body) - len(encode_chain(payloads))))
    with pytest.raises(MissingKeys):
        decode_message(data)
    with pytest.raises(EncryptedBodyError):
        bad = data[:-1]
        decode_message(bad[:24] + len(bad).to_bytes(4, "big") + bad[28:], cipher, iv)


def test_every_truncation_is_a_decode_error() -> None:
    data = encode_message(_message())
    for cut in range(len(data)):
        short = data[:cut]
        if cut >= 28:
            short = short[:24] + cut.to_bytes(4, "big") + short[28:]
        with pytest.raises(DecodeError):
            decode_message(short)


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda d: d[:17] + b"\x20" + d[18:], InvalidMajorVersion),
    (lambda d: d[:19] + b"\x80" + d[20:], InvalidFlags),
    (lambda d: d[:24] + (len(d) + 1).to_bytes(4, "big") + d[28:], MalformedMessage),
    (lambda d: d + b"\x00", UnequalPayloadLengths),
])
def test_header_faults(mutate: object, error: type[Exception]) -> None:
    data = encode_message(_message([(PayloadType.NONCE, NoncePayload(b"n" * 16))]))
    fresh = mutate(data)  # type: ignore[operator]
    if error is UnequalPayloadLengths:
        fresh = fresh[:24] + len(fresh).to_bytes(4, "big") + fresh[28:]
    with pytest.raises(error):
        decode_message(fresh)


def _chain(kind: int, body: bytes) -> bytes:
    return bytes((0, 0)) + (len(body) + 4).to_bytes(2, "big") + body


@pytest.mark.parametrize(("kind", "body", "error"), [
    (PayloadType.NONCE, b"short", MalformedMessage),
    (PayloadType.NONCE, bytes(257), MalformedMessage),
    (PayloadType.HASH, b"", MalformedMessage),
    (PayloadType.DELETE, bytes.fromhex("00000001030400020000000111"), MalformedMessage),
    (PayloadType.DELETE, bytes.fromhex("0000000103040000"), MalformedMessage),
    (PayloadType.NOTIFY, bytes.fromhex("0000000101ff0018"), MalformedMessage),
    (PayloadType.SA, bytes.fromhex("0000000100000002"), SituationNotSupported),
    (PayloadType.SA, bytes.fromhex("0000000100000001"), BadProposalSyntax),
    # A proposal announcing two transforms that carries one.
    (PayloadType.SA, bytes.fromhex("00000001000000010000001001010002000000080101000"
                                   "0"), BadProposalSyntax),
    # A proposal chain continued by a transform type.
    (PayloadType.SA, bytes.fromhex("00000001000000010300001001010001000000080101000"
                                   "0"), BadProposalSyntax),
    (14, b"reserved type", InvalidPayloadType),
    (PayloadType.PROPOSAL, b"outside an SA", InvalidPayloadType),
])
def test_payload_faults(kind: int, body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_chain(kind, _chain(kind, body))


def test_lying_payload_length() -> None:
    data = bytearray(encode_chain([(PayloadType.NONCE, NoncePayload(b"n" * 16))]))
    data[2:4] = (3).to_bytes(2, "big")
    with pytest.raises(UnequalPayloadLengths):
        decode_chain(PayloadType.NONCE, bytes(data))
    data[2:4] = (200).to_bytes(2, "big")
    with pytest.raises(UnequalPayloadLengths):
        decode_chain(PayloadType.NONCE, bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for candidate in (data, CKY_I + CKY_R + bytes((1, 0x10, 2, 0)) + bytes(4)
                      + (28 + len(data)).to_bytes(4, "big") + data):
        try:
            outcome: object = decode_message(candidate)
        except (DecodeError, IsakmpError) as error:
            outcome = error
        assert isinstance(outcome, Message | DecodeError | IsakmpError)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=255), st.binary(max_size=120))
def test_random_chains_raise_only_decode_errors(first: int, data: bytes) -> None:
    try:
        outcome: object = decode_chain(first, data)
    except DecodeError as error:
        outcome = error
    assert isinstance(outcome, tuple | DecodeError)


# -- identification ---------------------------------------------------------------------------
def test_identity_payloads() -> None:
    for text in ("198.51.100.1", "fqdn:gw.example", "user:ops@example.org", "keyid:0a0b",
                 "2001:db8::1"):
        identity = Identity.parse(text)
        assert identity_of(identity_payload(identity)) == identity
    assert identity_of(IdPayload(IdType.IPV4_ADDR, bytes(4), 17, 500)).id_type == \
        CoreIdType.IPV4_ADDR
    for bad in (IdPayload(IdType.IPV4_ADDR, bytes(5)), IdPayload(IdType.FQDN, b"x", 6, 80),
                IdPayload(IdType.IPV4_ADDR_SUBNET, bytes(8)), IdPayload(IdType.FQDN, b"")):
        with pytest.raises(InvalidIdInformation):
            identity_of(bad)


def test_selectors() -> None:
    anything = Selector.of_network(ipaddress.IPv4Network("0.0.0.0/0"))
    payload = anything.payload()
    assert payload == IdPayload(IdType.IPV4_ADDR_SUBNET, bytes(8))
    assert selector_of(payload) == anything and anything.describe() == "0.0.0.0/0"
    host = selector_of(IdPayload(IdType.IPV4_ADDR, bytes((10, 0, 0, 1))))
    assert host.within(anything) and not anything.within(host)
    assert host.payload().id_type == IdType.IPV4_ADDR
    odd = selector_of(IdPayload(IdType.IPV4_ADDR_RANGE, bytes((10, 0, 0, 1, 10, 0, 0, 5))))
    assert odd.describe() == "10.0.0.1-10.0.0.5" and selector_of(odd.payload()) == odd
    for bad in (IdPayload(IdType.IPV4_ADDR_SUBNET, bytes((10, 0, 0, 0, 255, 0, 255, 0))),
                IdPayload(IdType.IPV4_ADDR_RANGE, bytes((10, 0, 0, 5, 10, 0, 0, 1))),
                IdPayload(IdType.IPV6_ADDR, bytes(16)), IdPayload(IdType.FQDN, b"x.example")):
        with pytest.raises(InvalidIdInformation):
            selector_of(bad)
