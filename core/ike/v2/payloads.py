"""IKEv2 payloads (RFC 7296 3.2-3.16): frozen dataclasses and pure pull/push functions.

Each `pull_<payload>(buf)` reads one payload body from a buffer bounded to that body (the
generic payload header is handled by the chain walker) and checks every length, count and
field before reading it, like OpenBSD iked's ikev2_validate_*.  Anything malformed raises
`InvalidSyntax`; an unknown payload with the critical bit raises
`UnsupportedCriticalPayload`.  `push_<payload>(buf, value)` writes the body; misuse
(values that do not fit their fields) raises `UsageError`.

Registry values we know become IntEnums; values we do not know stay plain ints, so a
responder can still see them and refuse the proposal or selector that holds them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from core.buffer import Buffer, BufferReadError
from core.errors import UsageError
from core.ike.constants import (
    AuthMethod,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
)
from core.ike.errors import InvalidSyntax, UnsupportedCriticalPayload

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_E = TypeVar("_E", bound=IntEnum)


def _known(enum: type[_E], value: int) -> _E | int:
    """`value` as a member of `enum`, or the plain int when the registry lacks it."""
    try:
        return enum(value)
    except ValueError:
        return value


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise InvalidSyntax(what)


def _fits(condition: bool, what: str) -> None:
    if not condition:
        raise UsageError(what)


def _push_u8(buf: Buffer, value: int) -> None:
    _fits(0 <= value <= 0xFF, f"{value} does not fit one octet")
    buf.push_u8(value)


def _push_u16(buf: Buffer, value: int) -> None:
    _fits(0 <= value <= 0xFFFF, f"{value} does not fit two octets")
    buf.push_u16(value)


# -- SA payload: proposals, transforms, attributes (RFC 7296 3.3) -------------------------

_LAST = 0
_MORE_PROPOSALS = 2
_MORE_TRANSFORMS = 3
_ATTR_TV = 0x8000  # AF bit: type/value format, the value sits in the length field
# SPI sizes a proposal may carry (RFC 7296 3.3.1): none or 8 for IKE (8 when rekeying).
_PROPOSAL_SPI_SIZES: dict[int, tuple[int, ...]] = {
    ProtocolId.IKE: (0, 8),
    ProtocolId.AH: (4,),
    ProtocolId.ESP: (4,),
}


@dataclass(frozen=True)
class Transform:
    """RFC 7296 3.3.2.  `unknown_attributes` lists attribute types we did not understand
    (RFC 7296 3.3.6: a responder must not accept such a transform); they are not re-sent."""

    type: TransformType | int
    id: int
    key_length: int | None = None
    unknown_attributes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Proposal:
    """RFC 7296 3.3.1."""

    number: int
    protocol: ProtocolId | int
    spi: bytes
    transforms: tuple[Transform, ...]


@dataclass(frozen=True)
class SaPayload:
    proposals: tuple[Proposal, ...]


def _pull_transform(buf: Buffer) -> tuple[int, Transform]:
    _check(buf.remaining >= 8, "truncated transform")
    last = buf.pull_u8()
    buf.pull_u8()
    length = buf.pull_u16()
    _check(8 <= length <= buf.remaining + 4, f"transform length {length} does not fit")
    body = buf.sub(length - 4)
    ttype, _, tid = body.pull_u8(), body.pull_u8(), body.pull_u16()
    key_length: int | None = None
    unknown: list[int] = []
    while not body.eof():  # RFC 7296 3.3.5
        _check(body.remaining >= 4, "truncated transform attribute")
        attr, value = body.pull_u16(), body.pull_u16()
        if attr & _ATTR_TV:
            if attr & ~_ATTR_TV == TransformAttr.KEY_LENGTH:
                _check(key_length is None, "repeated key length attribute")
                key_length = value
            else:
                unknown.append(attr & ~_ATTR_TV)
            continue
        _check(attr != TransformAttr.KEY_LENGTH, "key length attribute must be TV")
        _check(value <= body.remaining, f"attribute length {value} does not fit")
        body.pull_bytes(value)
        unknown.append(attr)
    return last, Transform(_known(TransformType, ttype), tid, key_length, tuple(unknown))


def _pull_proposal(buf: Buffer) -> tuple[int, Proposal]:
    _check(buf.remaining >= 8, "truncated proposal")
    last = buf.pull_u8()
    buf.pull_u8()
    length = buf.pull_u16()
    _check(8 <= length <= buf.remaining + 4, f"proposal length {length} does not fit")
    body = buf.sub(length - 4)
    number, protocol, spi_size, count = (body.pull_u8() for _ in range(4))
    _check(protocol != ProtocolId.NONE, "proposal for protocol 0")
    allowed = _PROPOSAL_SPI_SIZES.get(protocol)
    _check(allowed is None or spi_size in allowed, f"SPI size {spi_size} for protocol {protocol}")
    _check(spi_size <= body.remaining, "proposal SPI does not fit")
    spi = body.pull_bytes(spi_size)
    transforms: list[Transform] = []
    more = count > 0
    while not body.eof():
        _check(more, "transform after the last one")
        last_substruc, transform = _pull_transform(body)
        _check(last_substruc in (_LAST, _MORE_TRANSFORMS), f"transform marker {last_substruc}")
        more = last_substruc == _MORE_TRANSFORMS
        transforms.append(transform)
    _check(not more and len(transforms) == count, f"{len(transforms)} transforms, said {count}")
    return last, Proposal(number, _known(ProtocolId, protocol), spi, tuple(transforms))


def pull_sa(buf: Buffer) -> SaPayload:
    proposals: list[Proposal] = []
    more = True
    while not buf.eof():
        _check(more, "proposal after the last one")
        last_substruc, proposal = _pull_proposal(buf)
        _check(last_substruc in (_LAST, _MORE_PROPOSALS), f"proposal marker {last_substruc}")
        more = last_substruc == _MORE_PROPOSALS
        proposals.append(proposal)
    _check(bool(proposals) and not more, "SA payload without its last proposal")
    return SaPayload(tuple(proposals))


def _push_transform(buf: Buffer, transform: Transform, last: bool) -> None:
    _fits(not transform.unknown_attributes, "cannot send attributes we do not understand")
    buf.push_u8(_LAST if last else _MORE_TRANSFORMS)
    buf.push_u8(0)
    buf.push_u16(8 if transform.key_length is None else 12)
    _push_u8(buf, transform.type)
    buf.push_u8(0)
    _push_u16(buf, transform.id)
    if transform.key_length is not None:
        buf.push_u16(_ATTR_TV | TransformAttr.KEY_LENGTH)
        _push_u16(buf, transform.key_length)


def push_sa(buf: Buffer, sa: SaPayload) -> None:
    _fits(bool(sa.proposals), "an SA payload needs a proposal")
    for index, proposal in enumerate(sa.proposals):
        _fits(len(proposal.spi) <= 255 and len(proposal.transforms) <= 255, "proposal too big")
        start = buf.written
        buf.push_u8(_LAST if index == len(sa.proposals) - 1 else _MORE_PROPOSALS)
        buf.push_u8(0)
        buf.push_u16(0)
        for value in (proposal.number, proposal.protocol, len(proposal.spi)):
            _push_u8(buf, value)
        buf.push_u8(len(proposal.transforms))
        buf.push_bytes(proposal.spi)
        for t_index, transform in enumerate(proposal.transforms):
            _push_transform(buf, transform, t_index == len(proposal.transforms) - 1)
        _fits(buf.written - start <= 0xFFFF, "proposal longer than 65535 octets")
        buf.patch_u16(start + 2, buf.written - start)


# -- KE, ID, AUTH, Nonce (RFC 7296 3.4, 3.5, 3.8, 3.9) ------------------------------------

NONCE_MIN, NONCE_MAX = 16, 256


@dataclass(frozen=True)
class KePayload:
    group: int
    data: bytes


@dataclass(frozen=True)
class IdPayload:
    """IDi or IDr: the payload type in the message tells which."""

    id_type: IdType | int
    data: bytes


@dataclass(frozen=True)
class AuthPayload:
    method: AuthMethod | int
    data: bytes


@dataclass(frozen=True)
class NoncePayload:
    data: bytes


def _pull_reserved3(buf: Buffer) -> None:
    buf.pull_bytes(3)


def pull_ke(buf: Buffer) -> KePayload:
    _check(buf.remaining > 4, "KE payload without key exchange data")
    group = buf.pull_u16()
    buf.pull_u16()
    return KePayload(group, buf.pull_rest())


def push_ke(buf: Buffer, ke: KePayload) -> None:
    _fits(bool(ke.data) and 0 <= ke.group <= 0xFFFF, "KE payload needs a group and data")
    _push_u16(buf, ke.group)
    buf.push_u16(0)
    buf.push_bytes(ke.data)


_ID_SIZES: dict[int, int] = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}


def pull_id(buf: Buffer) -> IdPayload:
    _check(buf.remaining > 4, "ID payload without identification data")
    id_type = buf.pull_u8()
    _pull_reserved3(buf)
    data = buf.pull_rest()
    expected = _ID_SIZES.get(id_type)
    _check(expected is None or len(data) == expected, f"ID type {id_type} of {len(data)} octets")
    return IdPayload(_known(IdType, id_type), data)


def push_id(buf: Buffer, ident: IdPayload) -> None:
    _fits(bool(ident.data), "ID payload needs data")
    _push_u8(buf, ident.id_type)
    buf.push_bytes(bytes(3))
    buf.push_bytes(ident.data)


def pull_auth(buf: Buffer) -> AuthPayload:
    _check(buf.remaining > 4, "AUTH payload without authentication data")
    method = buf.pull_u8()
    _pull_reserved3(buf)
    return AuthPayload(_known(AuthMethod, method), buf.pull_rest())


def push_auth(buf: Buffer, auth: AuthPayload) -> None:
    _fits(bool(auth.data), "AUTH payload needs data")
    _push_u8(buf, auth.method)
    buf.push_bytes(bytes(3))
    buf.push_bytes(auth.data)


def pull_nonce(buf: Buffer) -> NoncePayload:
    _check(NONCE_MIN <= buf.remaining <= NONCE_MAX, f"nonce of {buf.remaining} octets")
    return NoncePayload(buf.pull_rest())


def push_nonce(buf: Buffer, nonce: NoncePayload) -> None:
    _fits(NONCE_MIN <= len(nonce.data) <= NONCE_MAX, f"nonce of {len(nonce.data)} octets")
    buf.push_bytes(nonce.data)


# -- Notify, Delete, Vendor ID (RFC 7296 3.10, 3.11, 3.12) --------------------------------

# Notification data sizes we rely on when acting on these notifies.
_NOTIFY_DATA_SIZES: dict[int, tuple[int, int]] = {
    NotifyType.NAT_DETECTION_SOURCE_IP: (20, 20),  # SHA-1, RFC 7296 2.23
    NotifyType.NAT_DETECTION_DESTINATION_IP: (20, 20),
    NotifyType.COOKIE: (1, 64),  # RFC 7296 2.6
    NotifyType.INVALID_KE_PAYLOAD: (2, 2),  # the group, RFC 7296 3.10.1
    NotifyType.SET_WINDOW_SIZE: (4, 4),
}


@dataclass(frozen=True)
class NotifyPayload:
    protocol: ProtocolId | int
    spi: bytes
    notify_type: NotifyType | int
    data: bytes = b""

    @classmethod
    def of(
        cls,
        notify_type: NotifyType | int,
        data: bytes = b"",
        *,
        protocol: ProtocolId | int = ProtocolId.NONE,
        spi: bytes = b"",
    ) -> NotifyPayload:
        """A notify about the IKE SA (no protocol, no SPI) unless told otherwise."""
        return cls(protocol, spi, notify_type, data)

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384


# SPI sizes a notify may name (RFC 7296 3.10); none at all is always allowed.
_NOTIFY_SPI_SIZES: dict[int, int] = {ProtocolId.IKE: 8, ProtocolId.AH: 4, ProtocolId.ESP: 4}


def pull_notify(buf: Buffer) -> NotifyPayload:
    _check(buf.remaining >= 4, "truncated notify payload")
    protocol, spi_size, notify_type = buf.pull_u8(), buf.pull_u8(), buf.pull_u16()
    if spi_size:
        expected = _NOTIFY_SPI_SIZES.get(protocol, spi_size)
        _check(
            protocol != ProtocolId.NONE and spi_size == expected,
            f"notify with SPI size {spi_size} for protocol {protocol}",
        )
    _check(spi_size <= buf.remaining, "notify SPI does not fit")
    spi = buf.pull_bytes(spi_size)
    data = buf.pull_rest()
    low, high = _NOTIFY_DATA_SIZES.get(notify_type, (0, len(data)))
    _check(low <= len(data) <= high, f"notify {notify_type} with {len(data)} octets of data")
    return NotifyPayload(_known(ProtocolId, protocol), spi, _known(NotifyType, notify_type), data)


def push_notify(buf: Buffer, notify: NotifyPayload) -> None:
    _push_u8(buf, notify.protocol)
    _push_u8(buf, len(notify.spi))
    _push_u16(buf, notify.notify_type)
    buf.push_bytes(notify.spi)
    buf.push_bytes(notify.data)


@dataclass(frozen=True)
class DeletePayload:
    """IKE: no SPIs (the header names the SA); AH/ESP: the 4-octet inbound SPIs."""

    protocol: ProtocolId | int
    spis: tuple[bytes, ...] = ()


def pull_delete(buf: Buffer) -> DeletePayload:
    _check(buf.remaining >= 4, "truncated delete payload")
    protocol, spi_size, count = buf.pull_u8(), buf.pull_u8(), buf.pull_u16()
    if protocol == ProtocolId.IKE:
        _check(spi_size == 0 and buf.eof(), "IKE SA delete carries no SPIs")
        return DeletePayload(ProtocolId.IKE)
    _check(protocol in (ProtocolId.AH, ProtocolId.ESP), f"delete for protocol {protocol}")
    _check(spi_size == 4, f"SPI size {spi_size} in an {ProtocolId(protocol).name} delete")
    _check(count * 4 == buf.remaining, f"{count} SPIs in {buf.remaining} octets")
    spis = tuple(buf.pull_bytes(4) for _ in range(count))
    return DeletePayload(ProtocolId(protocol), spis)


def push_delete(buf: Buffer, delete: DeletePayload) -> None:
    _fits(delete.protocol in _PROPOSAL_SPI_SIZES, f"delete for protocol {delete.protocol}")
    spi_size = 0 if delete.protocol == ProtocolId.IKE else 4
    _fits(all(len(spi) == 4 for spi in delete.spis), "a delete names 4-octet SPIs")
    _fits(spi_size > 0 or not delete.spis, "an IKE SA delete names no SPIs")
    _fits(len(delete.spis) <= 0xFFFF, "too many SPIs")
    buf.push_u8(delete.protocol)
    buf.push_u8(spi_size)
    buf.push_u16(len(delete.spis))
    for spi in delete.spis:
        buf.push_bytes(spi)


@dataclass(frozen=True)
class VendorIdPayload:
    data: bytes


def pull_vendor_id(buf: Buffer) -> VendorIdPayload:
    return VendorIdPayload(buf.pull_rest())


def push_vendor_id(buf: Buffer, vendor_id: VendorIdPayload) -> None:
    buf.push_bytes(vendor_id.data)


# -- Traffic selectors (RFC 7296 3.13) ----------------------------------------------------

_TS_ADDRESS: dict[int, type[IpAddress]] = {
    TsType.IPV4_ADDR_RANGE: ipaddress.IPv4Address,
    TsType.IPV6_ADDR_RANGE: ipaddress.IPv6Address,
}
_TS_LENGTH: dict[int, int] = {TsType.IPV4_ADDR_RANGE: 16, TsType.IPV6_ADDR_RANGE: 40}


@dataclass(frozen=True)
class TrafficSelector:
    """RFC 7296 3.13.1.  Start port 65535 with end port 0 means OPAQUE ports."""

    ts_type: TsType
    ip_protocol: int
    start_port: int
    end_port: int
    start_address: IpAddress
    end_address: IpAddress

    def __post_init__(self) -> None:
        family = _TS_ADDRESS.get(self.ts_type)
        if family is None:
            raise UsageError(f"selector type {self.ts_type}")
        _fits(
            isinstance(self.start_address, family) and isinstance(self.end_address, family),
            f"{self.ts_type.name} selector with other addresses",
        )
        _fits(0 <= self.ip_protocol <= 255, f"IP protocol {self.ip_protocol}")
        _fits(0 <= self.start_port <= 0xFFFF and 0 <= self.end_port <= 0xFFFF, "port range")

    @classmethod
    def from_network(
        cls, network: IpNetwork, ip_protocol: int = 0, start_port: int = 0, end_port: int = 0xFFFF
    ) -> TrafficSelector:
        ts_type = TsType.IPV4_ADDR_RANGE if network.version == 4 else TsType.IPV6_ADDR_RANGE
        return cls(
            ts_type,
            ip_protocol,
            start_port,
            end_port,
            network.network_address,
            network.broadcast_address,
        )

    @classmethod
    def any_ipv4(cls) -> TrafficSelector:
        return cls.from_network(ipaddress.IPv4Network("0.0.0.0/0"))

    @classmethod
    def any_ipv6(cls) -> TrafficSelector:
        return cls.from_network(ipaddress.IPv6Network("::/0"))


@dataclass(frozen=True)
class TsPayload:
    """TSi or TSr.  `unknown_types` lists selector types we could not read (never sent);
    a responder must refuse rather than widen the peer's selectors by ignoring them."""

    selectors: tuple[TrafficSelector, ...]
    unknown_types: tuple[int, ...] = ()


