"""The UDP transport on loopback (high ports), and the daemon's port-4500 demultiplexing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from core.daemon.transport import UdpTransport
from core.ike.events import Address
from tests.daemon.harness import Lab, config_text, peer_toml, settle


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address, Address]] = []

    def datagram_received(self, data: bytes, local: Address, remote: Address) -> None:
        self.received.append((data, local, remote))


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_local_address_is_learnt_and_replies_leave_from_it(family: str) -> None:
    if family == "ipv6" and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    host = "127.0.0.1" if family == "ipv4" else "::1"
    af = socket.AF_INET if family == "ipv4" else socket.AF_INET6

    async def scenario() -> None:
        probe = socket.socket(af, socket.SOCK_DGRAM)
        probe.bind((host, 0))
        port = probe.getsockname()[1]
        probe.close()  # a free port for the transport under test
        transport = UdpTransport(ports=(port,), families=(af,))
        sink = Sink()
        await transport.open(sink)
        peer = socket.socket(af, socket.SOCK_DGRAM)
        peer.bind((host, 0))
        peer.setblocking(False)
        try:
            peer.sendto(b"hello", (host, port))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2
            while not sink.received and loop.time() < deadline:
                await asyncio.sleep(0.01)
            ((data, local, remote),) = sink.received
            assert data == b"hello" and local == Address(host, port)
            assert remote == Address(host, peer.getsockname()[1])
            transport.send(b"answer", local, remote)
            answer, source = await loop.sock_recvfrom(peer, 100)
            assert answer == b"answer" and source[:2] == (host, port)
            transport.send(b"lost", Address(host, port), Address("not-an-ip", 1))
            assert transport.send_errors == 1
        finally:
            peer.close()
            transport.close()

    asyncio.run(scenario())


def test_addresses_stay_right_past_the_cache_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsed addresses are reused; with more distinct senders and destinations than the
    cache holds, every datagram still carries its own (local, remote)."""
    monkeypatch.setattr("core.daemon.transport.ADDRESS_CACHE_SIZE", 2)

    async def scenario() -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        transport = UdpTransport(ports=(port,), families=(socket.AF_INET,))
        sink = Sink()
        await transport.open(sink)
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        expected: list[tuple[bytes, Address, Address]] = []
        try:
            for round_ in range(2):
                for index, sender in enumerate(senders):
                    if round_ == 0:
                        sender.bind((f"127.0.0.{index + 1}", 0))
                    for destination in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
                        data = f"{round_}-{index}-{destination}".encode()
                        sender.sendto(data, (destination, port))
                        expected.append((data, Address(destination, port),
                                         Address(*sender.getsockname())))  # fmt: skip
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2
            while len(sink.received) < len(expected) and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert sorted(sink.received) == sorted(expected)
        finally:
            for sender in senders:
                sender.close()
            transport.close()

    asyncio.run(scenario())


def test_port_4500_demultiplexing(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        node = lab.node(
            "a",
            ("198.51.100.1",),
            config_text(
                tmp_path / "a.sock",
                peer_toml("p", "ipsec1", "198.51.100.1", "198.51.100.2", passive=True),
            ),
        )
        await lab.start()
        try:
            await settle(node.daemon)
            daemon, dataplane = node.daemon, node.dataplane
            local, remote = Address("198.51.100.1", 4500), Address("198.51.100.2", 4500)
            daemon.datagram_received(b"\xff", local, remote)  # NAT keepalive: ignored
            esp = b"\x00\x00\x10\x01" + bytes(40)
            daemon.datagram_received(esp, local, remote)
            assert dataplane.encapsulated_received == [(esp, local, remote)]
            # IKE behind the non-ESP marker reaches the engine (a garbled one is dropped)
            daemon.datagram_received(b"\x00\x00\x00\x00" + b"garbage" * 5, local, remote)
            # a real IKE_SA_INIT from the peer: the answer goes back with the marker
            from core.crypto.random import SeededRandomSource
            from core.ike.v2.endpoint import Ikev2Endpoint
            from tests.ike.v2.pair import policy

            other = Ikev2Endpoint(
                [policy(name="x", local="198.51.100.2", remote="198.51.100.1")],
                SeededRandomSource(3),
            )
            other.connect("x", Address("198.51.100.2", 500), Address("198.51.100.1", 500), 0.0)
            (request,) = other.pop_datagrams()
            node.transport.sent.clear()
            daemon.datagram_received(b"\x00\x00\x00\x00" + request.data, local, remote)
            await settle(daemon)
            (reply, source, destination) = node.transport.sent[0]
            assert reply.startswith(b"\x00\x00\x00\x00") and destination == remote
            assert source == local
            assert len(dataplane.encapsulated_received) == 1
        finally:
            await lab.stop()

    asyncio.run(scenario())
