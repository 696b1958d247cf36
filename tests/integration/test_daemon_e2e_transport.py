"""End to end: transport mode between two daemons in namespaces (root).

Transport mode protects the traffic between the two outer addresses themselves: a ping
from OUTER_A to OUTER_B must cross ipsecN encrypted, while IKE and ESP keep taking the
outer link (they carry the bypass mark, see core/dataplane/bypass.py and
core/dataplane/xfrm/redirect.py).  nftables counters on the outer link prove it: ESP
arrives there, ICMP never does in clear (neither while the tunnel is up nor while it is
down), and the decrypted ICMP arrives through ipsec1.  Runs on the userspace dataplane
here and on the kernel one in the QEMU guest (RBIPSEC_E2E_DATAPLANE=kernel).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable

import pytest

from core.dataplane.model import TRANSPORT_TABLE
from tests.integration.netlab import (
    DATAPLANE,
    OUTER_A,
    OUTER_B,
    NetLab,
    global_section,
    nft_counters,
    peer_section,
    two_nodes,
    wait_until,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping"),
]

A, B = OUTER_A, OUTER_B
V1: dict[str, object] = {
    "ike_version": 1,
    "exchange_mode": "main",
    "ike_proposals": ["aes256-sha256-modp2048"],
    "esp_proposals": ["aes256-sha256"],
}
# What b sees arriving on its outer link, and through its tunnel interface.
ARRIVING = {
    "esp": 'iifname "outer0" meta l4proto esp',
    "udp4500": 'iifname "outer0" udp dport 4500',
    "clear_icmp": 'iifname "outer0" meta l4proto icmp',
    "tunnel_icmp": 'iifname "ipsec1" meta l4proto icmp',
}
# What a sends on its outer link in clear.
LEAVING = {"clear_icmp": 'oifname "outer0" meta l4proto icmp'}


def transport_configs(lab: NetLab, extra: dict[str, object] | None = None) -> tuple[str, str]:
    settings = {"mode": "transport", **(extra or {})}
    a = global_section(lab.workdir / "a.sock") + peer_section(
        name="tob", interface="ipsec1", local_address=A, remote_address=B, **settings)  # fmt: skip
    b = global_section(lab.workdir / "b.sock") + peer_section(
        name="toa", interface="ipsec1", local_address=B, remote_address=A, passive=True,
        **settings)  # fmt: skip
    return a, b


def leftovers(lab: NetLab, name: str) -> str:
    """Whatever of the transport-mode machinery is left in namespace `name` ("" if none)."""
    found = []
    rules = lab.run(name, "ip", "rule").stdout
    found += [line for line in rules.splitlines() if f"lookup {TRANSPORT_TABLE}" in line]
    table = lab.run(name, "ip", "route", "show", "table", str(TRANSPORT_TABLE), check=False)
    found += table.stdout.splitlines()
    filters = lab.run(name, "tc", "filter", "show", "dev", "outer0", "egress", check=False)
    found += [line for line in filters.stdout.splitlines() if "filter" in line]
    return "\n".join(found)


def replies_while_closed(lab: NetLab, count: int = 3) -> int:
    """Replies to a ping from a to B while the tunnel is closed: none is the answer.

    The guard makes connect() fail at once ("No route to host") on the userspace
    dataplane; the kernel's redirect into a down ipsec1 drops each packet (ENOBUFS)."""
    result = lab.run("a", "ping", "-c", str(count), "-i", "0.2", "-W", "1", B, check=False)
    match = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
    if match is None:
        assert "No route to host" in result.stderr, result.stderr
        return 0
    return int(match[2])


def assert_encrypted_ping(lab: NetLab, counters: Callable[[], dict[str, int]]) -> None:
    before = counters()
    assert lab.ping("a", B, count=5) == (5, 5)
    seen = {key: value - before[key] for key, value in counters().items()}
    assert seen["clear_icmp"] == 0, seen
    assert seen["esp"] + seen["udp4500"] >= 5 and seen["tunnel_icmp"] >= 5, seen


@pytest.mark.parametrize("version", [2, 1], ids=["ikev2", "ikev1"])
def test_transport_mode_ping_between_outer_addresses_is_encrypted(
    lab: NetLab, version: int
) -> None:
    two_nodes(lab)
    config_a, config_b = transport_configs(lab, V1 if version == 1 else None)
    a = lab.daemon("a", config_a)
    b = lab.daemon("b", config_b)
    with nft_counters(lab, "b", ARRIVING, hook="input") as arriving, \
            nft_counters(lab, "a", LEAVING) as leaving:  # fmt: skip
        b.start()
        a.start()  # IKE reaches b although traffic to B is routed into ipsec1 already
        a.wait_up("tob")
        b.wait_up("toa")
        assert_encrypted_ping(lab, arriving)
        assert leaving()["clear_icmp"] == 0
    assert a.status()["daemon"]["dataplane"] == DATAPLANE
    peer = a.peer("tob")
    assert peer["mode"] == "transport"
    assert all(child["mode"] == "transport" for child in peer["child_sas"])
    assert peer["traffic"]["packets_out"] >= 5 and peer["traffic"]["packets_in"] >= 5
    assert peer["remote"]["address"] == B
    assert a.stop() == 0 and b.stop() == 0
    assert leftovers(lab, "a") == "" and leftovers(lab, "b") == ""


def test_transport_mode_tunnel_down_drops_traffic_and_nothing_leaks(lab: NetLab) -> None:
    two_nodes(lab)
    config_a, config_b = transport_configs(lab)
    a = lab.daemon("a", config_a).start()
    b = lab.daemon("b", config_b).start()
    a.wait_up("tob")
    b.wait_up("toa")
    with nft_counters(lab, "b", ARRIVING, hook="input") as arriving, \
            nft_counters(lab, "a", LEAVING) as leaving:  # fmt: skip
        assert_encrypted_ping(lab, arriving)
        a.request("down", peer="tob")
        wait_until(lambda: not a.peer("tob")["link_up"], 10, "a's tunnel to go down")
        assert replies_while_closed(lab) == 0
        a.request("up", peer="tob")  # IKE still reaches b: the route into ipsec1 stays
        a.wait_up("tob")
        assert_encrypted_ping(lab, arriving)
        assert leaving()["clear_icmp"] == 0
        assert arriving()["clear_icmp"] == 0


def test_transport_mode_after_sigkill_stays_closed_and_restart_cleans_up(lab: NetLab) -> None:
    two_nodes(lab)
    config_a, config_b = transport_configs(lab)
    a = lab.daemon("a", config_a).start()
    b = lab.daemon("b", config_b).start()
    a.wait_up("tob")
    b.wait_up("toa")
    with nft_counters(lab, "a", LEAVING) as leaving:
        a.kill()  # no clean stop: what stays must keep traffic to B from leaving in clear
        assert replies_while_closed(lab) == 0
        assert leaving()["clear_icmp"] == 0
    assert leftovers(lab, "a") != ""
    a.start()  # cleans what the killed run left, then builds it again
    a.wait_up("tob", timeout=30)
    with nft_counters(lab, "b", ARRIVING, hook="input") as arriving:
        assert_encrypted_ping(lab, arriving)
    assert a.stop() == 0
    assert leftovers(lab, "a") == ""