def _pull_selector(buf: Buffer) -> TrafficSelector | int:
    _check(buf.remaining >= 4, "truncated traffic selector")
    ts_type, ip_protocol, length = buf.pull_u8(), buf.pull_u8(), buf.pull_u16()
    _check(4 <= length <= buf.remaining + 4, f"selector length {length} does not fit")
    body = buf.sub(length - 4)
    if ts_type not in _TS_LENGTH:
        return ts_type
    known = TsType(ts_type)
    _check(length == _TS_LENGTH[known], f"{known.name} selector of {length} octets")
    start_port, end_port = body.pull_u16(), body.pull_u16()
    size = (length - 8) // 2
    family = _TS_ADDRESS[known]
    start, end = family(body.pull_bytes(size)), family(body.pull_bytes(size))
    return TrafficSelector(known, ip_protocol, start_port, end_port, start, end)


def pull_ts(buf: Buffer) -> TsPayload:
    _check(buf.remaining >= 4, "truncated TS payload")
    count = buf.pull_u8()
    _pull_reserved3(buf)
    _check(count > 0, "TS payload without selectors")
    selectors: list[TrafficSelector] = []
    unknown: list[int] = []
    for _ in range(count):
        selector = _pull_selector(buf)
        if isinstance(selector, int):
            unknown.append(selector)
        else:
            selectors.append(selector)
    _check(buf.eof(), "octets after the last traffic selector")
    return TsPayload(tuple(selectors), tuple(unknown))


