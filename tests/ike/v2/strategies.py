"""Hypothesis strategies for IKEv2 payload values that the codec must round-trip."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from core.ike.constants import IdType, NotifyType, PayloadType, ProtocolId, TransformType, TsType
from core.ike.v2.payloads import (
    AuthPayload,
    CpPayload,
    DeletePayload,
    IdPayload,
    KePayload,
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
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)

transforms = st.builds(
    Transform,
    type=st.sampled_from(TransformType) | u8,
    id=u16,
    key_length=st.none() | u16,
)


@st.composite
def proposals(draw: st.DrawFn) -> Proposal:
    protocol = draw(st.sampled_from([ProtocolId.IKE, ProtocolId.AH, ProtocolId.ESP, 4, 200]))
    spi_sizes: dict[int, st.SearchStrategy[int]] = {
        ProtocolId.IKE: st.sampled_from([0, 8]),
        ProtocolId.AH: st.just(4),
        ProtocolId.ESP: st.just(4),
    }
    spi_size = draw(spi_sizes.get(protocol, st.integers(0, 16)))
    return Proposal(
        number=draw(u8),
        protocol=protocol,
        spi=draw(st.binary(min_size=spi_size, max_size=spi_size)),
        transforms=tuple(draw(st.lists(transforms, max_size=6))),
    )


sa_payloads = st.builds(SaPayload, st.lists(proposals(), min_size=1, max_size=4).map(tuple))
ke_payloads = st.builds(KePayload, u16, st.binary(min_size=1, max_size=64))


@st.composite
def id_payloads(draw: st.DrawFn) -> IdPayload:
    id_type = draw(st.sampled_from(IdType) | u8)
    sizes: dict[int, int] = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}
    size = sizes.get(id_type)
    if size is None:
        return IdPayload(id_type, draw(st.binary(min_size=1, max_size=40)))
    return IdPayload(id_type, draw(st.binary(min_size=size, max_size=size)))


auth_payloads = st.builds(AuthPayload, u8, st.binary(min_size=1, max_size=64))
nonce_payloads = st.builds(NoncePayload, st.binary(min_size=16, max_size=256))

_NOTIFY_SIZES: dict[int, tuple[int, int]] = {
    NotifyType.NAT_DETECTION_SOURCE_IP: (20, 20),
    NotifyType.NAT_DETECTION_DESTINATION_IP: (20, 20),
    NotifyType.COOKIE: (1, 64),
    NotifyType.INVALID_KE_PAYLOAD: (2, 2),
    NotifyType.SET_WINDOW_SIZE: (4, 4),
}


@st.composite
def notify_payloads(draw: st.DrawFn) -> NotifyPayload:
    notify_type = draw(st.sampled_from(NotifyType) | u16)
    low, high = _NOTIFY_SIZES.get(notify_type, (0, 40))
    protocol, spi_size = draw(
        st.sampled_from([(0, 0), (1, 0), (1, 8), (2, 4), (3, 4), (3, 0), (9, 4), (9, 7)])
    )
    return NotifyPayload(
        protocol,
        draw(st.binary(min_size=spi_size, max_size=spi_size)),
        notify_type,
        draw(st.binary(min_size=low, max_size=high)),
    )


delete_payloads = st.just(DeletePayload(ProtocolId.IKE)) | st.builds(
    DeletePayload,
    st.sampled_from([ProtocolId.AH, ProtocolId.ESP]),
    st.lists(st.binary(min_size=4, max_size=4), max_size=5).map(tuple),
)
vendor_id_payloads = st.builds(VendorIdPayload, st.binary(max_size=32))


@st.composite
def selectors(draw: st.DrawFn) -> TrafficSelector:
    if draw(st.booleans()):
        ts_type, v4 = TsType.IPV4_ADDR_RANGE, True
        start = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
        end = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
    else:
        ts_type, v4 = TsType.IPV6_ADDR_RANGE, False
        start6 = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        end6 = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
    return TrafficSelector(
        ts_type,
        draw(u8),
        draw(u16),
        draw(u16),
        start if v4 else start6,
        end if v4 else end6,
    )


ts_payloads = st.builds(TsPayload, st.lists(selectors(), min_size=1, max_size=4).map(tuple))
cp_payloads = st.builds(CpPayload, st.binary(min_size=4, max_size=40))

# Types no decoder claims: outside RFC 7296's range, and RFC 7296's unsupported ones.
_UNKNOWN_TYPES = [t for t in range(1, 256) if not 33 <= t <= 47 or t in (37, 38)]
unknown_payloads = st.builds(
    UnknownPayload, st.sampled_from(_UNKNOWN_TYPES), st.just(False), st.binary(max_size=32)
)


def _typed(payload_type: int, payloads: st.SearchStrategy[Payload]) -> st.SearchStrategy:
    return payloads.map(lambda payload: (payload_type, payload))


typed_payloads: st.SearchStrategy[tuple[int, Payload]] = st.one_of(
    _typed(PayloadType.SA, sa_payloads),
    _typed(PayloadType.KE, ke_payloads),
    st.sampled_from([PayloadType.IDI, PayloadType.IDR]).flatmap(lambda t: _typed(t, id_payloads())),
    _typed(PayloadType.AUTH, auth_payloads),
    _typed(PayloadType.NONCE, nonce_payloads),
    _typed(PayloadType.NOTIFY, notify_payloads()),
    _typed(PayloadType.DELETE, delete_payloads),
    _typed(PayloadType.VENDOR_ID, vendor_id_payloads),
    st.sampled_from([PayloadType.TSI, PayloadType.TSR]).flatmap(lambda t: _typed(t, ts_payloads)),
    _typed(PayloadType.CP, cp_payloads),
    unknown_payloads.map(lambda p: (p.payload_type, p)),
)

payload_chains = st.lists(typed_payloads, max_size=6)
