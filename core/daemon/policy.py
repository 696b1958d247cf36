"""Translations between the operator's config, the IKE engine and the dataplane.

- `peer_policy`: a `PeerConfig` (with its addresses resolved) into the engine's `PeerPolicy`.
- `interface_spec`: a `PeerConfig` into the dataplane's `InterfaceSpec`.
- `sa_specs`: a negotiated `ChildSaInfo` into the two `SaSpec`s the dataplane installs.

Pure functions: no sockets, no name resolution (the caller resolved hostnames already).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from core.config import Identity as ConfigIdentity
from core.config import IdKind, PeerConfig, TcpMss
from core.crypto.proposals import parse_esp_proposal, parse_ike_proposal
from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    InterfaceSpec,
    Lifetime,
    SaMode,
    SaSpec,
    UdpEncap,
)
from core.errors import UsageError
from core.ike.constants import IdType
from core.ike.events import ChildSaInfo
from core.ike.policy import Identity, PeerPolicy, Timing

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv4 header (20) + TCP header (20): the MSS that fits the interface MTU.
TCP_IP_HEADERS = 40
# The dataplane's own hard lifetime is a safety net behind the engine's expiry.
HARD_LIFETIME_SLACK = 60

_ENCRYPTION: dict[str, EspAlgorithm] = {
    "AES_GCM_16": EspAlgorithm.AES_GCM_16,
    "CHACHA20_POLY1305": EspAlgorithm.CHACHA20_POLY1305,
    "AES_CBC": EspAlgorithm.AES_CBC,
}
_INTEGRITY: dict[str, EspIntegrity] = {
    "NONE": EspIntegrity.NONE,
    "HMAC_SHA1_96": EspIntegrity.HMAC_SHA1_96,
    "HMAC_SHA2_256_128": EspIntegrity.HMAC_SHA2_256_128,
    "HMAC_SHA2_384_192": EspIntegrity.HMAC_SHA2_384_192,
    "HMAC_SHA2_512_256": EspIntegrity.HMAC_SHA2_512_256,
}


class UnsupportedSa(UsageError):
    """A negotiated Child SA the dataplane cannot carry (an algorithm it lacks)."""


def engine_identity(identity: ConfigIdentity) -> Identity:
    """The config's identity (kind + text) as the engine's (ID type + payload octets)."""
    if identity.kind in (IdKind.IPV4_ADDR, IdKind.IPV6_ADDR):
        return Identity.from_address(ipaddress.ip_address(identity.value))
    if identity.kind is IdKind.FQDN:
        return Identity(IdType.FQDN, identity.value.encode())
    if identity.kind is IdKind.USER_FQDN:
        return Identity(IdType.RFC822_ADDR, identity.value.encode())
    return Identity(IdType.KEY_ID, bytes.fromhex(identity.value))


def peer_policy(
    peer: PeerConfig,
    *,
    local: IPAddress | None,
    remote: IPAddress | None,
    timing: Timing | None = None,
) -> PeerPolicy:
    """The engine's view of `peer`.

    `local`: the fixed local address, or None when it is dynamic.  `remote`: the peer's
    address (a hostname resolved by the caller), or None when it is dynamic.  Without a
    configured local ID and without a fixed local address, `local` must be the address
    this node will use, since IKE needs some identity.
    """
    local_identity = peer.local_identity
    if local_identity is None:
        if local is None:
            raise UsageError(f"peer {peer.name}: no local ID and no local address to use as one")
        local_id = Identity.from_address(local)
    else:
        local_id = engine_identity(local_identity)
    remote_identity = peer.remote_identity
    return PeerPolicy(
        name=peer.name,
        ike_version=peer.ike_version,
        local_id=local_id,
        remote_id=engine_identity(remote_identity) if remote_identity is not None else None,
        psk=peer.psk.value,
        ike_proposals=tuple(parse_ike_proposal(text) for text in peer.ike_proposals),
        esp_proposals=tuple(parse_esp_proposal(text) for text in peer.esp_proposals),
        mode=peer.mode.value,
        exchange_mode=peer.exchange_mode.value,
        ike_lifetime=float(peer.ike_lifetime),
        child_lifetime=float(peer.child_lifetime),
        dpd_interval=float(peer.dpd_interval),
        dpd_retries=peer.dpd_retries,
        nat_traversal=peer.nat_traversal.value,
        passive=peer.passive,
        local_address=str(local) if local is not None and not peer.local_is_dynamic else None,
        remote_address=str(remote) if remote is not None and not peer.remote_is_dynamic else None,
        timing=timing if timing is not None else Timing(),
    )


def tcp_mss_of(peer: PeerConfig) -> int | None:
    if peer.tcp_mss is TcpMss.OFF:
        return None
    if peer.tcp_mss is TcpMss.AUTO:
        return peer.mtu - TCP_IP_HEADERS
    assert isinstance(peer.tcp_mss, int)
    return peer.tcp_mss


def interface_spec(
    peer: PeerConfig, borrowed_source: ipaddress.IPv4Address | None = None
) -> InterfaceSpec:
    """The interface of `peer`; `borrowed_source` only matters when it is unnumbered.

    A link-local source (169.254.0.0/16, the fallback when no interface lends an IPv4
    address) belongs to no interface, so the tunnel itself carries it as a /32: the
    backends use `borrowed_source` as a route's preferred source, which must be local.
    """
    address = peer.address
    if address is None and borrowed_source is not None and borrowed_source.is_link_local:
        address, borrowed_source = ipaddress.IPv4Interface(f"{borrowed_source}/32"), None
    return InterfaceSpec(
        name=peer.interface,
        if_id=peer.if_id,
        mtu=peer.mtu,
        address=address,
        borrowed_source=borrowed_source if peer.address is None else None,
        tcp_mss=tcp_mss_of(peer),
    )


@dataclass(frozen=True)
class SaPair:
    inbound: SaSpec
    outbound: SaSpec


def sa_specs(info: ChildSaInfo, if_id: int) -> SaPair:
    """The inbound and outbound ESP SAs of a negotiated Child SA.

    Ports go into the SAs only with UDP encapsulation; they come from the addresses the
    IKE SA uses (both on 4500 after NAT-T floated, possibly translated by a NAT).
    """
    algorithm = _ENCRYPTION.get(info.encr)
    if algorithm is None:
        raise UnsupportedSa(f"peer {info.peer}: the dataplane cannot do ESP with {info.encr}")
    integrity = _INTEGRITY.get(info.integ)
    if integrity is None:
        raise UnsupportedSa(f"peer {info.peer}: the dataplane cannot do ESP with {info.integ}")
    local = ipaddress.ip_address(info.local.host)
    remote = ipaddress.ip_address(info.remote.host)
    mode = SaMode(info.mode)
    lifetime = Lifetime()
    if info.expire_at is not None:
        seconds = max(1, round(info.expire_at - info.established_at)) + HARD_LIFETIME_SLACK
        lifetime = Lifetime(hard_seconds=seconds)
    keys = info.keys
    inbound = SaSpec(
        spi=info.spi_in,
        direction=Direction.IN,
        src=remote,
        dst=local,
        mode=mode,
        algorithm=algorithm,
        encryption_key=keys.encr_in,
        integrity=integrity,
        integrity_key=keys.integ_in,
        esn=info.esn,
        encap=UdpEncap(sport=info.remote.port, dport=info.local.port) if info.encap else None,
        if_id=if_id,
        lifetime=lifetime,
    )
    outbound = SaSpec(
        spi=info.spi_out,
        direction=Direction.OUT,
        src=local,
        dst=remote,
        mode=mode,
        algorithm=algorithm,
        encryption_key=keys.encr_out,
        integrity=integrity,
        integrity_key=keys.integ_out,
        esn=info.esn,
        encap=UdpEncap(sport=info.local.port, dport=info.remote.port) if info.encap else None,
        if_id=if_id,
        lifetime=lifetime,
    )
    return SaPair(inbound, outbound)