def push_ts(buf: Buffer, ts: TsPayload) -> None:
    _fits(not ts.unknown_types, "cannot send selectors of unknown types")
    _fits(1 <= len(ts.selectors) <= 255, f"{len(ts.selectors)} traffic selectors")
    buf.push_u8(len(ts.selectors))
    buf.push_bytes(bytes(3))
    for selector in ts.selectors:
        _push_u8(buf, selector.ts_type)
        _push_u8(buf, selector.ip_protocol)
        buf.push_u16(_TS_LENGTH[selector.ts_type])
        _push_u16(buf, selector.start_port)
        _push_u16(buf, selector.end_port)
        buf.push_bytes(selector.start_address.packed)
        buf.push_bytes(selector.end_address.packed)


# -- CP, SK and payloads we do not read (RFC 7296 3.14, 3.15, 2.5) ------------------------


@dataclass(frozen=True)
class CpPayload:
    """Configuration payload, kept raw: we neither request nor grant configuration."""

    raw: bytes


def pull_cp(buf: Buffer) -> CpPayload:
    _check(buf.remaining >= 4, "truncated CP payload")
    return CpPayload(buf.pull_rest())


def push_cp(buf: Buffer, cp: CpPayload) -> None:
    _fits(len(cp.raw) >= 4, "CP payload needs its type and reserved octets")
    buf.push_bytes(cp.raw)


