"""float_link in config.toml: what is accepted, every problem with its line, the key file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from core.config import DYNAMIC, load_text, peer_values, validate_text
from core.config.floatlink import TsigKeyError, parse_tsig_key
from core.config.schema import FLOAT, FloatFamily
from tests.floatlink.bind import write_key_file

SECRET = bytes(range(32))
FLOAT_LINK = (
    'float_link = { zone = "vpn.example.", node = "branch1", peer_node = "hq", '
    'server = "198.51.100.53", tsig_key_file = "branch1.key", interval = 300, ttl = 900 }'
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_key_file(tmp_path / "branch1.key", "branch1-key", SECRET)
    return tmp_path


def text(*peer_lines: str, float_link: str = FLOAT_LINK) -> str:
    # Lines: 1 [global], 2 [[peer]], 3 name, 4 interface, 5 psk, 6 float_link, 7.. extra.
    lines = ["[global]", "[[peer]]", 'name = "hq"', 'interface = "ipsec2"', 'psk = "s"']
    return "\n".join([*lines, float_link, *peer_lines]) + "\n"


def problems(folder: Path, *peer_lines: str, float_link: str = FLOAT_LINK) -> list[str]:
    return validate_text(text(*peer_lines, float_link=float_link), "c.toml", folder)


def test_the_example_loads_with_float_addresses(folder: Path) -> None:
    peer = load_text(text(), "c.toml", folder).peers[0]
    link = peer.float_link
    assert link is not None
    assert (peer.local_address, peer.remote_address) == (FLOAT, FLOAT)
    assert peer.local_floats and peer.remote_floats
    assert (link.own_name, link.peer_name) == ("branch1.vpn.example.", "hq.vpn.example.")
    assert (link.interval, link.ttl, link.port, link.family) == (300, 900, 53, FloatFamily.IPV4)
    assert link.tsig_key.name == "branch1-key." and link.tsig_key.secret.value == SECRET
    assert base64.b64encode(SECRET).decode() not in repr(peer)


def test_saved_values_load_again(folder: Path) -> None:
    peer = load_text(text(), "c.toml", folder).peers[0]
    values = peer_values(peer)
    assert values["local_address"] == "float" and values["remote_address"] == "float"
    assert values["float_link"] == {
        "zone": "vpn.example.", "node": "branch1", "peer_node": "hq",
        "server": "198.51.100.53", "tsig_key_file": "branch1.key", "interval": 300, "ttl": 900,
    }  # fmt: skip


def test_behind_nat_and_peer_behind_nat_are_allowed(folder: Path) -> None:
    behind = text('local_address = "dynamic"', 'local_id = "fqdn:branch1.vpn.example"')
    peer = load_text(behind, "c.toml", folder).peers[0]
    assert peer.local_address is DYNAMIC and peer.remote_address is FLOAT
    peer_behind = text('remote_address = "dynamic"', 'remote_id = "fqdn:hq.vpn.example"')
    assert load_text(peer_behind, "c.toml", folder).peers[0].remote_address is DYNAMIC


def test_ikev1_aggressive_with_float_link_loads(folder: Path) -> None:
    lines = ("ike_version = 1", 'exchange_mode = "aggressive"',
             'ike_proposals = ["aes256-sha256-modp2048"]')  # fmt: skip
    assert problems(folder, *lines) == []


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ('local_address = "dynamic"', 'remote_address = "dynamic"', 'local_id = "a"',
             'remote_id = "b"'),
            ['c.toml:8: peer[0].remote_address: local_address and remote_address cannot both be '
             '"dynamic" (one side behind NAT is supported, not both); with float_link, "dynamic" '
             'means behind NAT: leave local_address out (or "float") when this node only changes '
             "its address"],
        ),
        (
            ('mode = "transport"',),
            ["c.toml:7: peer[0].mode: transport mode is not available with float_link "
             "(use tunnel)"],
        ),
        (
            ('remote_address = "203.0.113.2"',),
            ['c.toml:7: peer[0].remote_address: with float_link the peer\'s address comes from '
             'DNS (hq.vpn.example.): write "float" or leave the key out ("dynamic" if the peer '
             "sits behind NAT and finds us)"],
        ),
        (
            ("ike_version = 1", 'ike_proposals = ["aes256-sha256-modp2048"]'),
            ['c.toml:2: peer[0].exchange_mode: IKEv1 with float_link needs "aggressive" (main '
             "mode identifies the peer by its IP address, which changes)"],
        ),
        (
            ('local_address = "2001:db8::1"',),
            [],  # the family follows the fixed local address
        ),
    ],
)  # fmt: skip
def test_rules_against_the_other_keys(folder: Path, lines: tuple[str, ...],
                                      expected: list[str]) -> None:  # fmt: skip
    assert problems(folder, *lines) == expected


def test_float_without_float_link(folder: Path) -> None:
    found = problems(folder, 'local_address = "float"', float_link='remote_address = "float"')
    assert found == [
        'c.toml:6: peer[0].remote_address: "float" needs a float_link table (the address is '
        "kept in DNS)",
        'c.toml:7: peer[0].local_address: "float" needs a float_link table (the address is '
        "kept in DNS)",
    ]


def test_every_problem_of_the_table_at_once(folder: Path) -> None:
    table = "\n".join([
        "[peer.float_link]", 'zone = "vpn.example"', 'node = "-x"', 'peer_node = "a.b"',
        'server = "dns.example"', "interval = 5", "ttl = 5", "port = 0", 'family = "ipx"',
        "color = 1",
    ])  # fmt: skip
    found = problems(folder, float_link=table)
    assert found == [
        "c.toml:6: peer[0].float_link.tsig_key_file: missing (required)",
        'c.toml:7: peer[0].float_link.zone: "vpn.example" must be an absolute name ending with '
        'a dot, like "vpn.example."',
        'c.toml:8: peer[0].float_link.node: "-x" must be one DNS label: 1..63 letters, digits '
        "and '-', not starting or ending with '-'",
        'c.toml:9: peer[0].float_link.peer_node: "a.b" must be one DNS label: 1..63 letters, '
        "digits and '-', not starting or ending with '-'",
        'c.toml:10: peer[0].float_link.server: "dns.example" must be the DNS server\'s IP address',
        "c.toml:11: peer[0].float_link.interval: 5 is out of range 10..86400 seconds",
        "c.toml:12: peer[0].float_link.ttl: 5 is out of range 10..604800 seconds",
        "c.toml:13: peer[0].float_link.port: 0 is out of range 1..65535",
        'c.toml:14: peer[0].float_link.family: must be one of "ipv4", "ipv6", not "ipx"',
        "c.toml:15: peer[0].float_link.color: unknown key (known: zone, node, peer_node, "
        "server, tsig_key_file, interval, ttl, port, family)",
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('interval = 600, ttl = 300', "6: peer[0].float_link.ttl: 300 is shorter than interval "
         "600: records would expire from caches between refreshes"),
        ("interval = 1200", "6: peer[0].float_link.ttl: missing: the default 900 is shorter "
         "than interval 1200"),
        ('node = "hq"', "6: peer[0].float_link.peer_node: must differ from node (the peer has "
         "its own name)"),
        ("zone = 7", "6: peer[0].float_link.zone: must be a string, not an integer"),
    ],
)  # fmt: skip
def test_table_values(folder: Path, settings: str, expected: str) -> None:
    base = {"zone": '"vpn.example."', "node": '"branch1"', "peer_node": '"hq"',
            "server": '"198.51.100.53"', "tsig_key_file": '"branch1.key"'}  # fmt: skip
    for item in settings.split(", "):
        key, value = item.split(" = ")
        base[key] = value
    table = "float_link = { " + ", ".join(f"{k} = {v}" for k, v in base.items()) + " }"
    assert problems(folder, float_link=table) == [f"c.toml:{expected}"]


def test_key_file_permissions_and_absence(folder: Path) -> None:
    os.chmod(folder / "branch1.key", 0o644)
    assert problems(folder) == [
        f'c.toml:6: peer[0].float_link.tsig_key_file: "{folder}/branch1.key" has mode 0644: '
        "group and others must have no access (chmod 600)"
    ]
    (folder / "branch1.key").unlink()
    assert problems(folder) == [
        f'c.toml:6: peer[0].float_link.tsig_key_file: cannot read "{folder}/branch1.key": '
        "No such file or directory"
    ]


def test_bind_key_files_parse() -> None:
    secret = base64.b64encode(SECRET).decode()
    key = parse_tsig_key(
        f'# made by tsig-keygen\nkey "Branch1-Key." {{\n  algorithm HMAC-SHA256;\n'
        f'  /* the secret */ secret "{secret}"; // base64\n}};\n'
    )
    assert (key.name, key.algorithm, key.secret.value) == ("branch1-key.", "hmac-sha256", SECRET)
    assert secret not in repr(key)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "expected a BIND key statement"),
        ('key "k" { algorithm hmac-md5; secret "AAAA"; };', 'algorithm "hmac-md5" is not '
         "supported (use hmac-sha256)"),
        ('key "k" { algorithm hmac-sha256; };', "the key statement has no secret"),
        ('key "k" { algorithm hmac-sha256; secret "not base64!"; };', "the secret is not base64"),
        ('key "k" { algorithm hmac-sha256; secret "AAAA"; };', "the secret has 3 bytes; use at "
         "least 16"),
        ('key "k" { algorithm hmac-sha256 secret "AAAA"; };', "expected 'algorithm VALUE;'"),
        ('key "k" { algorithm hmac-sha256; secret "AAAA"; }; key "j" {};', "expected one key"),
        ('key "a b" { algorithm hmac-sha256; secret "AAAA"; };', '"a b" is not a valid key'),
    ],
)  # fmt: skip
def test_bad_key_files(content: str, message: str) -> None:
    with pytest.raises(TsigKeyError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_tsig_key(content)
