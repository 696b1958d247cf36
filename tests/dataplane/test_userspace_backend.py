"""The userspace backend's rules and crash recovery, in a namespace of its own (root only)."""

from __future__ import annotations

import ipaddress
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.dataplane.model import Direction, InterfaceSpec, if_id_for
from tests.dataplane.scenario import OUTER_A, OUTER_B, Agent, ScenarioError, sa_pair, sh

FACTORY = "core.dataplane.userspace.backend:UserspaceDataplane"
pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"rbdp-u-{os.getpid() % 100000}-{time.monotonic_ns() % 100000}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "addr", "add", f"{OUTER_A}/32", "dev", "lo")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def agent(namespace: str) -> Iterator[Agent]:
    with tempfile.TemporaryFile("w+") as log:
        agent = Agent(namespace, FACTORY, log)
        try:
            yield agent
        finally:
            agent.close()


def links(namespace: str) -> str:
    return sh("ip", "-n", namespace, "-o", "link", "show").stdout


def test_start_removes_what_a_crashed_run_left(namespace: str, agent: Agent) -> None:
    sh("ip", "-n", namespace, "tuntap", "add", "dev", "ipsec5", "mode", "tun")
    sh("ip", "-n", namespace, "tuntap", "add", "dev", "tunother", "mode", "tun")
    sh("ip", "-n", namespace, "route", "add", "unreachable", "10.5.0.0/16", "metric",
       str(0xFFFFFF00), "proto", "114")  # fmt: skip
    sh("ip", "-n", namespace, "route", "add", "unreachable", "10.6.0.0/16", "metric", "7")
    agent.request("start")
    assert "ipsec5" not in links(namespace)
    assert "tunother" in links(namespace)  # not ours: left alone
    routes = sh("ip", "-n", namespace, "route", "show").stdout
    assert "10.5.0.0/16" not in routes
    assert "10.6.0.0/16" in routes


def test_rules_are_enforced_and_nothing_is_half_installed(namespace: str, agent: Agent) -> None:
    agent.request("start")
    spec = InterfaceSpec(
        name="ipsec3", if_id=if_id_for(3), address=ipaddress.IPv4Interface("10.3.0.1/30")
    )
    agent.call("create_interface", spec)
    failures: dict[str, tuple[Any, ...]] = {
        "duplicate": ("create_interface", spec),
        "bad name": ("create_interface", InterfaceSpec(name="eth9", if_id=if_id_for(9))),
        "bad mtu": ("create_interface", InterfaceSpec(name="ipsec9", if_id=9, mtu=10)),
        "unknown link": ("set_link", "ipsec7", True),
        "unknown counters": ("interface_counters", "ipsec7"),
        "if_id change": ("update_interface", InterfaceSpec(name="ipsec3", if_id=if_id_for(4))),
        "no such SA": ("sa_counters", 1, Direction.IN, if_id_for(3)),
    }
    for label, (method, *args) in failures.items():
        assert isinstance(method, str)
        with pytest.raises(ScenarioError, match="DataplaneError") as caught:
            agent.call(method, *args)
        assert "ipsec" in str(caught.value) or "SA" in str(caught.value), label
    assert "ipsec9" not in links(namespace)

    out, _ = sa_pair("aes-gcm-256", 0x77, OUTER_A, OUTER_B, encap=False)
    orphan = type(out)(**{**out.__dict__, "if_id": if_id_for(8)})
    with pytest.raises(ScenarioError, match="no interface has if_id"):
        agent.call("add_sa", orphan)
    short_key = type(out)(**{**out.__dict__, "if_id": if_id_for(3), "encryption_key": b"k"})
    with pytest.raises(ScenarioError, match="AES-GCM needs") as caught:
        agent.call("add_sa", short_key)
    assert "6b" not in str(caught.value)  # the key is never shown

    agent.call("update_interface", InterfaceSpec(
        name="ipsec3", if_id=if_id_for(3), mtu=1280,
        address=ipaddress.IPv4Interface("10.3.1.1/24"),
    ))  # fmt: skip
    shown = sh("ip", "-n", namespace, "addr", "show", "ipsec3").stdout
    assert "mtu 1280" in shown and "10.3.1.1/24" in shown and "10.3.0.1" not in shown

    agent.call("delete_interface", "ipsec3")
    agent.call("delete_interface", "ipsec3")  # deleting what is gone is fine
    assert "ipsec3" not in links(namespace)
    routes = sh("ip", "-n", namespace, "route", "show", "table", "all").stdout
    assert "unreachable" not in routes


def raw_esp_sockets(namespace: str) -> list[ipaddress.IPv4Address]:
    """Local addresses of the IPv4 raw sockets for protocol 50 in `namespace`."""
    table = sh("ip", "netns", "exec", namespace, "cat", "/proc/net/raw").stdout.splitlines()[1:]
    bound = []
    for line in table:
        address, protocol = line.split()[1].split(":")
        if int(protocol, 16) == 50:  # a raw socket's "port" is its protocol
            bound.append(ipaddress.IPv4Address(int(address, 16).to_bytes(4, "little")))
    return sorted(bound)


def test_one_raw_esp_socket_per_local_address_closed_with_its_last_sa(
    namespace: str, agent: Agent
) -> None:
    agent.request("start")
    if_id = if_id_for(2)
    agent.call("create_interface", InterfaceSpec(name="ipsec2", if_id=if_id))
    other_local = ipaddress.IPv4Address("198.51.100.9")  # not configured: IP_FREEBIND
    out, _ = sa_pair("aes-gcm-128", 0x100, OUTER_A, OUTER_B, encap=False)
    _, inbound_back = sa_pair("aes-gcm-128", 0x200, OUTER_B, OUTER_A, encap=False)
    _, elsewhere = sa_pair("aes-gcm-128", 0x300, OUTER_B, other_local, encap=False)
    encap_out, _ = sa_pair("aes-gcm-128", 0x400, OUTER_A, OUTER_B, encap=True)
    for spec in (out, inbound_back, elsewhere, encap_out):
        agent.call("add_sa", type(spec)(**{**spec.__dict__, "if_id": if_id}))
    # Outbound from A and inbound to A share A's socket; ESP in UDP needs none.
    assert raw_esp_sockets(namespace) == [OUTER_A, other_local]
    agent.call("delete_sa", 0x300, Direction.IN, if_id)
    assert raw_esp_sockets(namespace) == [OUTER_A]
    agent.call("delete_sa", 0x100, Direction.OUT, if_id)
    assert raw_esp_sockets(namespace) == [OUTER_A]  # the inbound SA still uses it
    agent.call("delete_interface", "ipsec2")
    assert raw_esp_sockets(namespace) == []
