"""Transport mode with IPv6 outer addresses (in memory: FakeDataplane, memory transport).

The userspace dataplane carries IPv4 only: with IPv6 outer addresses the peer's traffic
enters ipsecN and is dropped.  The daemon says so at set-up (the peer's last error) and
installs no SA that could not carry anything; the kernel dataplane, and IPv4 outer
addresses, are not affected.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from core.dataplane.model import Direction, SaMode, TransportPeer
from tests.daemon.harness import (
    A_HOST,
    B_HOST,
    Lab,
    Node,
    config_text,
    peer_toml,
    settle,
    state,
    wait_for,
)

IPV6 = ("2001:db8::1", "2001:db8::2")
IPV4 = (A_HOST, B_HOST)


def _pair(tmp_path: Path, dataplane: str, hosts: tuple[str, str]) -> tuple[Node, Node, Lab]:
    lab = Lab(tmp_path)
    nodes: list[Node] = []
    for name, peer, local, remote, passive in (
        ("a", "tob", hosts[0], hosts[1], False),
        ("b", "toa", hosts[1], hosts[0], True),
    ):
        text = config_text(
            tmp_path / f"{name}.sock",
            peer_toml(peer, "ipsec1", local, remote, mode="transport", passive=passive),
        )
        node = lab.node(name, (local,), text, seed=len(nodes) + 1)
        node.dataplane.name = dataplane  # the only thing the daemon asks of it here
        nodes.append(node)
    return nodes[0], nodes[1], lab


async def _last_error(node: Node, name: str) -> str:
    (entry,) = (await node.daemon.status(name))["peers"]
    error: dict[str, Any] | None = entry["last_error"]
    return "" if error is None else str(error["message"])


def _ike_established(node: Node, name: str) -> bool:
    engine = node.daemon.engine
    sa = engine.current_sa(name) if engine is not None else None
    return sa is not None and sa.is_established


def test_userspace_refuses_ipv6_transport_mode_and_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        a, b, lab = _pair(tmp_path, "userspace", IPV6)
        await lab.start()
        try:
            # IKE runs (the engine knows nothing of dataplanes); the Child SA it brings
            # is refused on both sides.  The reason is known from the interface's creation.
            await settle(a.daemon)
            assert "IPv6" in await _last_error(a, "tob")
            await wait_for(lambda: _ike_established(a, "tob"), what="a's IKE SA")
            for node, name, local, remote in ((a, "tob", *IPV6), (b, "toa", *IPV6[::-1])):
                await settle(node.daemon)
                assert not node.dataplane.sas  # nothing installed that could not carry
                interface = node.dataplane.interfaces["ipsec1"]
                assert interface.spec.transport == TransportPeer(  # still routed in ...
                    remote=ipaddress.ip_address(remote), local=ipaddress.ip_address(local)
                )
                assert not interface.up  # ... and refused there, as before any tunnel
                assert state(node.daemon, name) != "up"
                message = await _last_error(node, name)
                assert "IPv6 outer address" in message and "userspace dataplane" in message
                assert remote in message
        finally:
            await lab.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("dataplane", "hosts"),
    [("kernel", IPV6), ("userspace", IPV4)],
    ids=["kernel-ipv6", "userspace-ipv4"],
)
def test_transport_mode_sas_installed_where_the_dataplane_carries_them(
    tmp_path: Path, dataplane: str, hosts: tuple[str, str]
) -> None:
    async def scenario() -> None:
        a, b, lab = _pair(tmp_path, dataplane, hosts)
        await lab.start()
        try:
            await wait_for(
                lambda: state(a.daemon, "tob") == "up" and state(b.daemon, "toa") == "up",
                what="both up",
            )
            await settle(a.daemon)
            specs = [sa.spec for sa in a.dataplane.sas.values()]
            assert {spec.direction for spec in specs} == {Direction.IN, Direction.OUT}
            assert all(spec.mode is SaMode.TRANSPORT for spec in specs)
            assert a.dataplane.interfaces["ipsec1"].up
            assert await _last_error(a, "tob") == ""
        finally:
            await lab.stop()

    asyncio.run(scenario())
