"""A dataplane agent for the end-to-end scenario: one per network namespace.

Run as `ip netns exec NS python agent.py --factory package.module:callable`; the factory
builds a `Dataplane`.  The agent reads one JSON request per line on stdin and answers one
JSON line on stdout:

  {"op": "start"}                                   start the backend, collect its events
  {"op": "call", "method": "add_sa", "args": [...]} any Dataplane method (values tagged)
  {"op": "open_encap", "address": A, "port": 4500}  the daemon's UDP transport on that port
                                                    (A's family), its socket registered with
                                                    the backend; ESP on it (first four bytes
                                                    not zero) goes to handle_encapsulated_esp
  {"op": "capture_start", "name": N, "ifname": IF}  an AF_PACKET capture of IPv4 packets
  {"op": "capture_stop", "name": N}                 -> [{"outgoing": bool, "packet": hex}]
  {"op": "events"}                                  -> the events so far
  {"op": "tcp_syn", "dst": A, "port": P}            a TCP connect attempt (SYN, maybe more)
  {"op": "tcp_listen", "address": A, "port": P}     a listening TCP socket
  {"op": "tcp_accepted_mss", "port": P}             accept on it -> the connection's MSS
  {"op": "exit"}                                    stop the backend and leave
Replies: {"ok": true, "result": ...} or {"ok": false, "error": "Type: message"}.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import socket
import sys
from typing import Any

from core.daemon.transport import UdpTransport
from core.dataplane.api import Dataplane
from core.dataplane.model import DataplaneEvent
from core.ike.constants import NAT_KEEPALIVE, NAT_T_PORT, NON_ESP_MARKER
from core.ike.events import Address
from tests.dataplane.agent_codec import decode, encode

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
MAX_CAPTURED = 2000


class Capture:
    """IPv4 packets seen on one interface, both directions, link header removed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ifname: str) -> None:
        self.loop = loop
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.packets: list[dict[str, Any]] = []
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, address = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            protocol, packet_type = address[1], address[2]
            if protocol == ETH_P_IP and len(self.packets) < MAX_CAPTURED:
                outgoing = packet_type == PACKET_OUTGOING
                self.packets.append({"outgoing": outgoing, "packet": data.hex()})

    def stop(self) -> list[dict[str, Any]]:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        return self.packets


class EncapSink:
    """What the daemon's service does with a datagram on port 4500 (RFC 3948 2.2): ESP
    (no non-ESP marker) to the dataplane; IKE and keepalives are not expected here."""

    def __init__(self, backend: Dataplane) -> None:
        self.backend = backend

    def datagram_received(self, data: bytes, local: Address, remote: Address) -> None:
        if local.port != NAT_T_PORT or data == NAT_KEEPALIVE:
            return
        if data[:4] != NON_ESP_MARKER and len(data) > 8:
            self.backend.handle_encapsulated_esp(data, local, remote)


class Agent:
    def __init__(self, backend: Dataplane) -> None:
        self.backend = backend
        self.loop = asyncio.get_running_loop()
        self.events: list[DataplaneEvent] = []
        self.captures: dict[str, Capture] = {}
        self.transports: list[UdpTransport] = []
        self.listeners: dict[int, socket.socket] = {}
        self.started = False

    async def handle(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        if op == "start":
            await self.backend.start(self.events.append)
            self.started = True
            return None
        if op == "call":
            result = getattr(self.backend, request["method"])(*decode(request.get("args", [])))
            if asyncio.iscoroutine(result):
                result = await result
            return result
        if op == "open_encap":
            return await self.open_encap(request["address"], request["port"])
        if op == "capture_start":
            self.captures[request["name"]] = Capture(self.loop, request["ifname"])
            return None
        if op == "capture_stop":
            await asyncio.sleep(0.1)  # let the last packets arrive
            return self.captures.pop(request["name"]).stop()
        if op == "events":
            return list(self.events)
        if op == "tcp_syn":
            return await self.tcp_syn(request["dst"], request["port"])
        if op == "tcp_listen":
            return self.tcp_listen(request["address"], request["port"])
        if op == "tcp_accepted_mss":
            return await self.tcp_accepted_mss(request["port"])
        if op == "exit":
            await self.shutdown()
            return None
        raise ValueError(f"unknown op {op!r}")

    async def open_encap(self, address: str, port: int) -> None:
        """The daemon's own port-4500 path: its UDP transport (wildcard socket, PKTINFO)
        and the demultiplexing its service does, so that benchmarks measure what the
        daemon runs.  `address` only picks the family."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        transport = UdpTransport(ports=(port,), families=(family,))
        await transport.open(EncapSink(self.backend))
        self.transports.append(transport)
        for sock in transport.encap_sockets():
            self.backend.register_encap_socket(sock)

    async def tcp_syn(self, dst: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((dst, port))
        await asyncio.sleep(0.3)
        sock.close()

    def tcp_listen(self, address: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(4)
        sock.setblocking(False)
        self.listeners[port] = sock

    async def tcp_accepted_mss(self, port: int) -> int:
        """The MSS of an accepted connection: what the peer's SYN said, as we got it."""
        listener = self.listeners.pop(port)
        try:
            connection, _ = await asyncio.wait_for(self.loop.sock_accept(listener), 3.0)
        finally:
            listener.close()
        with connection:
            return connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)

    async def shutdown(self) -> None:
        for capture in self.captures.values():
            capture.stop()
        self.captures.clear()
        if self.started:
            await self.backend.stop()
            self.started = False
        for transport in self.transports:
            transport.close()
        self.transports.clear()


def load_factory(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


async def serve(factory: str) -> None:
    agent = Agent(load_factory(factory)())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            try:
                reply = {"ok": True, "result": encode(await agent.handle(request))}
            except Exception as error:  # the test wants every failure as an answer
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if request["op"] == "exit":
                return
    finally:
        await agent.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--factory", required=True, help="package.module:callable")
    asyncio.run(serve(parser.parse_args().factory))


if __name__ == "__main__":
    main()