@dataclass(frozen=True)
class EncryptedPayload:
    """SK (RFC 7296 3.14): its next-payload field names the first inner payload; `body`
    is IV | ciphertext | ICV as sent.  Always the last payload of a message."""

    first_inner: int
    body: bytes


@dataclass(frozen=True)
class UnknownPayload:
    """A payload we do not interpret, kept so the caller can log and skip it."""

    payload_type: int
    critical: bool
    data: bytes


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsPayload
    | CpPayload
    | EncryptedPayload
    | UnknownPayload
)

_PULL: dict[int, Callable[[Buffer], Payload]] = {
    PayloadType.SA: pull_sa,
    PayloadType.KE: pull_ke,
    PayloadType.IDI: pull_id,
    PayloadType.IDR: pull_id,
    PayloadType.AUTH: pull_auth,
    PayloadType.NONCE: pull_nonce,
    PayloadType.NOTIFY: pull_notify,
    PayloadType.DELETE: pull_delete,
    PayloadType.VENDOR_ID: pull_vendor_id,
    PayloadType.TSI: pull_ts,
    PayloadType.TSR: pull_ts,
    PayloadType.CP: pull_cp,
}
# Defined by RFC 7296 but not supported here: skipped whatever their critical bit says,
# since RFC 7296 3.2 makes the bit meaningful only for types the receiver does not know.
_SKIPPED = frozenset({PayloadType.CERT, PayloadType.CERTREQ, PayloadType.EAP})


