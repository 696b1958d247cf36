"""ISAKMP payload codecs (RFC 2408 section 3, RFC 2407 4.6, RFC 3947 3.2 and 5.2).

Every payload is a frozen dataclass with `encode()` (its body, without the generic payload
header) and a decoder over the body.  `encode_chain` / `decode_chain` handle the generic
headers (RFC 2408 3.2): next payload, reserved, length.  Every length is checked before it
is used; malformed input raises a `MalformedMessage` (a `core.errors.DecodeError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.buffer import Buffer, BufferReadError
from core.ike.v1.constants import (
    DOI_IPSEC,
    GENERIC_HEADER_SIZE,
    NONCE_MAX,
    NONCE_MIN,
    SIT_IDENTITY_ONLY,
    PayloadType,
)
from core.ike.v1.errors import (
    BadProposalSyntax,
    DoiNotSupported,
    InvalidPayloadType,
    MalformedMessage,
    SituationNotSupported,
    UnequalPayloadLengths,
)

_AF_BIT = 0x8000
MAX_PAYLOADS = 64  # more than any real IKEv1 message carries
MAX_PROPOSALS = 64
MAX_TRANSFORMS = 255


# -- data attributes (RFC 2408 3.3) ----------------------------------------------------------
@dataclass(frozen=True)
class Attribute:
    """A data attribute: an int value is sent in basic (TV) form, bytes in variable (TLV)."""

    type: int
    value: int | bytes

    @classmethod
    def number(cls, attr_type: int, value: int) -> Attribute:
        """Basic form when the value fits 16 bits, else a 4-byte variable one (lifetimes)."""
        if 0 <= value <= 0xFFFF:
            return cls(attr_type, value)
        return cls(attr_type, value.to_bytes(max(4, (value.bit_length() + 7) // 8), "big"))

    def as_int(self) -> int:
        if isinstance(self.value, int):
            return self.value
        if not 0 < len(self.value) <= 8:
            raise MalformedMessage(f"attribute {self.type}: {len(self.value)}-byte number")
        return int.from_bytes(self.value, "big")

    def encode(self) -> bytes:
        if isinstance(self.value, int):
            if not 0 <= self.value <= 0xFFFF or not 0 <= self.type < _AF_BIT:
                raise ValueError(f"attribute {self.type}={self.value} does not fit basic form")
            return (_AF_BIT | self.type).to_bytes(2, "big") + self.value.to_bytes(2, "big")
        return self.type.to_bytes(2, "big") + len(self.value).to_bytes(2, "big") + self.value


def encode_attributes(attributes: tuple[Attribute, ...]) -> bytes:
    return b"".join(a.encode() for a in attributes)


def decode_attributes(buf: Buffer) -> tuple[Attribute, ...]:
    found: list[Attribute] = []
    while not buf.eof():
        head = buf.pull_u16()
        if head & _AF_BIT:
            found.append(Attribute(head & ~_AF_BIT, buf.pull_u16()))
        else:
            found.append(Attribute(head, buf.pull_bytes(buf.pull_u16())))
    return tuple(found)


# -- SA, proposal, transform (RFC 2408 3.4-3.6, RFC 2407 4.6.1) --------------------------------
@dataclass(frozen=True)
class Transform:
    number: int
    transform_id: int
    attributes: tuple[Attribute, ...]

    def get(self, attr_type: int) -> Attribute | None:
        return next((a for a in self.attributes if a.type == attr_type), None)

    def encode(self) -> bytes:
        return (bytes((self.number, self.transform_id, 0, 0))
                + encode_attributes(self.attributes))


@dataclass(frozen=True)
class Proposal:
    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self) -> bytes:
        body = bytes((self.number, self.protocol, len(self.spi), len(self.transforms)))
        return body + self.spi + _encode_list(
            [t.encode() for t in self.transforms], PayloadType.TRANSFORM)


@dataclass(frozen=True)
class SaPayload:
    proposals: tuple[Proposal, ...]
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY

    def encode(self) -> bytes:
        head = self.doi.to_bytes(4, "big") + self.situation.to_bytes(4, "big")
        return head + _encode_list([p.encode() for p in self.proposals], PayloadType.PROPOSAL)


def _encode_list(bodies: list[bytes], kind: PayloadType) -> bytes:
    out = bytearray()
    for index, body in enumerate(bodies):
        following = kind if index + 1 < len(bodies) else PayloadType.NONE
        out += bytes((following, 0)) + (len(body) + 4).to_bytes(2, "big") + body
    return bytes(out)


def _decode_list(buf: Buffer, kind: PayloadType, limit: int) -> list[Buffer]:
    """The bodies of a chain of proposal or transform substructures."""
    found: list[Buffer] = []
    following = int(kind)
    if buf.eof():
        raise BadProposalSyntax(f"no {kind.name.lower()}")
    while following != PayloadType.NONE:
        if following != kind:
            raise BadProposalSyntax(f"{kind.name} chain continues with payload {following}")
        if len(found) >= limit:
            raise BadProposalSyntax(f"more than {limit} {kind.name.lower()}s")
        following = buf.pull_u8()
        buf.pull_u8()
        length = buf.pull_u16()
        if length < GENERIC_HEADER_SIZE or length - GENERIC_HEADER_SIZE > buf.remaining:
            raise BadProposalSyntax(f"{kind.name.lower()} length {length} out of bounds")
        found.append(buf.sub(length - GENERIC_HEADER_SIZE))
    if not buf.eof():
        raise BadProposalSyntax(f"{buf.remaining} bytes after the last {kind.name.lower()}")
    return found


def _decode_transform(buf: Buffer) -> Transform:
    number, transform_id = buf.pull_u8(), buf.pull_u8()
    buf.pull_u16()  # RESERVED2
    return Transform(number, transform_id, decode_attributes(buf))


def _decode_proposal(buf: Buffer) -> Proposal:
    number, protocol, spi_size, count = (buf.pull_u8() for _ in range(4))
    spi = buf.pull_bytes(spi_size)
    transforms = tuple(_decode_transform(b) for b in
                       _decode_list(buf, PayloadType.TRANSFORM, MAX_TRANSFORMS))
    if len(transforms) != count or count == 0:
        raise BadProposalSyntax(f"proposal #{number} announces {count} transforms, "
                                f"carries {len(transforms)}")
    return Proposal(number, protocol, spi, transforms)


def _decode_sa(buf: Buffer) -> SaPayload:
    doi, situation = buf.pull_u32(), buf.pull_u32()
    if doi != DOI_IPSEC:
        raise DoiNotSupported(f"SA payload for DOI {doi}")
    if situation != SIT_IDENTITY_ONLY:
        raise SituationNotSupported(f"situation {situation:#x}")
    proposals = tuple(_decode_proposal(b) for b in
                      _decode_list(buf, PayloadType.PROPOSAL, MAX_PROPOSALS))
    if not proposals:
        raise BadProposalSyntax("SA payload without proposals")
    return SaPayload(proposals, doi, situation)


# -- the simple payloads ------------------------------------------------------------------------
@dataclass(frozen=True)
class KePayload:
    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class IdPayload:
    """RFC 2407 4.6.2: ID type, protocol, port and the identification data."""

    id_type: int
    data: bytes
    protocol: int = 0
    port: int = 0

    def encode(self) -> bytes:
        return bytes((self.id_type, self.protocol)) + self.port.to_bytes(2, "big") + self.data


@dataclass(frozen=True)
class HashPayload:
    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class NoncePayload:
    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class NotifyPayload:
    """RFC 2408 3.14: DOI, protocol, SPI, notify message type, notification data."""

    notify_type: int
    protocol: int = 0
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC

    def encode(self) -> bytes:
        return (self.doi.to_bytes(4, "big") + bytes((self.protocol, len(self.spi)))
                + self.notify_type.to_bytes(2, "big") + self.spi + self.data)


@dataclass(frozen=True)
class DeletePayload:
    """RFC 2408 3.15: the SPIs (all of one size) of SAs of one protocol."""

    protocol: int
    spis: tuple[bytes, ...]
    doi: int = DOI_IPSEC

    def encode(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        if any(len(spi) != size for spi in self.spis):
            raise ValueError("Delete payload SPIs differ in size")
        return (self.doi.to_bytes(4, "big") + bytes((self.protocol, size))
                + len(self.spis).to_bytes(2, "big") + b"".join(self.spis))


@dataclass(frozen=True)
class VendorIdPayload:
    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class NatDPayload:
    """RFC 3947 3.2: HASH(CKY-I | CKY-R | IP | Port)."""

    data: bytes

    def encode(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class NatOaPayload:
    """RFC 3947 5.2: ID type (IPv4/IPv6 address), 3 reserved bytes, the address."""

    id_type: int
    address: bytes

    def encode(self) -> bytes:
        return bytes((self.id_type, 0, 0, 0)) + self.address


@dataclass(frozen=True)
class UnknownPayload:
    """A private-use payload type (128-255) we do not interpret."""

    data: bytes

    def encode(self) -> bytes:
        return self.data


Payload = (SaPayload | KePayload | IdPayload | HashPayload | NoncePayload | NotifyPayload
           | DeletePayload | VendorIdPayload | NatDPayload | NatOaPayload | UnknownPayload)


def _decode_id(buf: Buffer) -> IdPayload:
    id_type, protocol, port = buf.pull_u8(), buf.pull_u8(), buf.pull_u16()
    return IdPayload(id_type, buf.pull_rest(), protocol, port)


def _decode_nonce(buf: Buffer) -> NoncePayload:
    if not NONCE_MIN <= buf.remaining <= NONCE_MAX:
        raise MalformedMessage(f"nonce of {buf.remaining} bytes (RFC 2409: 8 to 256)")
    return NoncePayload(buf.pull_rest())


def _decode_notify(buf: Buffer) -> NotifyPayload:
    doi, protocol, spi_size, kind = buf.pull_u32(), buf.pull_u8(), buf.pull_u8(), buf.pull_u16()
    return NotifyPayload(kind, protocol, buf.pull_bytes(spi_size), buf.pull_rest(), doi)


def _decode_delete(buf: Buffer) -> DeletePayload:
    doi, protocol, spi_size, count = buf.pull_u32(), buf.pull_u8(), buf.pull_u8(), buf.pull_u16()
    if spi_size == 0 or count == 0:
        raise MalformedMessage("Delete payload without SPIs")
    if buf.remaining != spi_size * count:
        raise MalformedMessage(f"Delete payload: {count} SPIs of {spi_size} bytes in "
                               f"{buf.remaining} bytes")
    return DeletePayload(protocol, tuple(buf.pull_bytes(spi_size) for _ in range(count)), doi)


def _decode_nat_oa(buf: Buffer) -> NatOaPayload:
    id_type = buf.pull_u8()
    buf.pull_bytes(3)
    return NatOaPayload(id_type, buf.pull_rest())


def _nonempty(kind: Callable[[bytes], Payload], name: str) -> Callable[[Buffer], Payload]:
    def decode(buf: Buffer) -> Payload:
        if buf.eof():
            raise MalformedMessage(f"empty {name} payload")
        return kind(buf.pull_rest())

    return decode


def _decode_opaque(buf: Buffer) -> Payload:
    return UnknownPayload(buf.pull_rest())


_DECODERS: dict[int, Callable[[Buffer], Payload]] = {
    PayloadType.SA: _decode_sa,
    PayloadType.KE: _nonempty(KePayload, "KE"),
    PayloadType.ID: _decode_id,
    PayloadType.HASH: _nonempty(HashPayload, "HASH"),
    PayloadType.NONCE: _decode_nonce,
    PayloadType.NOTIFY: _decode_notify,
    PayloadType.DELETE: _decode_delete,
    PayloadType.VENDOR_ID: _nonempty(VendorIdPayload, "Vendor ID"),
    PayloadType.NAT_D: _nonempty(NatDPayload, "NAT-D"),
    PayloadType.NAT_D_DRAFT: _nonempty(NatDPayload, "NAT-D"),
    PayloadType.NAT_OA: _decode_nat_oa,
    PayloadType.NAT_OA_DRAFT: _decode_nat_oa,
    # Certificates, certificate requests and signatures are parsed as opaque data.
    PayloadType.CERT: _decode_opaque,
    PayloadType.CR: _decode_opaque,
    PayloadType.SIG: _decode_opaque,
}


# -- payload chains (RFC 2408 3.2) --------------------------------------------------------------
PayloadList = list[tuple[int, Payload]]


def encode_chain(payloads: PayloadList) -> bytes:
    """Payloads with their generic headers, each naming the type of the next."""
    out = bytearray()
    for index, (_kind, payload) in enumerate(payloads):
        following = payloads[index + 1][0] if index + 1 < len(payloads) else PayloadType.NONE
        body = payload.encode()
        out += bytes((following, 0)) + (len(body) + GENERIC_HEADER_SIZE).to_bytes(2, "big")
        out += body
    return bytes(out)


def decode_chain(first: int, data: bytes, *, trailing_ok: bool = False
                 ) -> tuple[PayloadList, list[bytes]]:
    """Walks the chain from `first`; returns the payloads and each one's raw bytes (generic
    header included), which HASH computations cover.  Bytes after the last payload are
    only allowed where encryption padding may be (`trailing_ok`)."""
    payloads: PayloadList = []
    raw: list[bytes] = []
    buf = Buffer(data)
    kind = first
    try:
        while kind != PayloadType.NONE:
            if len(payloads) >= MAX_PAYLOADS:
                raise MalformedMessage(f"more than {MAX_PAYLOADS} payloads")
            start = buf.position
            following = buf.pull_u8()
            buf.pull_u8()
            length = buf.pull_u16()
            if length < GENERIC_HEADER_SIZE or length - GENERIC_HEADER_SIZE > buf.remaining:
                raise UnequalPayloadLengths(
                    f"payload {kind} length {length}, {buf.remaining} bytes left")
            body = buf.sub(length - GENERIC_HEADER_SIZE)
            decoder = _DECODERS.get(kind)
            if decoder is None:
                if kind < 128:
                    raise InvalidPayloadType(f"payload type {kind} is not valid here")
                payloads.append((kind, UnknownPayload(body.pull_rest())))
            else:
                payloads.append((kind, decoder(body)))
            raw.append(data[start:start + length])
            kind = following
    except BufferReadError as error:
        raise MalformedMessage(f"truncated payload {kind}: {error}") from None
    if not buf.eof() and not trailing_ok:
        raise UnequalPayloadLengths(f"{buf.remaining} bytes after the last payload")
    return payloads, raw
