"""In-memory test rig for the daemon: a network of fake transports, fake NetInfo, configs.

`Lab` runs daemons on one asyncio loop, each with a FakeDataplane and a `MemoryTransport`
attached to a `MemoryNetwork` that delivers datagrams between them (optionally through a
NAT, optionally dropping some).  Everything uses the real loop clock, so waits are short
polls with a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import Config, load
from core.crypto.random import SeededRandomSource
from core.daemon.service import Daemon
from core.daemon.transport import DatagramSink
from core.dataplane.fake import FakeDataplane
from core.ike.events import Address
from core.ike.policy import Timing

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
A_HOST = "198.51.100.1"
B_HOST = "198.51.100.2"
FAST = Timing(retransmit_timeout=0.3, reestablish_backoff=(0.2,), half_open_timeout=5.0)


class MemoryNetwork:
    def __init__(self) -> None:
        self.transports: dict[str, MemoryTransport] = {}
        self.drop: Callable[[bytes, Address, Address], bool] = lambda data, src, dst: False
        self.sent: list[tuple[bytes, Address, Address]] = []

    def deliver(self, data: bytes, source: Address, destination: Address) -> None:
        self.sent.append((data, source, destination))
        if self.drop(data, source, destination):
            return
        target = self.transports.get(destination.host)
        if target is None or target.sink is None or not target.opened:
            return
        asyncio.get_running_loop().call_soon(
            target.sink.datagram_received, data, destination, source
        )


class MemoryTransport:
    def __init__(self, network: MemoryNetwork, hosts: tuple[str, ...]) -> None:
        self.network = network
        self.hosts = hosts
        self.sink: DatagramSink | None = None
        self.opened = False
        self.sent: list[tuple[bytes, Address, Address]] = []
        for host in hosts:
            network.transports[host] = self

    async def open(self, sink: DatagramSink) -> None:
        self.sink = sink
        self.opened = True

    def send(self, data: bytes, local: Address, remote: Address) -> None:
        host = local.host if local.host in self.hosts else self.hosts[0]
        self.sent.append((data, Address(host, local.port), remote))
        self.network.deliver(data, Address(host, local.port), remote)

    def encap_sockets(self) -> list[socket.socket]:
        return []

    def close(self) -> None:
        self.opened = False


@dataclass
class FakeNetInfo:
    source: str = A_HOST
    borrowed: str = "192.0.2.77"
    names: dict[str, str] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    async def route_source(self, destination: IPAddress) -> IPAddress:
        return ipaddress.ip_address(self.source)

    async def unnumbered_source(self, interface: str) -> ipaddress.IPv4Address:
        self.lookups.append(interface)
        return ipaddress.IPv4Address(self.borrowed)

    async def resolve(self, host: str, family: int | None) -> IPAddress:
        try:
            return ipaddress.ip_address(self.names[host])
        except KeyError:
            raise OSError(f"cannot resolve {host!r}") from None


def peer_toml(
    name: str,
    interface: str,
    local: str,
    remote: str,
    *,
    psk: str = "a shared secret for the tests",
    **extra: Any,
) -> str:
    lines = [
        "[[peer]]",
        f'name = "{name}"',
        f'interface = "{interface}"',
        f'local_address = "{local}"',
        f'remote_address = "{remote}"',
        f'psk = "{psk}"',
    ]
    for key, value in extra.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            items = ", ".join(f'"{item}"' for item in value)
            lines.append(f"{key} = [{items}]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


def config_text(socket_path: Path, *peers: str, enabled: bool = True) -> str:
    head = textwrap.dedent(
        f"""\
        [global]
        enabled = {"true" if enabled else "false"}
        socket = "{socket_path}"
        log_level = "debug"
        """
    )
    return head + "\n" + "\n".join(peers)


def write_config(path: Path, text: str) -> Config:
    path.write_text(text)
    return load(path)


@dataclass
class Node:
    daemon: Daemon
    dataplane: FakeDataplane
    transport: MemoryTransport
    netinfo: FakeNetInfo
    config_path: Path


class Lab:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.network = MemoryNetwork()
        self.nodes: list[Node] = []

    def node(self, name: str, hosts: tuple[str, ...], text: str, *, seed: int = 1) -> Node:
        path = self.tmp_path / f"{name}.toml"
        config = write_config(path, text)
        dataplane = FakeDataplane()
        transport = MemoryTransport(self.network, hosts)
        netinfo = FakeNetInfo(source=hosts[0])
        daemon = Daemon(
            config,
            dataplane=dataplane,
            transport_factory=lambda: transport,
            netinfo=netinfo,
            rng=SeededRandomSource(seed),
            timing=FAST,
        )
        node = Node(daemon, dataplane, transport, netinfo, path)
        self.nodes.append(node)
        return node

    async def start(self) -> None:
        for node in self.nodes:
            await node.daemon.start()

    async def stop(self) -> None:
        for node in self.nodes:
            await node.daemon.stop()


async def wait_for(
    condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def settle(daemon: Daemon) -> None:
    """Let queued dataplane jobs finish."""
    await daemon._submit(_nothing)


async def _nothing() -> None:
    return None


def state(daemon: Daemon, name: str) -> str:
    return daemon.state_of(daemon.peers[name])
