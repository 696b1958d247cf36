"""Loading valid configs: types, defaults, derived values, secrets kept out of reprs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from core.config import (
    DYNAMIC,
    Config,
    DataplaneChoice,
    ExchangeMode,
    Identity,
    IdKind,
    LogLevel,
    NatTraversal,
    SaMode,
    Secret,
    TcpMss,
    load,
    load_text,
    parse_identity,
    validate_text,
)
from core.config.schema import DEFAULT_ESP_PROPOSALS, DEFAULT_IKE_PROPOSALS

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"

MINIMAL = """\
[[peer]]
name = "branch1"
interface = "ipsec5"
local_address = "198.51.100.1"
remote_address = "203.0.113.2"
psk = "do-not-print-me"
"""


def test_minimal_peer_gets_the_documented_defaults() -> None:
    config = load_text(MINIMAL, "minimal.toml")
    settings = config.global_
    assert settings is config.settings
    assert (settings.enabled, settings.dataplane, settings.unnumbered_source) == (
        False,
        DataplaneChoice.AUTO,
        "",
    )
    assert (settings.socket, settings.log_level) == ("/run/rbipsec/control.sock", LogLevel.INFO)
    (peer,) = config.peers
    assert peer.enabled is True and peer.ike_version == 2
    assert peer.exchange_mode is ExchangeMode.MAIN and peer.mode is SaMode.TUNNEL
    assert peer.ike_proposals == DEFAULT_IKE_PROPOSALS
    assert peer.esp_proposals == DEFAULT_ESP_PROPOSALS
    assert (peer.ike_lifetime, peer.child_lifetime) == (86400, 28800)
    assert (peer.dpd_interval, peer.dpd_retries) == (20, 5)
    assert peer.nat_traversal is NatTraversal.AUTO and peer.passive is False
    assert peer.address is None and peer.is_unnumbered
    assert (peer.mtu, peer.tcp_mss, peer.routes) == (1400, TcpMss.AUTO, ())
    assert (peer.local_id, peer.remote_id, peer.psk_file) == ("", "", None)
    assert config.path == "minimal.toml"


def test_values_are_parsed_into_their_types() -> None:
    text = MINIMAL + (
        'address = "10.255.1.1/30"\nroutes = ["10.2.0.0/24", "0.0.0.0/0"]\ntcp_mss = 1360\n'
        'remote_id = "user:ops@example.net"\n'
    )
    peer = load_text(text).peers[0]
    assert peer.local_address == ipaddress.IPv4Address("198.51.100.1")
    assert peer.remote_address == ipaddress.IPv4Address("203.0.113.2")
    assert peer.address == ipaddress.IPv4Interface("10.255.1.1/30")
    assert peer.routes == (
        ipaddress.IPv4Network("10.2.0.0/24"),
        ipaddress.IPv4Network("0.0.0.0/0"),
    )
    assert peer.tcp_mss == 1360
    assert peer.local_identity == Identity(IdKind.IPV4_ADDR, "198.51.100.1")
    assert peer.remote_identity == Identity(IdKind.USER_FQDN, "ops@example.net")


def test_interface_number_gives_index_and_if_id() -> None:
    peer = load_text(MINIMAL).peers[0]
    assert peer.interface_index == 5
    assert peer.if_id == 0x72620005
    last = load_text(MINIMAL.replace("ipsec5", "ipsec63")).peers[0]
    assert (last.interface_index, last.if_id) == (63, 0x7262003F)


def test_dynamic_and_hostname_addresses() -> None:
    text = (
        MINIMAL.replace('"203.0.113.2"', '"dynamic"')
        + 'ike_version = 1\nexchange_mode = "aggressive"\nremote_id = "fqdn:shop.example.net"\n'
    )
    peer = load_text(text).peers[0]
    assert peer.remote_address is DYNAMIC and peer.remote_is_dynamic
    assert not peer.local_is_dynamic
    assert str(peer.remote_address) == "dynamic"
    assert peer.remote_identity == Identity(IdKind.FQDN, "shop.example.net")
    named = load_text(MINIMAL.replace('"203.0.113.2"', '"vpn.example.net"')).peers[0]
    assert named.remote_address == "vpn.example.net"
    assert named.remote_identity is None  # accept the address the name resolves to


def test_ipv6_outer_addresses_are_accepted() -> None:
    text = MINIMAL.replace('"198.51.100.1"', '"2001:db8::1"').replace(
        '"203.0.113.2"', '"2001:db8::2"'
    )
    peer = load_text(text).peers[0]
    assert peer.remote_address == ipaddress.IPv6Address("2001:db8::2")


def test_ikev1_without_proposals_leaves_out_the_aead_defaults() -> None:
    peer = load_text(MINIMAL + "ike_version = 1\n").peers[0]
    assert peer.ike_proposals == ("aes256-sha256-modp2048",)


def test_psk_never_shows_in_repr_or_str() -> None:
    config = load_text(MINIMAL)
    peer = config.peers[0]
    assert peer.psk == Secret(b"do-not-print-me")
    for rendering in (repr(config), str(config), repr(peer), str(peer), repr(peer.psk)):
        assert "do-not-print-me" not in rendering
    assert repr(peer.psk) == str(peer.psk) == "***"


def test_psk_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    secret = tmp_path / "secrets" / "b1.psk"
    secret.write_bytes(b"from-file\n")
    secret.chmod(0o600)
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        MINIMAL.replace('psk = "do-not-print-me"', 'psk_file = "secrets/b1.psk"')
    )
    peer = load(config_file).peers[0]
    assert peer.psk == Secret(b"from-file")
    assert peer.psk_file == "secrets/b1.psk"


def test_config_without_peers_is_valid() -> None:
    config = load_text("[global]\nenabled = true\n")
    assert config.peers == () and config.global_.enabled


def test_peer_lookup_by_name() -> None:
    config = load_text(MINIMAL)
    assert config.peer("branch1") is config.peers[0]
    assert config.peer("nope") is None
    assert config.peer_names == ("branch1",)


def test_validate_text_returns_problem_lines() -> None:
    assert validate_text(MINIMAL) == []
    assert validate_text(MINIMAL + "mtu = 1\n", "live") == [
        "live:7: peer[0].mtu: 1 is out of range 576..9000"
    ]


def test_the_shipped_config_is_valid_and_disabled() -> None:
    config = load(REPO_CONFIG)
    assert isinstance(config, Config)
    assert config.global_.enabled is False
    branch, shop = config.peers
    assert branch.ike_version == 2 and branch.address is not None and branch.routes
    assert shop.ike_version == 1 and shop.exchange_mode is ExchangeMode.AGGRESSIVE
    assert shop.remote_address is DYNAMIC and shop.remote_id.startswith("fqdn:")


def test_the_shipped_config_mentions_every_key() -> None:
    from core.config.load import GLOBAL_KEYS, PEER_KEYS

    text = REPO_CONFIG.read_text()
    for key in [*GLOBAL_KEYS, *PEER_KEYS]:
        assert f"{key} = " in text, key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7", Identity(IdKind.IPV4_ADDR, "198.51.100.7")),
        ("2001:db8::7", Identity(IdKind.IPV6_ADDR, "2001:db8::7")),
        ("fqdn:vpn.example.net", Identity(IdKind.FQDN, "vpn.example.net")),
        ("vpn.example.net", Identity(IdKind.FQDN, "vpn.example.net")),
        ("user:ops@example.net", Identity(IdKind.USER_FQDN, "ops@example.net")),
        ("keyid:0A1b", Identity(IdKind.KEY_ID, "0a1b")),
    ],
)
def test_parse_identity(text: str, expected: Identity) -> None:
    assert parse_identity(text) == expected


@pytest.mark.parametrize("text", ["keyid:xyz", "user:nobody", "fqdn:", "bad name!", "x:y"])
def test_parse_identity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_identity(text)