_TYPES_OF: dict[type, frozenset[int]] = {
    SaPayload: frozenset({PayloadType.SA}),
    KePayload: frozenset({PayloadType.KE}),
    IdPayload: frozenset({PayloadType.IDI, PayloadType.IDR}),
    AuthPayload: frozenset({PayloadType.AUTH}),
    NoncePayload: frozenset({PayloadType.NONCE}),
    NotifyPayload: frozenset({PayloadType.NOTIFY}),
    DeletePayload: frozenset({PayloadType.DELETE}),
    VendorIdPayload: frozenset({PayloadType.VENDOR_ID}),
    TsPayload: frozenset({PayloadType.TSI, PayloadType.TSR}),
    CpPayload: frozenset({PayloadType.CP}),
    EncryptedPayload: frozenset({PayloadType.SK}),
}


def push_payload_body(buf: Buffer, payload_type: int, payload: Payload) -> None:
    """One payload body, after checking that `payload` may be sent as `payload_type`."""
    if isinstance(payload, UnknownPayload):
        allowed = frozenset({payload.payload_type}) - _PULL.keys() - {PayloadType.SK}
    else:
        allowed = _TYPES_OF[type(payload)]
    _fits(payload_type in allowed, f"{type(payload).__name__} as payload type {payload_type}")
    match payload:
        case SaPayload():
            push_sa(buf, payload)
        case KePayload():
            push_ke(buf, payload)
        case IdPayload():
            push_id(buf, payload)
        case AuthPayload():
            push_auth(buf, payload)
        case NoncePayload():
            push_nonce(buf, payload)
        case NotifyPayload():
            push_notify(buf, payload)
        case DeletePayload():
            push_delete(buf, payload)
        case VendorIdPayload():
            push_vendor_id(buf, payload)
        case TsPayload():
            push_ts(buf, payload)
        case CpPayload():
            push_cp(buf, payload)
        case EncryptedPayload():
            buf.push_bytes(payload.body)
        case UnknownPayload():
            buf.push_bytes(payload.data)


