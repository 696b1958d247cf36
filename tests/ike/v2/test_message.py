"""Whole IKEv2 messages: golden packets, SK protection, truncation and mutation."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from core.crypto.random import RandomSource
from core.errors import DecodeError, IntegrityError, PeerError, UsageError
from core.ike.constants import (
    DhGroup,
    EncrId,
    ExchangeType,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from core.ike.errors import InvalidSyntax, MissingKeys, UnsupportedCriticalPayload
from core.ike.v2.message import MAX_MESSAGE_LENGTH, Message, decode_message, encode_message
from core.ike.v2.payloads import (
    DeletePayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
)
from tests.ike.v2.strategies import payload_chains

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> bytes:
    """The octets of an annotated hex file: '#' starts a comment, whitespace is ignored."""
    lines = (line.split("#", 1)[0] for line in (GOLDEN / name).read_text().splitlines())
    return bytes.fromhex("".join("".join(lines).split()))


class FixedRandom:
    """A RandomSource whose bytes count up from 1, so IVs are predictable."""

    def __init__(self) -> None:
        self.counter = 0

    def bytes(self, n: int) -> bytes:
        self.counter += 1
        return self.counter.to_bytes(n, "big")

    def uniform(self, low: float, high: float) -> float:
        return low


class GcmTestProtector:
    """A stand-in for the real IkeProtector: AES-128-GCM with a fixed key, laid out as
    RFC 5282 says (8-octet IV, salt | IV nonce, 16-octet ICV), no padding, Pad Length 0."""

    def __init__(self, key: bytes = bytes(range(16)), salt: bytes = b"\xa0\xa1\xa2\xa3") -> None:
        self._aead = AESGCM(key)
        self._salt = salt

    def sealed_length(self, plaintext_len: int) -> int:
        return 8 + plaintext_len + 1 + 16

    def seal(self, associated: bytes, plaintext: bytes, rng: RandomSource) -> bytes:
        iv = rng.bytes(8)
        return iv + self._aead.encrypt(self._salt + iv, plaintext + b"\x00", associated)

    def open(self, associated: bytes, body: bytes) -> bytes:
        if len(body) < 8 + 1 + 16:
            raise DecodeError(f"SK body of {len(body)} octets")
        try:
            padded = self._aead.decrypt(self._salt + body[:8], body[8:], associated)
        except InvalidTag:
            raise IntegrityError("ICV mismatch") from None
        if padded[-1] + 1 > len(padded):
            raise DecodeError("Pad Length too large")
        return padded[: -padded[-1] - 1]


SPI_I = bytes.fromhex("5f2d7a1c9e4b8306")
SPI_R = bytes.fromhex("9a8b7c6d5e4f3021")


def nat_hash(host: str, spi_r: bytes = bytes(8)) -> bytes:
    address = ipaddress.ip_address(host).packed
    return hashlib.sha1(SPI_I + spi_r + address + (500).to_bytes(2, "big")).digest()


# -- golden packets -----------------------------------------------------------------------


def test_golden_ike_sa_init_request() -> None:
    data = golden("ike_sa_init_request.hex")
    msg = decode_message(data)
    assert (msg.spi_i, msg.spi_r, msg.message_id) == (SPI_I, bytes(8), 0)
    assert msg.exchange_type is ExchangeType.IKE_SA_INIT
    assert msg.is_initiator and not msg.is_response and not msg.encrypted
    assert [t for t, _ in msg.payloads] == [33, 34, 40, 41, 41]

    sa = msg.require(PayloadType.SA, SaPayload)
    (proposal,) = sa.proposals
    assert (proposal.number, proposal.protocol, proposal.spi) == (1, ProtocolId.IKE, b"")
    assert proposal.transforms == (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.DH, DhGroup.CURVE25519),
    )
    ke = msg.require(PayloadType.KE, KePayload)
    assert ke.group == DhGroup.CURVE25519
    assert ke.data.hex().startswith("8520f009") and len(ke.data) == 32
    assert msg.require(PayloadType.NONCE, NoncePayload).data == bytes(range(32))
    source = msg.notify(NotifyType.NAT_DETECTION_SOURCE_IP)
    destination = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    assert source is not None and source.data == nat_hash("198.51.100.1")
    assert destination is not None and destination.data == nat_hash("203.0.113.1")
    assert [n.notify_type for n in msg.notifies()] == [16388, 16389]
    assert msg.notify(NotifyType.COOKIE) is None
    assert msg.describe() == (
        "IKE_SA_INIT request 0 [ SA KE NONCE N(NAT_DETECTION_SOURCE_IP) "
        "N(NAT_DETECTION_DESTINATION_IP) ]"
    )
    assert encode_message(msg) == data


def test_golden_protected_informational() -> None:
    data = golden("informational_delete.hex")
    inner = golden("informational_delete_inner.hex")
    protector = GcmTestProtector()
    assert protector.open(data[:32], data[32:]) == inner

    msg = decode_message(data, protector)
    assert (msg.spi_i, msg.spi_r, msg.message_id) == (SPI_I, SPI_R, 2)
    assert msg.exchange_type is ExchangeType.INFORMATIONAL
    assert msg.is_initiator and not msg.is_response and msg.encrypted
    assert msg.payloads == [
        (
            PayloadType.DELETE,
            DeletePayload(ProtocolId.ESP, (b"\xc0\xff\xee\x01", b"\xc0\xff\xee\x02")),
        )
    ]
    assert msg.get_all(PayloadType.DELETE, DeletePayload)[0].protocol is ProtocolId.ESP
    assert encode_message(msg, protector, FixedRandom()) == data


def test_empty_informational_is_an_empty_sk_payload() -> None:
    msg = Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, False, True, 7)
    data = encode_message(msg, GcmTestProtector(), FixedRandom())
    assert data[16] == PayloadType.SK and data[28] == 0  # SK's next payload: none
    assert len(data) == 28 + 4 + 8 + 1 + 16
    decoded = decode_message(data, GcmTestProtector())
    assert decoded == Message(SPI_I, SPI_R, 37, False, True, 7, [], encrypted=True)


# -- round trips and property tests ------------------------------------------------------

messages = st.builds(
    Message,
    spi_i=st.binary(min_size=8, max_size=8),
    spi_r=st.binary(min_size=8, max_size=8),
    exchange_type=st.sampled_from(ExchangeType) | st.integers(0, 255),
    is_initiator=st.booleans(),
    is_response=st.booleans(),
    message_id=st.integers(0, 2**32 - 1),
    payloads=payload_chains,
)


@given(messages)
def test_plain_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@given(messages)
def test_protected_round_trip(msg: Message) -> None:
    data = encode_message(msg, GcmTestProtector(), FixedRandom())
    msg.encrypted = True
    assert decode_message(data, GcmTestProtector()) == msg


@pytest.mark.parametrize("name", ["ike_sa_init_request.hex", "informational_delete.hex"])
def test_every_truncation_is_a_decode_error(name: str) -> None:
    data = golden(name)
    for size in range(len(data)):
        with pytest.raises(DecodeError):
            decode_message(data[:size], GcmTestProtector())


@given(messages, st.booleans(), st.data())
def test_mutated_messages_raise_only_project_errors(
    msg: Message, protect: bool, data: st.DataObject
) -> None:
    protector = GcmTestProtector() if protect else None
    encoded = bytearray(encode_message(msg, protector, FixedRandom()))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_message(bytes(encoded), protector)
    except PeerError:
        return
    assert len(decoded.spi_i) == len(decoded.spi_r) == 8


# -- lying lengths and bad structure ------------------------------------------------------

INIT = golden("ike_sa_init_request.hex")


def with_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(4, "big") + data[offset + 4 :]


def with_u16(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(2, "big") + data[offset + 2 :]


@pytest.mark.parametrize("length", [0, 27, 28, len(INIT) - 1, len(INIT) + 1, 0xFFFFFFFF])
def test_lying_message_length(length: int) -> None:
    with pytest.raises(InvalidSyntax):
        decode_message(with_u32(INIT, 24, length))


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (30, 0),
        (30, 3),
        (30, 39),
        (30, 41),
        (30, 0xFFFF),  # SA payload
        (34, 0),
        (34, 35),
        (34, 37),  # its proposal
        (42, 0),
        (42, 11),
        (42, 13),  # its first transform
        (70, 0),
        (70, 4),
        (70, 39),
        (70, 41),  # KE payload
        (174, 27),
        (174, 29),  # last notify
    ],
)
def test_lying_payload_lengths(offset: int, length: int) -> None:
    with pytest.raises(InvalidSyntax):
        decode_message(with_u16(INIT, offset, length))


def test_lying_sk_length() -> None:
    data = golden("informational_delete.hex")
    for length in (0, 3, 44, 46):
        with pytest.raises(InvalidSyntax):
            decode_message(with_u16(data, 30, length), GcmTestProtector())


def plain(payloads: Sequence[tuple[int, Payload]]) -> Message:
    return Message(SPI_I, bytes(8), ExchangeType.IKE_SA_INIT, True, False, 0, list(payloads))


def test_unknown_non_critical_payload_is_kept_for_skipping() -> None:
    nonce = (PayloadType.NONCE, NoncePayload(bytes(16)))
    odd = (222, UnknownPayload(222, False, b"future"))
    msg = decode_message(encode_message(plain([odd, nonce])))
    assert msg.payloads == [odd, nonce]
    assert msg.get(PayloadType.NONCE) == nonce[1]


@pytest.mark.parametrize("protect", [False, True])
def test_unknown_critical_payload_is_refused(protect: bool) -> None:
    protector = GcmTestProtector() if protect else None
    odd = (222, UnknownPayload(222, True, b"future"))
    data = encode_message(plain([odd]), protector, FixedRandom())
    with pytest.raises(UnsupportedCriticalPayload) as info:
        decode_message(data, protector)
    assert info.value.payload_type == 222 and info.value.data == bytes([222])


def test_sk_without_keys() -> None:
    with pytest.raises(MissingKeys) as info:
        decode_message(golden("informational_delete.hex"))
    assert info.value.notify is None


def test_tampered_ciphertext() -> None:
    data = bytearray(golden("informational_delete.hex"))
    data[50] ^= 1
    with pytest.raises(IntegrityError):
        decode_message(bytes(data), GcmTestProtector())


def test_tampered_header_fails_the_icv() -> None:
    data = bytearray(golden("informational_delete.hex"))
    data[23] ^= 1  # message ID: part of the associated data
    with pytest.raises(IntegrityError):
        decode_message(bytes(data), GcmTestProtector())


def seal_raw(outer_first: int, outer: bytes, sk_first: int, inner: bytes) -> bytes:
    """A message with hand-made outer payloads followed by an SK payload around `inner`."""
    protector = GcmTestProtector()
    sealed_length = protector.sealed_length(len(inner))
    total = 28 + len(outer) + 4 + sealed_length
    header = SPI_I + SPI_R + bytes([outer_first, 0x20, 37, 0x08]) + bytes(4)
    header += total.to_bytes(4, "big")
    associated = header + outer + bytes([sk_first, 0]) + (4 + sealed_length).to_bytes(2, "big")
    return associated + protector.seal(associated, inner, FixedRandom())


def test_unencrypted_payload_beside_sk_is_refused() -> None:
    vendor = bytes([PayloadType.SK, 0, 0, 8]) + b"abcd"
    data = seal_raw(PayloadType.VENDOR_ID, vendor, 0, b"")
    with pytest.raises(InvalidSyntax):
        decode_message(data, GcmTestProtector())


def test_nested_sk_is_refused() -> None:
    data = seal_raw(PayloadType.SK, b"", PayloadType.SK, bytes([0, 0, 0, 8]) + b"abcd")
    with pytest.raises(InvalidSyntax):
        decode_message(data, GcmTestProtector())


def test_inner_chain_is_checked() -> None:
    data = seal_raw(PayloadType.SK, b"", PayloadType.NONCE, bytes([0, 0, 0, 8]) + b"abcd")
    with pytest.raises(InvalidSyntax):
        decode_message(data, GcmTestProtector())


# -- encoding refusals and getters --------------------------------------------------------


def test_encode_refuses_oversized_messages() -> None:
    too_big = [(PayloadType.VENDOR_ID, VendorIdPayload(bytes(40000)))] * 2
    with pytest.raises(UsageError):
        encode_message(plain(too_big))
    with pytest.raises(UsageError):
        encode_message(plain(too_big), GcmTestProtector(), FixedRandom())
    largest = [(PayloadType.VENDOR_ID, VendorIdPayload(bytes(MAX_MESSAGE_LENGTH - 32)))]
    assert len(encode_message(plain(largest))) == MAX_MESSAGE_LENGTH
    with pytest.raises(UsageError):
        encode_message(
            plain([(PayloadType.VENDOR_ID, VendorIdPayload(bytes(MAX_MESSAGE_LENGTH - 31)))])
        )


def test_encode_refuses_misuse() -> None:
    with pytest.raises(UsageError):
        encode_message(plain([]), GcmTestProtector())  # no random source for the IV
    with pytest.raises(UsageError):
        encode_message(Message(b"short", SPI_R, 37, True, False, 0))


def test_getters() -> None:
    cookie = NotifyPayload.of(NotifyType.COOKIE, b"c" * 8)
    msg = plain(
        [
            (PayloadType.NOTIFY, cookie),
            (PayloadType.NONCE, NoncePayload(bytes(16))),
            (PayloadType.NOTIFY, NotifyPayload.of(NotifyType.NAT_DETECTION_SOURCE_IP, bytes(20))),
        ]
    )
    assert msg.get(PayloadType.NOTIFY) == cookie
    assert msg.get(PayloadType.KE) is None
    assert len(msg.get_all(PayloadType.NOTIFY)) == 2
    assert msg.notify(NotifyType.COOKIE) == cookie
    assert msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP) is None
    with pytest.raises(InvalidSyntax):
        msg.require(PayloadType.SA, SaPayload)
    with pytest.raises(UsageError):
        msg.get(PayloadType.NONCE, SaPayload)
