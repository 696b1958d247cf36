"""Pieces several exchanges share: nonces, notifies, NAT detection, Child SA keying."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from core.crypto.keymat import derive_child_keys
from core.ike.constants import NotifyType, PayloadType, ProtocolId
from core.ike.errors import InvalidSyntax, TsUnacceptable
from core.ike.events import ChildSaKeys
from core.ike.v2.auth import nat_detection_hash
from core.ike.v2.child import ChildSa
from core.ike.v2.message import Message
from core.ike.v2.payloads import NoncePayload, NotifyPayload, Payload, TsPayload
from core.ike.v2.proposals import Negotiated

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa

NONCE_SIZE = 32

Payloads = list[tuple[int, Payload]]


def notify(kind: NotifyType, data: bytes = b"", *, protocol: ProtocolId = ProtocolId.NONE,
           spi: bytes = b"") -> tuple[int, Payload]:
    return PayloadType.NOTIFY, NotifyPayload(protocol, spi, kind, data)


def nonce_of(message: Message) -> bytes:
    payload = message.get(PayloadType.NONCE)
    if not isinstance(payload, NoncePayload):
        raise InvalidSyntax("the message has no Nonce payload")
    return payload.data


def ts_pair(message: Message) -> tuple[TsPayload, TsPayload]:
    tsi, tsr = message.get(PayloadType.TSI), message.get(PayloadType.TSR)
    if not isinstance(tsi, TsPayload) or not isinstance(tsr, TsPayload):
        raise TsUnacceptable("the message lacks TSi or TSr")
    return tsi, tsr


def notify_name(value: int) -> str:
    """A notify type's IANA name, or its number when we do not know it."""
    return NotifyType(value).name if value in NotifyType._value2member_map_ else str(value)


def error_notify(message: Message) -> NotifyPayload | None:
    """The first error notify of a response, if any (RFC 7296 3.10.1: types < 16384)."""
    for payload in message.notifies():
        if payload.notify_type < 16384:
            return payload
    return None


# -- NAT detection (RFC 7296 2.23) -----------------------------------------------------
def nat_detection_payloads(sa: IkeSa, spi_r: bytes) -> Payloads:
    if sa.policy.nat_traversal == "off":
        return []
    if sa.nat_forced:
        # Announce a NAT that is not there so both sides encapsulate (strongSwan encap=yes).
        source = sa.rng.bytes(20)
    else:
        source = nat_detection_hash(sa.spi_i, spi_r, sa.local.host, sa.local.port)
    destination = nat_detection_hash(sa.spi_i, spi_r, sa.remote.host, sa.remote.port)
    return [notify(NotifyType.NAT_DETECTION_SOURCE_IP, source),
            notify(NotifyType.NAT_DETECTION_DESTINATION_IP, destination)]


