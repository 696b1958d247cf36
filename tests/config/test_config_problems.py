"""A table of bad configs: each yields its exact problem line and `rbipsec check` exits 2."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from core.cli import main
from core.config import load_text, validate_text
from core.crypto.proposals import ProposalError, parse_esp_proposal, parse_ike_proposal
from core.errors import ConfigError

# The peer every case starts from, one key per line.  With no global lines the layout is:
# 1 [global], 2 blank, 3 [[peer]], 4 name, 5 interface, 6 local_address, 7 remote_address,
# 8 psk, then the extra keys of the case from line 9 on.  Overriding a base key keeps its
# line; None drops it.
BASE_PEER = {
    "name": '"branch1"',
    "interface": '"ipsec1"',
    "local_address": '"198.51.100.1"',
    "remote_address": '"203.0.113.2"',
    "psk": '"secret"',
}


def config_text(global_lines: tuple[str, ...] = (), **peer: str | None) -> str:
    values = BASE_PEER | peer
    lines = ["[global]", *global_lines, "", "[[peer]]"]
    lines += [f"{key} = {value}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def peer_block(index: int) -> str:
    return (
        f'[[peer]]\nname = "p{index}"\ninterface = "ipsec{index % 64}"\n'
        f'local_address = "198.51.100.1"\nremote_address = "203.0.113.{index % 250 + 1}"\n'
        'psk = "s"\n'
    )


def proposal_message(parse: Callable[[str], object], text: str) -> str:
    try:
        parse(text)
    except ProposalError as error:
        return str(error)
    raise AssertionError(f"{text!r} was expected to be rejected")


CASES: list[tuple[str, str, list[str]]] = [
    # --- TOML syntax -----------------------------------------------------------------
    ("syntax", "[global]\nenabled = \n", ["2: syntax error: Invalid value (column 11)"]),
    (
        "duplicate-key",
        "[global]\nenabled = true\nenabled = false\n",
        ["3: syntax error: Cannot overwrite a value (column 16)"],
    ),
    ("unterminated", 'a = "x', ["1: syntax error: Unterminated string"]),
    # --- unknown keys and tables -------------------------------------------------------
    (
        "unknown-peer-key",
        config_text(mtuu="1400"),
        ['9: peer[0].mtuu: unknown key (did you mean "mtu"?)'],
    ),
    ("unknown-global-key", config_text(("colour = 1",)), ["2: global.colour: unknown key"]),
    (
        "unknown-table",
        config_text() + "[tunnels]\nx = 1\n",
        ["9: tunnels: unknown key (expected the [global] table and [[peer]] tables)"],
    ),
    ("peer-not-array", "[peer]\nname = 'a'\n", ["1: peer: must be an array of tables ([[peer]])"]),
    ("global-not-table", "global = 1\n", ["1: global: must be a table ([global])"]),
    # --- types and values --------------------------------------------------------------
    ("mtu-type", config_text(mtu='"1400"'), ["9: peer[0].mtu: must be an integer, not a string"]),
    (
        "enabled-type",
        config_text(enabled="1"),
        ["9: peer[0].enabled: must be true or false, not an integer"],
    ),
    ("name-missing", config_text(name=None), ["3: peer[0].name: missing (required)"]),
    (
        "name-pattern",
        config_text(name='"Branch 1"'),
        ["4: peer[0].name: \"Branch 1\" must be 1..32 characters of a-z, 0-9, '_' and '-'"],
    ),
    (
        "interface-range",
        config_text(interface='"ipsec64"'),
        ['5: peer[0].interface: "ipsec64" must be ipsec0 .. ipsec63'],
    ),
    (
        "interface-name",
        config_text(interface='"eth0"'),
        ['5: peer[0].interface: "eth0" must be ipsec0 .. ipsec63'],
    ),
    (
        "ike-version",
        config_text(ike_version="3"),
        ["9: peer[0].ike_version: must be 1 or 2, not 3"],
    ),
    (
        "exchange-mode-value",
        config_text(ike_version="1", exchange_mode='"quick"'),
        ['10: peer[0].exchange_mode: must be one of "main", "aggressive", not "quick"'],
    ),
    (
        "local-address-hostname",
        config_text(local_address='"gw.example.net"'),
        ['6: peer[0].local_address: "gw.example.net" must be an IP address, "dynamic" or "float"'],
    ),
    (
        "remote-address-garbage",
        config_text(remote_address='"not a host!"'),
        [
            '7: peer[0].remote_address: "not a host!" must be an IP address, a host name, '
            '"dynamic" or "float"'
        ],
    ),
    (
        "remote-address-unspecified",
        config_text(remote_address='"0.0.0.0"'),
        ['7: peer[0].remote_address: "0.0.0.0" is not a usable unicast address'],
    ),
    (
        "local-id-prefix",
        config_text(local_id='"fqdn:"'),
        ["9: peer[0].local_id: 'fqdn:' has nothing after fqdn:"],
    ),
    (
        "remote-id-kind",
        config_text(remote_id='"dn:CN=x"'),
        [
            "9: peer[0].remote_id: 'dn:CN=x' is neither an IP address nor "
            "fqdn:..., user:... or keyid:..."
        ],
    ),
    (
        "mode-value",
        config_text(mode='"tunel"'),
        ['9: peer[0].mode: must be one of "tunnel", "transport", not "tunel"'],
    ),
    (
        "nat-value",
        config_text(nat_traversal="true"),
        ["9: peer[0].nat_traversal: must be a string, not a boolean"],
    ),
    ("mtu-range", config_text(mtu="100"), ["9: peer[0].mtu: 100 is out of range 576..9000"]),
    (
        "tcp-mss-word",
        config_text(tcp_mss='"on"'),
        ['9: peer[0].tcp_mss: must be "auto", "off" or an integer 536..9000, not "on"'],
    ),
    (
        "tcp-mss-range",
        config_text(tcp_mss="100"),
        ["9: peer[0].tcp_mss: 100 is out of range 536..9000"],
    ),
    (
        "tcp-mss-mtu",
        config_text(mtu="1400", tcp_mss="1400"),
        ["10: peer[0].tcp_mss: 1400 does not fit mtu 1400 (at most 1360)"],
    ),
    (
        "dpd-negative",
        config_text(dpd_interval="-1"),
        ["9: peer[0].dpd_interval: -1 is out of range 0..86400 seconds"],
    ),
    (
        "dpd-retries-type",
        config_text(dpd_retries="true"),
        ["9: peer[0].dpd_retries: must be an integer, not a boolean"],
    ),
    (
        "ike-lifetime-short",
        config_text(ike_lifetime="30"),
        ["9: peer[0].ike_lifetime: 30 is out of range 60..31536000 seconds"],
    ),
    (
        "child-lifetime-float",
        config_text(child_lifetime="3600.0"),
        ["9: peer[0].child_lifetime: must be an integer, not a float"],
    ),
    # --- addresses and prefixes through the interface -------------------------------------
    (
        "address-ipv6",
        config_text(address='"fd00::1/64"'),
        [
            '9: peer[0].address: "fd00::1/64": the interface carries IPv4 only '
            "(IPv6 is not forwarded)"
        ],
    ),
    (
        "address-prefix",
        config_text(address='"10.255.1.1/33"'),
        ['9: peer[0].address: "10.255.1.1/33" is not an address with prefix, like 10.255.1.1/30'],
    ),
    (
        "address-network",
        config_text(address='"10.255.1.0/30"'),
        ['9: peer[0].address: "10.255.1.0/30" is not a host address of 10.255.1.0/30'],
    ),
    (
        "route-host-bits",
        config_text(routes='["10.2.0.1/24"]'),
        ['9: peer[0].routes[0]: "10.2.0.1/24" has host bits set (did you mean 10.2.0.0/24?)'],
    ),
    (
        "route-ipv6",
        config_text(routes='["10.2.0.0/24", "2001:db8::/32"]'),
        ['9: peer[0].routes[1]: "2001:db8::/32": only IPv4 is routed through the interface'],
    ),
    (
        "route-garbage",
        config_text(routes='["10.2.0.0/24", "lan"]'),
        ['9: peer[0].routes[1]: "lan" is not a prefix like 10.2.0.0/24'],
    ),
    (
        "route-twice",
        config_text(routes='["10.2.0.0/24", "10.2.0.0/24"]'),
        ["9: peer[0].routes[1]: 10.2.0.0/24 is listed twice"],
    ),
    (
        "routes-type",
        config_text(routes='"10.2.0.0/24"'),
        ["9: peer[0].routes: must be an array of IPv4 prefixes, not a string"],
    ),
    # --- rules between keys -------------------------------------------------------------------
    (
        "aggressive-ikev2",
        config_text(exchange_mode='"aggressive"'),
        ['9: peer[0].exchange_mode: "aggressive" exists only in IKEv1 (ike_version = 1)'],
    ),
    (
        "both-dynamic",
        config_text(
            local_address='"dynamic"',
            remote_address='"dynamic"',
            local_id='"fqdn:a.example"',
            remote_id='"fqdn:b.example"',
        ),
        [
            '7: peer[0].remote_address: local_address and remote_address cannot both be "dynamic" '
            "(one side behind NAT is supported, not both)"
        ],
    ),
    (
        "transport-dynamic",
        config_text(remote_address='"dynamic"', remote_id='"fqdn:b.example"', mode='"transport"'),
        ['10: peer[0].mode: transport mode needs fixed local and remote addresses, not "dynamic"'],
    ),
    (
        "ikev1-transport-ipv6",
        config_text(
            local_address='"2001:db8::1"',
            remote_address='"2001:db8::2"',
            ike_version="1",
            mode='"transport"',
        ),
        [
            "10: peer[0].mode: IKEv1 transport mode works between IPv4 addresses only (its "
            "quick mode has no IPv6 host selectors here); use ike_version = 2"
        ],
    ),
    (
        "ikev1-main-dynamic",
        config_text(
            remote_address='"dynamic"',
            remote_id='"fqdn:b.example"',
            ike_version="1",
            exchange_mode='"main"',
        ),
        [
            '11: peer[0].exchange_mode: IKEv1 with a "dynamic" address needs "aggressive" '
            "(main mode identifies the peer by its IP address)"
        ],
    ),
    (
        "dynamic-remote-without-id",
        config_text(remote_address='"dynamic"'),
        [
            '3: peer[0].remote_id: must be set when remote_address is "dynamic" '
            "(the peer is recognised by its ID)"
        ],
    ),
    (
        "dynamic-local-without-id",
        config_text(local_address='"dynamic"'),
        [
            '3: peer[0].local_id: must be set when local_address is "dynamic" '
            "(an address behind NAT means nothing to the peer)"
        ],
    ),
    (
        "family-mismatch",
        config_text(remote_address='"2001:db8::2"'),
        ["7: peer[0].remote_address: 2001:db8::2 is IPv6 but local_address 198.51.100.1 is IPv4"],
    ),
    (
        "ikev1-aead",
        config_text(ike_version="1", ike_proposals='["aes256gcm16-prfsha256-modp2048"]'),
        [
            '10: peer[0].ike_proposals[0]: "aes256gcm16-prfsha256-modp2048": an IKEv1 IKE SA '
            "cannot use AEAD algorithms (GCM, ChaCha20)"
        ],
    ),
    ("psk-missing", config_text(psk=None), ["3: peer[0].psk: missing (give psk or psk_file)"]),
    ("psk-empty", config_text(psk='""'), ["8: peer[0].psk: must not be empty"]),
    (
        "psk-and-file",
        config_text(psk_file='"secret.psk"'),
        ["9: peer[0].psk_file: give psk or psk_file, not both"],
    ),
    (
        "ike-proposal-unknown",
        config_text(ike_proposals='["aes256-sha256-modp2048", "aes256-foo-modp2048"]'),
        [
            "9: peer[0].ike_proposals[1]: "
            + proposal_message(parse_ike_proposal, "aes256-foo-modp2048")
        ],
    ),
    (
        "esp-proposal-unknown",
        config_text(esp_proposals='["aes256gcm16", "des-md5"]'),
        ["9: peer[0].esp_proposals[1]: " + proposal_message(parse_esp_proposal, "des-md5")],
    ),
    (
        "proposals-empty",
        config_text(esp_proposals="[]"),
        ["9: peer[0].esp_proposals: must list at least one proposal"],
    ),
    # --- global -------------------------------------------------------------------------------
    (
        "dataplane",
        config_text(('dataplane = "dpdk"',)),
        ['2: global.dataplane: must be one of "auto", "kernel", "userspace", not "dpdk"'],
    ),
    (
        "log-level",
        config_text(('log_level = "verbose"',)),
        ['2: global.log_level: must be one of "debug", "info", "warning", "error", not "verbose"'],
    ),
    (
        "socket-relative",
        config_text(('socket = "run/rbipsec.sock"',)),
        ['2: global.socket: "run/rbipsec.sock" must be an absolute path'],
    ),
    (
        "unnumbered-source",
        config_text(('unnumbered_source = "eth0/1"',)),
        ['2: global.unnumbered_source: "eth0/1" is not a valid interface name'],
    ),
    (
        "enabled-string",
        config_text(('enabled = "yes"',)),
        ["2: global.enabled: must be true or false, not a string"],
    ),
    # --- across peers ---------------------------------------------------------------------------
    (
        "duplicate-name-interface-route",
        config_text(routes='["10.2.0.0/24"]')
        + '\n[[peer]]\nname = "branch1"\ninterface = "ipsec1"\nlocal_address = "198.51.100.1"\n'
        'remote_address = "203.0.113.3"\npsk = "x"\nroutes = ["10.2.0.0/24"]\n',
        [
            '12: peer[1].name: "branch1" is already used by peer "branch1"',
            '13: peer[1].interface: "ipsec1" is already used by peer "branch1"',
            '17: peer[1].routes[0]: 10.2.0.0/24 is already routed to peer "branch1"',
        ],
    ),
    (
        "more-than-64-peers",
        "".join(peer_block(index) for index in range(65)),
        [
            '387: peer[64].interface: "ipsec0" is already used by peer "p0"',
            "385: peer[64]: more than 64 peers (one interface each, ipsec0..ipsec63)",
        ],
    ),
    # --- line numbers in unusual layouts ---------------------------------------------------------
    (
        "multi-line-array",
        config_text(routes='[\n  "10.2.0.0/24",\n  "10.3.0.1/24",\n]'),
        ['9: peer[0].routes[1]: "10.3.0.1/24" has host bits set (did you mean 10.3.0.0/24?)'],
    ),
    (
        "after-multi-line-string",
        config_text(psk='"""\nline\n[[peer]]\nmtu = 1\n"""', mtu="1"),
        ["13: peer[0].mtu: 1 is out of range 576..9000"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_bad_config_reports_its_problem_line(
    text: str,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("config.toml").write_text(text)
    assert main(["check", "-c", "config.toml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    expected_lines = [f"config.toml:{line}" for line in expected]
    assert sorted(captured.err.splitlines()) == sorted(expected_lines)


def test_problems_come_sorted_by_line() -> None:
    texts = {case_id: text for case_id, text, _expected in CASES}
    problems = validate_text(texts["more-than-64-peers"], "config.toml")
    lines = [int(problem.split(":")[1]) for problem in problems]
    assert lines == sorted(lines) and len(lines) == 2


def test_every_problem_of_one_config_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config_text(
        ("log_level = 3",),
        interface='"ipsec99"',
        remote_address='"dynamic"',
        mtu="70000",
        routes='["10.9.9.9/8", "fd00::/8"]',
        exchange_mode='"aggressive"',
        colour='"blue"',
    )
    monkeypatch.chdir(tmp_path)
    Path("config.toml").write_text(text)
    assert main(["check", "config.toml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "config.toml:2: global.log_level: must be a string, not an integer",
        'config.toml:4: peer[0].remote_id: must be set when remote_address is "dynamic" '
        "(the peer is recognised by its ID)",
        'config.toml:6: peer[0].interface: "ipsec99" must be ipsec0 .. ipsec63',
        "config.toml:10: peer[0].mtu: 70000 is out of range 576..9000",
        'config.toml:11: peer[0].routes[0]: "10.9.9.9/8" has host bits set '
        "(did you mean 10.0.0.0/8?)",
        'config.toml:11: peer[0].routes[1]: "fd00::/8": only IPv4 is routed through the interface',
        'config.toml:12: peer[0].exchange_mode: "aggressive" exists only in IKEv1 '
        "(ike_version = 1)",
        "config.toml:13: peer[0].colour: unknown key",
    ]


def test_psk_file_readable_by_others_is_a_problem(tmp_path: Path) -> None:
    secret = tmp_path / "branch1.psk"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    text = config_text(psk=None, psk_file='"branch1.psk"')
    with pytest.raises(ConfigError) as raised:
        load_text(text, str(tmp_path / "config.toml"))
    assert raised.value.problems == [
        f'{tmp_path}/config.toml:8: peer[0].psk_file: "{secret}" has mode 0644: '
        "group and others must have no access (chmod 600)"
    ]


def test_psk_file_missing_or_empty_is_a_problem(tmp_path: Path) -> None:
    text = config_text(psk=None, psk_file='"absent.psk"')
    assert validate_text(text, "config.toml", tmp_path) == [
        f'config.toml:8: peer[0].psk_file: cannot read "{tmp_path}/absent.psk": '
        "No such file or directory"
    ]
    empty = tmp_path / "empty.psk"
    empty.write_bytes(b"\n")
    empty.chmod(0o600)
    text = config_text(psk=None, psk_file=f'"{empty}"')
    assert validate_text(text, "config.toml", tmp_path) == [
        f'config.toml:8: peer[0].psk_file: "{empty}" is empty'
    ]


def test_unreadable_and_non_utf8_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["check", "-c", str(missing)]) == 2
    assert capsys.readouterr().err == f"{missing}: cannot read: No such file or directory\n"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[global]\nenabled = false\n# \xff\n")
    assert main(["check", str(binary)]) == 2
    assert capsys.readouterr().err == f"{binary}:3: syntax error: not UTF-8 text\n"
