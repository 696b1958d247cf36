"""IKEv2 payload codecs (RFC 7296 3.2-3.16): round trips, hand-built bytes, bad input."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.buffer import Buffer
from core.errors import DecodeError, UsageError
from core.ike.constants import (
    EncrId,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformType,
    TsType,
)
from core.ike.errors import IkeError, InvalidSyntax, UnsupportedCriticalPayload
from core.ike.v2.payloads import (
    DeletePayload,
    EncryptedPayload,
    IdPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnknownPayload,
    VendorIdPayload,
    pull_payload_body,
    pull_payload_chain,
    push_payload_body,
    push_payload_chain,
)
from tests.ike.v2.strategies import payload_chains, typed_payloads


def generic(
    next_type: int, body: bytes, *, critical: bool = False, length: int | None = None
) -> bytes:
    """A generic payload header (RFC 7296 3.2) followed by `body`."""
    size = 4 + len(body) if length is None else length
    return bytes([next_type, 0x80 if critical else 0]) + size.to_bytes(2, "big") + body


def pull_body(payload_type: int, body: bytes) -> Payload:
    return pull_payload_body(Buffer(body), payload_type, False)


def chain(first_type: int, data: bytes) -> list[tuple[int, Payload]]:
    return pull_payload_chain(Buffer(data), first_type)


# -- round trips --------------------------------------------------------------------------


@given(typed_payloads)
def test_body_round_trip(typed: tuple[int, Payload]) -> None:
    payload_type, payload = typed
    buf = Buffer()
    push_payload_body(buf, payload_type, payload)
    assert pull_body(payload_type, buf.data()) == payload


@given(payload_chains)
def test_chain_round_trip(payloads: list[tuple[int, Payload]]) -> None:
    first, data = push_payload_chain(payloads)
    assert first == (payloads[0][0] if payloads else 0)
    assert chain(first, data) == payloads


@given(payload_chains.filter(bool))
def test_every_truncated_chain_is_a_decode_error(payloads: list[tuple[int, Payload]]) -> None:
    first, data = push_payload_chain(payloads)
    for size in range(len(data)):
        with pytest.raises(DecodeError):
            chain(first, data[:size])


@given(payload_chains.filter(bool), st.data())
def test_mutated_chains_raise_only_project_errors(
    payloads: list[tuple[int, Payload]], data: st.DataObject
) -> None:
    first, encoded = push_payload_chain(payloads)
    mutated = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = chain(first, bytes(mutated))
    except (DecodeError, IkeError):
        return
    assert all(isinstance(t, int) and dataclasses.is_dataclass(p) for t, p in decoded)


# -- SA payload (RFC 7296 3.3) ------------------------------------------------------------


def transform(ttype: int, tid: int, attrs: bytes = b"", last: int = 0) -> bytes:
    return (
        bytes([last, 0])
        + (8 + len(attrs)).to_bytes(2, "big")
        + bytes([ttype, 0])
        + (tid.to_bytes(2, "big") + attrs)
    )


KEY_256 = bytes.fromhex("800e0100")  # AF=1, type 14 (key length), 256


def proposal(
    body: bytes,
    *,
    number: int = 1,
    protocol: int = 1,
    spi: bytes = b"",
    count: int,
    last: int = 0,
    length: int | None = None,
) -> bytes:
    size = 8 + len(spi) + len(body) if length is None else length
    header = bytes([last, 0]) + size.to_bytes(2, "big")
    return header + bytes([number, protocol, len(spi), count]) + spi + body


IKE_TRANSFORMS = (
    transform(1, 20, KEY_256, last=3)  # ENCR AES-GCM-16 256
    + transform(2, 5, last=3)  # PRF HMAC-SHA2-256
    + transform(4, 31)  # DH Curve25519
)


def test_sa_golden() -> None:
    esp = (
        transform(1, 12, bytes.fromhex("800e0080"), last=3)
        + transform(3, 12, last=3)
        + (transform(5, 0))
    )
    body = proposal(IKE_TRANSFORMS, count=3, last=2) + proposal(
        esp, number=2, protocol=3, spi=b"\xc0\x01\x02\x03", count=3
    )
    sa = pull_body(PayloadType.SA, body)
    assert sa == SaPayload(
        (
            Proposal(
                1,
                ProtocolId.IKE,
                b"",
                (
                    Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
                    Transform(TransformType.PRF, 5),
                    Transform(TransformType.DH, 31),
                ),
            ),
            Proposal(
                2,
                ProtocolId.ESP,
                b"\xc0\x01\x02\x03",
                (
                    Transform(TransformType.ENCR, EncrId.AES_CBC, 128),
                    Transform(TransformType.INTEG, 12),
                    Transform(TransformType.ESN, 0),
                ),
            ),
        )
    )
    assert isinstance(sa, SaPayload)
    assert sa.proposals[1].protocol is ProtocolId.ESP
    buf = Buffer()
    push_payload_body(buf, PayloadType.SA, sa)
    assert buf.data() == body


def test_unknown_transform_type_and_attributes_are_kept() -> None:
    attrs = bytes.fromhex("8063 0007") + bytes.fromhex("0064 0002 abcd") + KEY_256
    sa = pull_body(PayloadType.SA, proposal(transform(77, 9, attrs), count=1))
    assert isinstance(sa, SaPayload)
    assert sa.proposals[0].transforms == (Transform(77, 9, 256, (0x63, 0x64)),)
    with pytest.raises(UsageError):
        push_payload_body(Buffer(), PayloadType.SA, sa)


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("empty SA", b""),
        ("count says 4", proposal(IKE_TRANSFORMS, count=4)),
        ("count says 2", proposal(IKE_TRANSFORMS, count=2)),
        ("count says 0", proposal(IKE_TRANSFORMS, count=0)),
        ("proposal length 0", proposal(IKE_TRANSFORMS, count=3, length=0)),
        ("proposal length 7", proposal(IKE_TRANSFORMS, count=3, length=7)),
        ("proposal length short", proposal(IKE_TRANSFORMS, count=3, length=40)),
        ("proposal length long", proposal(IKE_TRANSFORMS, count=3, length=49)),
        ("proposal marker 1", proposal(IKE_TRANSFORMS, count=3, last=1)),
        ("more proposals promised", proposal(IKE_TRANSFORMS, count=3, last=2)),
        ("proposal after last", proposal(IKE_TRANSFORMS, count=3) * 2),
        ("protocol 0", proposal(IKE_TRANSFORMS, protocol=0, count=3)),
        ("IKE SPI of 4", proposal(IKE_TRANSFORMS, spi=b"abcd", count=3)),
        ("ESP SPI of 8", proposal(IKE_TRANSFORMS, protocol=3, spi=b"abcdefgh", count=3)),
        ("ESP SPI missing", proposal(IKE_TRANSFORMS, protocol=3, count=3)),
        ("transform marker 2", proposal(transform(1, 12, last=2), count=1)),
        ("more transforms promised", proposal(transform(1, 12, last=3), count=1)),
        ("transform after last", proposal(transform(1, 12) + transform(3, 12), count=2)),
        ("transform length 7", proposal(transform(1, 12)[:2] + b"\x00\x07" + b"\x01\x00", count=1)),
        ("truncated attribute", proposal(transform(1, 12, b"\x80\x0e"), count=1)),
        ("TLV attribute too long", proposal(transform(1, 12, b"\x00\x63\x00\x09ab"), count=1)),
        ("key length as TLV", proposal(transform(1, 12, b"\x00\x0e\x00\x02\x01\x00"), count=1)),
        ("key length twice", proposal(transform(1, 12, KEY_256 * 2), count=1)),
    ],
)
def test_bad_sa(case: str, body: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        pull_body(PayloadType.SA, body)


# -- KE, ID, AUTH, Nonce ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_type", "body"),
    [
        (PayloadType.KE, b""),
        (PayloadType.KE, b"\x00\x1f\x00"),
        (PayloadType.KE, b"\x00\x1f\x00\x00"),  # no key exchange data
        (PayloadType.IDI, b"\x01\x00\x00"),
        (PayloadType.IDI, b"\x02\x00\x00\x00"),  # FQDN without a name
        (PayloadType.IDR, b"\x01\x00\x00\x00\x0a\x00\x00\x01\xff"),  # IPv4 of 5 octets
        (PayloadType.IDR, b"\x05\x00\x00\x00" + bytes(4)),  # IPv6 of 4 octets
        (PayloadType.AUTH, b"\x02\x00\x00\x00"),
        (PayloadType.NONCE, bytes(15)),
        (PayloadType.NONCE, bytes(257)),
        (PayloadType.NONCE, b""),
        (PayloadType.CP, b"\x01\x00\x00"),
    ],
)
def test_bad_simple_payloads(payload_type: int, body: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        pull_body(payload_type, body)


def test_id_golden() -> None:
    ident = pull_body(PayloadType.IDI, b"\x02\x00\x00\x00gw.example")
    assert ident == IdPayload(IdType.FQDN, b"gw.example")
    ident = pull_body(PayloadType.IDR, b"\x01\x00\x00\x00\xc6\x33\x64\x01")
    assert ident == IdPayload(IdType.IPV4_ADDR, bytes([198, 51, 100, 1]))


@pytest.mark.parametrize("size", [16, 32, 256])
def test_nonce_sizes(size: int) -> None:
    assert pull_body(PayloadType.NONCE, bytes(size)) == NoncePayload(bytes(size))


# -- Notify, Delete -----------------------------------------------------------------------


def test_notify_golden() -> None:
    rekey = pull_body(PayloadType.NOTIFY, b"\x03\x04\x40\x09" + b"\xc0\x00\x00\x01")
    assert rekey == NotifyPayload(ProtocolId.ESP, b"\xc0\x00\x00\x01", NotifyType.REKEY_SA)
    assert not rekey.is_error
    ke = pull_body(PayloadType.NOTIFY, b"\x00\x00\x00\x11\x00\x13")
    assert ke == NotifyPayload.of(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x13")
    assert isinstance(ke, NotifyPayload) and ke.is_error
    private = pull_body(PayloadType.NOTIFY, b"\x00\x00\xa0\x00data")
    assert private == NotifyPayload(ProtocolId.NONE, b"", 0xA000, b"data")


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x40",
        b"\x00\x04\x40\x09abcd",  # SPI for protocol NONE
        b"\x03\x03\x40\x09abc",  # ESP SPI of 3 octets
        b"\x01\x04\x40\x09abcd",  # IKE SPI of 4 octets
        b"\x03\x04\x40\x09ab",  # SPI longer than the payload
        b"\x00\x00\x40\x04" + bytes(19),  # NAT_DETECTION_SOURCE_IP is a SHA-1 hash
        b"\x00\x00\x40\x05" + bytes(21),
        b"\x00\x00\x40\x06",  # empty COOKIE
        b"\x00\x00\x40\x06" + bytes(65),
        b"\x00\x00\x00\x11\x13",  # INVALID_KE_PAYLOAD group of one octet
    ],
)
def test_bad_notify(body: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        pull_body(PayloadType.NOTIFY, body)


def test_delete_golden() -> None:
    assert pull_body(PayloadType.DELETE, b"\x01\x00\x00\x00") == DeletePayload(ProtocolId.IKE)
    esp = pull_body(PayloadType.DELETE, b"\x03\x04\x00\x02" + b"abcd" + b"efgh")
    assert esp == DeletePayload(ProtocolId.ESP, (b"abcd", b"efgh"))


@pytest.mark.parametrize(
    "body",
    [
        b"\x01\x00\x00",
        b"\x01\x04\x00\x01abcd",  # IKE deletes carry no SPI
        b"\x03\x08\x00\x01abcdefgh",
        b"\x03\x04\x00\x02abcd",  # two SPIs promised
        b"\x03\x04\x00\x01abcdefgh",  # one promised, two present
        b"\x00\x04\x00\x01abcd",  # protocol 0
        b"\x09\x04\x00\x01abcd",
    ],
)
def test_bad_delete(body: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        pull_body(PayloadType.DELETE, body)


# -- Traffic selectors (RFC 7296 3.13) ----------------------------------------------------


def ipv4_selector(start: str, end: str, *, length: int = 16, proto: int = 0) -> bytes:
    return (
        bytes([7, proto])
        + length.to_bytes(2, "big")
        + b"\x00\x00\xff\xff"
        + (ipaddress.IPv4Address(start).packed + ipaddress.IPv4Address(end).packed)
    )


def test_ts_golden() -> None:
    v6 = bytes([8, 6, 0, 40]) + b"\x00\x50\x00\x50" + bytes(16) + b"\xff" * 16
    body = b"\x02\x00\x00\x00" + ipv4_selector("10.1.0.0", "10.1.255.255") + v6
    ts = pull_body(PayloadType.TSI, body)
    assert ts == TsPayload(
        (
            TrafficSelector.from_network(ipaddress.IPv4Network("10.1.0.0/16")),
            TrafficSelector.from_network(ipaddress.IPv6Network("::/0"), 6, 80, 80),
        )
    )
    buf = Buffer()
    push_payload_body(buf, PayloadType.TSR, ts)
    assert buf.data() == body


def test_any_selectors() -> None:
    anyv4 = TrafficSelector.any_ipv4()
    assert (anyv4.ts_type, anyv4.ip_protocol, anyv4.start_port, anyv4.end_port) == (
        TsType.IPV4_ADDR_RANGE,
        0,
        0,
        65535,
    )
    assert str(anyv4.start_address) == "0.0.0.0"
    assert str(anyv4.end_address) == "255.255.255.255"
    assert TrafficSelector.any_ipv6().end_address == ipaddress.IPv6Address("ffff:" * 7 + "ffff")


def test_unknown_selector_type_is_reported() -> None:
    odd = bytes([10, 0, 0, 9]) + b"label"
    ts = pull_body(PayloadType.TSR, b"\x02\x00\x00\x00" + odd + ipv4_selector("0.0.0.0", "1.2.3.4"))
    assert isinstance(ts, TsPayload)
    assert ts.unknown_types == (10,)
    assert ts.selectors[0].end_address == ipaddress.IPv4Address("1.2.3.4")
    with pytest.raises(UsageError):
        push_payload_body(Buffer(), PayloadType.TSR, ts)


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x00\x00",  # no selectors
        b"\x01\x00\x00",
        b"\x02\x00\x00\x00" + ipv4_selector("0.0.0.0", "1.1.1.1"),  # one missing
        b"\x01\x00\x00\x00" + ipv4_selector("0.0.0.0", "1.1.1.1") + b"\x00",  # trailing
        b"\x01\x00\x00\x00" + ipv4_selector("0.0.0.0", "1.1.1.1", length=20) + bytes(4),
        b"\x01\x00\x00\x00" + ipv4_selector("0.0.0.0", "1.1.1.1", length=12),
        b"\x01\x00\x00\x00" + ipv4_selector("0.0.0.0", "1.1.1.1", length=3),
        b"\x01\x00\x00\x00" + bytes([8, 0, 0, 16]) + bytes(12),  # IPv6 of IPv4 size
    ],
)
def test_bad_ts(body: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        pull_body(PayloadType.TSI, body)


def test_selector_family_must_match_type() -> None:
    with pytest.raises(UsageError):
        TrafficSelector(
            TsType.IPV6_ADDR_RANGE, 0, 0, 65535, ipaddress.IPv4Address(0), ipaddress.IPv4Address(1)
        )


# -- the payload chain (RFC 7296 3.2) -----------------------------------------------------

NONCE = bytes(range(32))


def test_unknown_non_critical_payload_is_kept() -> None:
    data = generic(PayloadType.NONCE, b"vendor-ext") + generic(0, NONCE)
    assert chain(200, data) == [
        (200, UnknownPayload(200, False, b"vendor-ext")),
        (PayloadType.NONCE, NoncePayload(NONCE)),
    ]


def test_unknown_critical_payload_is_refused() -> None:
    data = generic(PayloadType.NONCE, b"must-know", critical=True) + generic(0, NONCE)
    with pytest.raises(UnsupportedCriticalPayload) as info:
        chain(200, data)
    assert info.value.payload_type == 200
    assert info.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert info.value.data == b"\xc8"


def test_critical_bit_is_ignored_on_known_types() -> None:
    data = generic(PayloadType.CERTREQ, NONCE, critical=True) + generic(0, b"\x04ca", critical=True)
    assert chain(PayloadType.NONCE, data) == [
        (PayloadType.NONCE, NoncePayload(NONCE)),
        (PayloadType.CERTREQ, UnknownPayload(PayloadType.CERTREQ, True, b"\x04ca")),
    ]


@pytest.mark.parametrize("length", [0, 1, 3, 4 + len(NONCE) - 1, 4 + len(NONCE) + 1, 65535])
def test_lying_payload_length(length: int) -> None:
    data = generic(0, NONCE, length=length) + b"\x00" * 4
    with pytest.raises(InvalidSyntax):
        chain(PayloadType.NONCE, data)


def test_octets_after_last_payload() -> None:
    with pytest.raises(InvalidSyntax):
        chain(PayloadType.NONCE, generic(0, NONCE) + b"\x00")


def test_missing_next_payload() -> None:
    with pytest.raises(InvalidSyntax):
        chain(PayloadType.NONCE, generic(PayloadType.KE, NONCE))


def test_encrypted_payload_ends_the_chain() -> None:
    sk = generic(PayloadType.IDI, b"iv-ciphertext-icv")
    assert chain(PayloadType.SK, sk) == [
        (PayloadType.SK, EncryptedPayload(PayloadType.IDI, b"iv-ciphertext-icv"))
    ]
    assert push_payload_chain(chain(PayloadType.SK, sk)) == (PayloadType.SK, sk)
    with pytest.raises(InvalidSyntax):
        chain(PayloadType.SK, sk + generic(0, NONCE))


def test_push_checks_payload_types() -> None:
    with pytest.raises(UsageError):
        push_payload_chain([(PayloadType.NONCE, IdPayload(IdType.FQDN, b"x"))])
    with pytest.raises(UsageError):
        push_payload_chain([(PayloadType.NONCE, UnknownPayload(PayloadType.NONCE, False, b""))])
    with pytest.raises(UsageError):
        push_payload_chain([(PayloadType.NONCE, NoncePayload(b"short"))])
    with pytest.raises(UsageError):
        push_payload_chain(
            [
                (PayloadType.SK, EncryptedPayload(0, b"x")),
                (PayloadType.NONCE, NoncePayload(NONCE)),
            ]
        )
    with pytest.raises(UsageError):
        push_payload_chain([(PayloadType.VENDOR_ID, VendorIdPayload(bytes(70000)))])