def pull_payload_body(buf: Buffer, payload_type: int, critical: bool) -> Payload:
    """One payload body; `buf` spans exactly the body (the generic header excluded)."""
    pull = _PULL.get(payload_type)
    if pull is None:
        if critical and payload_type not in _SKIPPED:
            raise UnsupportedCriticalPayload(payload_type)
        return UnknownPayload(payload_type, critical, buf.pull_rest())
    try:
        payload = pull(buf)
    except BufferReadError as exc:
        raise InvalidSyntax(f"payload type {payload_type}: {exc}") from exc
    _check(buf.eof(), f"{buf.remaining} stray octets in payload type {payload_type}")
    return payload


def pull_payload_chain(buf: Buffer, first_type: int) -> list[tuple[int, Payload]]:
    """Walk the generic payload headers (RFC 7296 3.2) from `first_type` to the end of
    `buf`, which must end exactly with the chain.  An SK payload ends the chain and must
    be last in `buf`.  Returns (payload type, body) pairs in wire order."""
    payloads: list[tuple[int, Payload]] = []
    next_type = first_type
    while next_type != PayloadType.NONE:
        _check(buf.remaining >= 4, f"payload type {next_type} missing or truncated")
        this_type, next_type = next_type, buf.pull_u8()
        critical = bool(buf.pull_u8() & 0x80)
        length = buf.pull_u16()
        _check(4 <= length <= buf.remaining + 4, f"payload length {length} does not fit")
        body = buf.sub(length - 4)
        if this_type == PayloadType.SK:
            _check(buf.eof(), "payloads after the encrypted payload")
            payloads.append((this_type, EncryptedPayload(next_type, body.pull_rest())))
            return payloads
        payloads.append((this_type, pull_payload_body(body, this_type, critical)))
    _check(buf.eof(), f"{buf.remaining} octets after the last payload")
    return payloads


def push_payload_chain(payloads: Sequence[tuple[int, Payload]]) -> tuple[int, bytes]:
    """The chain's bytes and the type of its first payload (0 when empty).  An
    EncryptedPayload may only come last; its next-payload field is its `first_inner`."""
    buf = Buffer()
    for index, (payload_type, payload) in enumerate(payloads):
        is_last = index == len(payloads) - 1
        if isinstance(payload, EncryptedPayload):
            _fits(is_last, "the encrypted payload must be the last")
            next_type = payload.first_inner
        else:
            next_type = PayloadType.NONE if is_last else payloads[index + 1][0]
        critical = isinstance(payload, UnknownPayload) and payload.critical
        start = buf.written
        _push_u8(buf, next_type)
        buf.push_u8(0x80 if critical else 0)
        buf.push_u16(0)
        push_payload_body(buf, payload_type, payload)
        _fits(buf.written - start <= 0xFFFF, f"payload type {payload_type} over 65535 octets")
        buf.patch_u16(start + 2, buf.written - start)
    return (payloads[0][0] if payloads else PayloadType.NONE), buf.data()
