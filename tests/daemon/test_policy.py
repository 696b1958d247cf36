"""Config -> engine policy, config -> interface, negotiated Child SA -> dataplane SAs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from core.config import load_text
from core.daemon.policy import (
    UnsupportedSa,
    engine_identity,
    interface_spec,
    peer_policy,
    sa_specs,
)
from core.dataplane.model import Direction, EspAlgorithm, EspIntegrity, SaMode, UdpEncap
from core.ike.constants import IdType
from core.ike.events import Address, ChildSaInfo, ChildSaKeys
from core.ike.policy import Identity

BASE = """
[global]
enabled = true
[[peer]]
name = "p"
interface = "ipsec5"
psk = "secret"
"""


def _peer(extra: str, local: str = "198.51.100.1", remote: str = "198.51.100.2"):  # type: ignore[no-untyped-def]
    text = BASE + f'local_address = "{local}"\nremote_address = "{remote}"\n' + extra
    return load_text(text, str(Path("/nonexistent/config.toml"))).peers[0]


def test_identities_convert_to_id_payloads() -> None:
    peer = _peer('local_id = "fqdn:hq.example.net"\nremote_id = "user:ops@example.net"\n')
    assert engine_identity(peer.local_identity) == Identity(IdType.FQDN, b"hq.example.net")
    assert engine_identity(peer.remote_identity) == Identity(IdType.RFC822_ADDR, b"ops@example.net")
    keyid = _peer('local_id = "keyid:0A1b"\n').local_identity
    assert engine_identity(keyid) == Identity(IdType.KEY_ID, b"\x0a\x1b")
    v6 = _peer("", local="2001:db8::1", remote="2001:db8::2")
    policy = peer_policy(
        v6, local=ipaddress.ip_address("2001:db8::1"), remote=ipaddress.ip_address("2001:db8::2")
    )
    assert policy.local_id == Identity(
        IdType.IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed
    )


def test_policy_carries_the_peer_settings() -> None:
    peer = _peer(
        'passive = true\nnat_traversal = "force"\ndpd_interval = 3\ndpd_retries = 2\n'
        'mode = "transport"\nike_lifetime = 600\nchild_lifetime = 300\n'
    )
    policy = peer_policy(
        peer,
        local=ipaddress.ip_address("198.51.100.1"),
        remote=ipaddress.ip_address("198.51.100.2"),
    )
    assert policy.passive and policy.nat_traversal == "force" and policy.mode == "transport"
    assert (policy.dpd_interval, policy.dpd_retries) == (3.0, 2)
    assert (policy.ike_lifetime, policy.child_lifetime) == (600.0, 300.0)
    assert policy.local_address == "198.51.100.1" and policy.remote_address == "198.51.100.2"
    assert policy.remote_id == Identity.from_address(ipaddress.IPv4Address("198.51.100.2"))
    assert policy.psk == b"secret" and len(policy.ike_proposals) == 2


def test_dynamic_addresses_become_none_in_the_policy() -> None:
    peer = _peer('local_id = "fqdn:me.example"\n', local="dynamic")
    policy = peer_policy(
        peer, local=ipaddress.ip_address("203.0.113.9"), remote=ipaddress.ip_address("198.51.100.2")
    )
    assert policy.local_address is None and policy.local_id.data == b"me.example"
    responder = _peer('remote_id = "fqdn:shop.example"\n', remote="dynamic")
    policy = peer_policy(responder, local=ipaddress.ip_address("198.51.100.1"), remote=None)
    assert policy.remote_address is None and policy.remote_id is not None


def test_interface_spec_mss_and_unnumbered_source() -> None:
    numbered = _peer('address = "10.0.0.1/30"\nmtu = 1400\n')
    spec = interface_spec(numbered, ipaddress.IPv4Address("192.0.2.9"))
    assert spec.name == "ipsec5" and spec.if_id == 0x72620005
    assert spec.tcp_mss == 1360 and spec.borrowed_source is None
    unnumbered = _peer('tcp_mss = "off"\n')
    spec = interface_spec(unnumbered, ipaddress.IPv4Address("192.0.2.7"))
    assert spec.address is None and spec.tcp_mss is None
    assert spec.borrowed_source == ipaddress.IPv4Address("192.0.2.7")
    # the link-local fallback is local to no interface: the tunnel carries it itself
    spec = interface_spec(unnumbered, ipaddress.IPv4Address("169.254.0.1"))
    assert spec.address == ipaddress.IPv4Interface("169.254.0.1/32")
    assert spec.borrowed_source is None
    assert interface_spec(_peer("tcp_mss = 1200\n")).tcp_mss == 1200


def _info(
    encr: str = "AES_GCM_16", integ: str = "NONE", encap: bool = False, mode: str = "tunnel"
) -> ChildSaInfo:
    port = 4500 if encap else 500
    return ChildSaInfo(
        peer="p",
        spi_in=0x1111,
        spi_out=0x2222,
        mode=mode,
        encr=encr,
        encr_key_bits=256,
        integ=integ,
        esn=True,
        encap=encap,
        local=Address("198.51.100.1", port),
        remote=Address("203.0.113.5", 34567 if encap else 500),
        local_ts=("0.0.0.0/0",),
        remote_ts=("0.0.0.0/0",),
        established_at=100.0,
        rekey_at=3000.0,
        expire_at=3700.0,
        keys=ChildSaKeys(b"I" * 36, b"", b"O" * 36, b""),
    )


def test_sa_specs_from_a_child_sa() -> None:
    pair = sa_specs(_info(encap=True), 0x72620005)
    inbound, outbound = pair.inbound, pair.outbound
    assert (inbound.spi, inbound.direction) == (0x1111, Direction.IN)
    assert (outbound.spi, outbound.direction) == (0x2222, Direction.OUT)
    assert str(inbound.src) == "203.0.113.5" and str(inbound.dst) == "198.51.100.1"
    assert str(outbound.src) == "198.51.100.1" and str(outbound.dst) == "203.0.113.5"
    assert inbound.encap == UdpEncap(sport=34567, dport=4500)
    assert outbound.encap == UdpEncap(sport=4500, dport=34567)
    assert inbound.encryption_key == b"I" * 36 and outbound.encryption_key == b"O" * 36
    assert inbound.algorithm is EspAlgorithm.AES_GCM_16 and inbound.esn
    assert inbound.if_id == 0x72620005 and inbound.mode is SaMode.TUNNEL
    assert inbound.lifetime.hard_seconds == 3600 + 60
    plain = sa_specs(_info(encr="AES_CBC", integ="HMAC_SHA2_256_128", mode="transport"), 1)
    assert plain.inbound.encap is None and plain.outbound.mode is SaMode.TRANSPORT
    assert plain.outbound.integrity is EspIntegrity.HMAC_SHA2_256_128


def test_an_algorithm_the_dataplane_lacks_is_refused_clearly() -> None:
    with pytest.raises(UnsupportedSa, match="AES_CTR"):
        sa_specs(_info(encr="AES_CTR", integ="HMAC_SHA2_256_128"), 1)
    with pytest.raises(UnsupportedSa, match="HMAC_MD5_96"):
        sa_specs(_info(encr="AES_CBC", integ="HMAC_MD5_96"), 1)