def process_nat_detection(sa: IkeSa, message: Message) -> bool:
    """Update the SA's NAT flags from the peer's NAT_DETECTION notifies.

    Returns whether the peer supports NAT-T (it sent the notifies)."""
    sources = [n.data for n in message.notifies()
               if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
    destinations = [n.data for n in message.notifies()
                    if n.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP]
    if not sources or not destinations or sa.policy.nat_traversal == "off":
        sa.nat_forced = False  # forced encapsulation needs a peer that speaks NAT-T
        return False
    spi_i, spi_r = message.spi_i, message.spi_r
    peer_seen = nat_detection_hash(spi_i, spi_r, sa.remote.host, sa.remote.port)
    sa.nat_remote = peer_seen not in sources
    us_seen = nat_detection_hash(spi_i, spi_r, sa.local.host, sa.local.port)
    sa.nat_local = us_seen not in destinations
    return True


# -- Child SA keying (RFC 7296 2.17) ---------------------------------------------------
def make_child(sa: IkeSa, *, we_initiated: bool, spi_in: int, spi_out: int,
               chosen: Negotiated, mode: str, local_ts: TsPayload, remote_ts: TsPayload,
               nonce_i: bytes, nonce_r: bytes, shared_secret: bytes | None,
               now: float) -> ChildSa:
    assert sa.keys is not None and sa.negotiated is not None and sa.negotiated.prf
    keys = derive_child_keys(sa.negotiated.prf, sa.keys.sk_d, chosen.encr_choice,
                             chosen.integ, nonce_i, nonce_r, shared_secret)
    if we_initiated:
        child_keys = ChildSaKeys(encr_in=keys.encr_r, integ_in=keys.integ_r,
                                 encr_out=keys.encr_i, integ_out=keys.integ_i)
    else:
        child_keys = ChildSaKeys(encr_in=keys.encr_i, integ_in=keys.integ_i,
                                 encr_out=keys.encr_r, integ_out=keys.integ_r)
    lifetime = sa.policy.child_lifetime
    return ChildSa(
        spi_in=spi_in,
        spi_out=spi_out,
        negotiated=chosen,
        mode=mode,
        local_ts=tuple(local_ts.selectors),
        remote_ts=tuple(remote_ts.selectors),
        encap=sa.uses_nat_t,
        created_at=now,
        rekey_at=None if sa.policy.passive else sa.rekey_time(now, lifetime),
        expire_at=now + lifetime,
        nonce_i=nonce_i,
        nonce_r=nonce_r,
        keys=child_keys,
    )


def spi_bytes(spi: int) -> bytes:
    return spi.to_bytes(4, "big")


def spi_int(spi: bytes) -> int:
    if len(spi) != 4:
        raise InvalidSyntax(f"ESP SPI of {len(spi)} bytes, expected 4")
    return int.from_bytes(spi, "big")


def proposed_ts(sa: IkeSa) -> tuple[TsPayload, TsPayload]:
    """(local, remote) selectors we propose: the configured networks (0.0.0.0/0 for
    route-based tunnels), or the two outer addresses in transport mode."""
    from core.ike.v2 import ts as ts_mod

    if sa.policy.mode == "transport":
        local = ipaddress.ip_network(sa.local.host)
        remote = ipaddress.ip_network(sa.remote.host)
        if isinstance(local, ipaddress.IPv4Network) and isinstance(remote,
                                                                   ipaddress.IPv4Network):
            return (TsPayload(ts_mod.from_networks((local,))),
                    TsPayload(ts_mod.from_networks((remote,))))
    return (TsPayload(ts_mod.from_networks(sa.policy.local_ts)),
            TsPayload(ts_mod.from_networks(sa.policy.remote_ts)))


def allowed_networks(sa: IkeSa) -> tuple[tuple[ipaddress.IPv4Network, ...],
                                         tuple[ipaddress.IPv4Network, ...]]:
    """(local, remote) networks a responder allows."""
    local, remote = proposed_ts(sa)
    return (tuple(_ts_networks(local)), tuple(_ts_networks(remote)))


def _ts_networks(payload: TsPayload) -> list[ipaddress.IPv4Network]:
    result: list[ipaddress.IPv4Network] = []
    for selector in payload.selectors:
        if isinstance(selector.start_address, ipaddress.IPv4Address) and isinstance(
                selector.end_address, ipaddress.IPv4Address):
            result.extend(ipaddress.summarize_address_range(selector.start_address,
                                                            selector.end_address))
    return result


def negotiate_ts(sa: IkeSa, message: Message) -> tuple[TsPayload, TsPayload]:
    """Responder: narrow the initiator's TSi/TSr to what we allow.  Returns (TSi, TSr) as
    they go into the response (initiator's side first)."""
    from core.ike.v2 import ts as ts_mod

    tsi, tsr = ts_pair(message)
    our_local, our_remote = allowed_networks(sa)
    return (TsPayload(ts_mod.narrow(tuple(tsi.selectors), our_remote)),
            TsPayload(ts_mod.narrow(tuple(tsr.selectors), our_local)))


def wants_transport(message: Message) -> bool:
    return message.notify(NotifyType.USE_TRANSPORT_MODE) is not None
