"""The end-to-end dataplane scenario, shared by every backend.

Two network namespaces joined by a veth pair (198.51.100.1/24 and .2/24, no default
route); in each an agent process (agent.py) builds the backend from a factory path
("package.module:callable") and takes commands over JSON lines.  Only the public
Dataplane API is used here, so the kernel XFRM backend runs the same checks inside its
QEMU guest.  Needs root and iproute2's `ip` and `ping`.

Entry points (each builds and removes its own lab):
- run_tunnel_scenario(factory, suite, encap): ping across, counters both ways, outer ToS 0
  while the inner ToS (ping -Q 0xb8) arrives intact.
- run_link_scenario(factory): link down = no cleartext, static routes back after a link
  flap, MSS clamp, traffic-while-down event and a make-before-break SA swap, expiry events.
- run_unnumbered_scenario(factory): an unnumbered interface borrowing a source address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    ExpiryKind,
    InterfaceCounters,
    InterfaceSpec,
    Lifetime,
    SaCounters,
    SaExpired,
    SaMode,
    SaSpec,
    TrafficWhileDown,
    UdpEncap,
    if_id_for,
)
from tests.dataplane.agent_codec import decode, encode

REPO = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).resolve().parent / "agent.py"
OUTER_A = ipaddress.IPv4Address("198.51.100.1")
OUTER_B = ipaddress.IPv4Address("198.51.100.2")
IF_ID = if_id_for(1)
TUNNEL = "ipsec1"
VETH = "outer0"
SPI_AB, SPI_BA = 0x0A0B0001, 0x0B0A0001

# name: (algorithm, encryption key length, integrity, integrity key length)
SUITES: dict[str, tuple[EspAlgorithm, int, EspIntegrity, int]] = {
    "aes-gcm-128": (EspAlgorithm.AES_GCM_16, 20, EspIntegrity.NONE, 0),
    "aes-gcm-256": (EspAlgorithm.AES_GCM_16, 36, EspIntegrity.NONE, 0),
    "chacha20-poly1305": (EspAlgorithm.CHACHA20_POLY1305, 36, EspIntegrity.NONE, 0),
    "aes-cbc-256-sha256": (EspAlgorithm.AES_CBC, 32, EspIntegrity.HMAC_SHA2_256_128, 32),
}


class ScenarioError(AssertionError):
    """A check of the scenario failed; the message says which and shows the evidence."""


def sh(*args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ScenarioError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


class Agent:
    """Drives one agent.py process inside a namespace."""

    def __init__(self, namespace: str, factory: str, log: IO[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        command = ["ip", "netns", "exec", namespace, sys.executable, str(AGENT)]
        self.namespace = namespace
        self.process = subprocess.Popen(
            [*command, "--factory", factory],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )  # fmt: skip
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def request(self, op: str, timeout: float = 15.0, **fields: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        if not self._selector.select(timeout):
            raise ScenarioError(f"{self.namespace}: no answer to {op} within {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            raise ScenarioError(f"{self.namespace}: the agent died during {op}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise ScenarioError(f"{self.namespace}: {op} failed: {reply['error']}")
        return decode(reply["result"])

    def call(self, method: str, *args: Any) -> Any:
        return self.request("call", method=method, args=encode(list(args)))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.process.poll() is None:
                self.request("exit", timeout=10.0)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._selector.close()


@dataclass
class Lab:
    ns_a: str
    ns_b: str
    a: Agent
    b: Agent

    def in_a(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns_a, *args, check=check)

    def in_b(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns_b, *args, check=check)

    def ping(self, dst: str, *options: str, count: int = 3) -> bool:
        result = self.in_a(
            "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", *options, dst,
            check=False,
        )  # fmt: skip
        return result.returncode == 0


@contextlib.contextmanager
def two_node_lab(factory: str) -> Iterator[Lab]:
    """Namespaces, veth, agents; everything is removed on the way out."""
    tag = f"{os.getpid() % 100000}-{time.monotonic_ns() % 100000}"
    ns_a, ns_b = f"rbdp-a-{tag}", f"rbdp-b-{tag}"
    with tempfile.NamedTemporaryFile("w+", prefix="rbdp-agents-", suffix=".log") as log:
        agents: list[Agent] = []
        try:
            for namespace in (ns_a, ns_b):
                sh("ip", "netns", "add", namespace)
            sh("ip", "-n", ns_a, "link", "add", VETH, "type", "veth", "peer", "name", VETH,
               "netns", ns_b)  # fmt: skip
            for namespace, address in ((ns_a, OUTER_A), (ns_b, OUTER_B)):
                sh("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", VETH)
                sh("ip", "-n", namespace, "link", "set", VETH, "up")
                sh("ip", "-n", namespace, "link", "set", "lo", "up")
            agents = [Agent(ns_a, factory, log), Agent(ns_b, factory, log)]
            for agent in agents:
                agent.request("start")
            yield Lab(ns_a, ns_b, agents[0], agents[1])
        except ScenarioError as error:
            log.flush()
            log.seek(0)
            raise ScenarioError(f"{error}\n--- agent log ---\n{log.read()}") from None
        finally:
            for agent in agents:
                agent.close()
            for namespace in (ns_a, ns_b):
                sh("ip", "netns", "del", namespace, check=False)


def sa_pair(
    suite: str, spi: int, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, *,
    encap: bool, lifetime: Lifetime | None = None,
) -> tuple[SaSpec, SaSpec]:  # fmt: skip
    """The same SA as the sender (OUT) and the receiver (IN) install it; fixed keys."""
    algorithm, key_length, integrity, integrity_key_length = SUITES[suite]
    out = SaSpec(
        spi=spi,
        direction=Direction.OUT,
        src=src,
        dst=dst,
        mode=SaMode.TUNNEL,
        algorithm=algorithm,
        encryption_key=bytes((spi + i) % 256 for i in range(key_length)),
        integrity=integrity,
        integrity_key=bytes((spi * 7 + i) % 256 for i in range(integrity_key_length)),
        encap=UdpEncap(sport=4500, dport=4500) if encap else None,
        if_id=IF_ID,
        lifetime=lifetime or Lifetime(),
    )
    inbound = SaSpec(**{**out.__dict__, "direction": Direction.IN})
    return out, inbound


def build_tunnel(
    lab: Lab, suite: str, *, encap: bool, tcp_mss_a: int | None = None,
    address_a: str | None = "10.0.0.1/30", address_b: str | None = "10.0.0.2/30",
    borrowed_a: str | None = None,
) -> None:  # fmt: skip
    """ipsec1 on both sides, policies, one SA each way, links up."""
    sides = ((lab.a, address_a, borrowed_a, tcp_mss_a), (lab.b, address_b, None, None))
    for agent, address, borrowed, tcp_mss in sides:
        spec = InterfaceSpec(
            name=TUNNEL,
            if_id=IF_ID,
            mtu=1400,
            address=ipaddress.IPv4Interface(address) if address else None,
            borrowed_source=ipaddress.IPv4Address(borrowed) if borrowed else None,
            tcp_mss=tcp_mss,
        )
        agent.call("create_interface", spec)
        agent.call("add_policies", IF_ID)
    if encap:
        lab.a.request("open_encap", address=str(OUTER_A), port=4500)
        lab.b.request("open_encap", address=str(OUTER_B), port=4500)
    install_sas(lab, suite, SPI_AB, SPI_BA, encap=encap)
    for agent in (lab.a, lab.b):
        agent.call("set_link", TUNNEL, True)


def install_sas(lab: Lab, suite: str, spi_ab: int, spi_ba: int, *, encap: bool) -> None:
    ab_out, ab_in = sa_pair(suite, spi_ab, OUTER_A, OUTER_B, encap=encap)
    ba_out, ba_in = sa_pair(suite, spi_ba, OUTER_B, OUTER_A, encap=encap)
    lab.b.call("add_sa", ab_in)  # inbound first: make before break
    lab.a.call("add_sa", ba_in)
    lab.a.call("add_sa", ab_out)
    lab.b.call("add_sa", ba_out)


def ipv4_packets(captured: list[dict[str, Any]]) -> list[tuple[bool, bytes]]:
    return [(item["outgoing"], bytes.fromhex(item["packet"])) for item in captured]


def is_esp_from(packet: bytes, src: ipaddress.IPv4Address) -> bool:
    """Raw ESP (protocol 50) or ESP in UDP/4500 (RFC 3948) sent by `src`."""
    if len(packet) < 28 or packet[12:16] != src.packed:
        return False
    header_length = (packet[0] & 0x0F) * 4
    if packet[9] == 50:
        return True
    udp = packet[header_length:]
    return packet[9] == 17 and udp[2:4] == (4500).to_bytes(2, "big") and udp[8:12] != bytes(4)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioError(message)


def wait_for_event(agent: Agent, wanted: Any, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        events = agent.request("events")
        if any(wanted(event) for event in events) or time.monotonic() > deadline:
            return list(events)
        time.sleep(0.2)


# -- the scenarios --------------------------------------------------------------------
def run_tunnel_scenario(factory: str, suite: str, *, encap: bool) -> None:
    with two_node_lab(factory) as lab:
        build_tunnel(lab, suite, encap=encap)
        lab.b.request("capture_start", name="outer", ifname=VETH)
        lab.b.request("capture_start", name="inner", ifname=TUNNEL)
        require(lab.ping("10.0.0.2", "-Q", "0xb8"), "ping across the tunnel failed")
        outer = ipv4_packets(lab.b.request("capture_stop", name="outer"))
        inner = ipv4_packets(lab.b.request("capture_stop", name="inner"))

        for agent, out_spi, in_spi in ((lab.a, SPI_AB, SPI_BA), (lab.b, SPI_BA, SPI_AB)):
            sent: SaCounters = agent.call("sa_counters", out_spi, Direction.OUT, IF_ID)
            received: SaCounters = agent.call("sa_counters", in_spi, Direction.IN, IF_ID)
            require(sent.packets >= 3 and sent.bytes > 0, f"{agent.namespace} sent {sent}")
            require(received.packets >= 3, f"{agent.namespace} received {received}")
            require(received.integrity_errors == received.replay_errors == 0, f"{received}")
            interface: InterfaceCounters = agent.call("interface_counters", TUNNEL)
            require(interface.tx_packets >= 3 and interface.rx_packets >= 3, f"{interface}")

        esp = [packet for _, packet in outer if is_esp_from(packet, OUTER_A)]
        require(len(esp) >= 3, f"no ESP from A on B's veth: {len(outer)} IPv4 packets seen")
        require(all(packet[1] == 0 for packet in esp), "the outer ToS is not 0")
        clear = [p for _, p in outer if p[9] == 1 and p[16:20] == bytes([10, 0, 0, 2])]
        require(not clear, "ICMP for 10.0.0.2 crossed the veth in clear")
        requests = [p for out, p in inner if not out and p[9] == 1 and p[20] == 8]
        require(len(requests) >= 3, f"echo requests not seen on B's {TUNNEL}")
        require(all(p[1] == 0xB8 for p in requests), "the inner ToS did not arrive intact")


def run_link_scenario(factory: str, suite: str = "aes-gcm-128", *, encap: bool = False) -> None:
    static = ipaddress.IPv4Network("10.9.0.0/24")
    with two_node_lab(factory) as lab:
        build_tunnel(lab, suite, encap=encap, tcp_mss_a=1200)
        lab.in_b("ip", "addr", "add", "10.9.0.1/32", "dev", "lo")
        # A covering route over the veth (to B, inside the lab): if the tunnel's routes
        # just vanished with its link, traffic would take this one, in clear.
        lab.in_a("ip", "route", "add", "10.0.0.0/8", "via", str(OUTER_B))
        lab.a.call("add_route", TUNNEL, static)
        require(lab.ping("10.9.0.1", count=2), "ping via the static route failed")

        # Link down: pings fail and nothing leaves A, neither in clear nor as ESP.
        lab.a.call("set_link", TUNNEL, False)
        lab.a.request("capture_start", name="down", ifname=VETH)
        require(not lab.ping("10.0.0.2", count=2), "ping succeeded with the link down")
        require(not lab.ping("10.9.0.1", count=2), "static route answered with the link down")
        leaked = ipv4_packets(lab.a.request("capture_stop", name="down"))
        sent = [p for out, p in leaked if out]
        require(not sent, f"{len(sent)} IPv4 packets left A while its tunnel was down")

        # Link up again: the static route is back.
        lab.a.call("set_link", TUNNEL, True)
        require(lab.ping("10.9.0.1", count=2), "the static route did not come back")

        # TCP MSS (A clamps to 1200, B does not; MTU 1400 means 1360 unclamped): SYNs
        # leaving A and SYNs entering A both reach their TCP stack with 1200.  Without
        # timestamps the connection's MSS is exactly the one its SYNs carried.
        for run_in in (lab.in_a, lab.in_b):
            run_in("sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_timestamps")
        lab.b.request("tcp_listen", address="10.0.0.2", port=5001)
        lab.a.request("tcp_syn", dst="10.0.0.2", port=5001)
        leaving = lab.b.request("tcp_accepted_mss", port=5001)
        lab.a.request("tcp_listen", address="10.0.0.1", port=5002)
        lab.b.request("tcp_syn", dst="10.0.0.1", port=5002)
        entering = lab.a.request("tcp_accepted_mss", port=5002)
        require((leaving, entering) == (1200, 1200), f"MSS seen: {leaving}, {entering}")

        # No outbound SA while up: traffic is dropped and reported, then a new SA pair
        # (new SPIs, as a rekey installs) carries it again.
        lab.a.call("delete_sa", SPI_AB, Direction.OUT, IF_ID)
        require(not lab.ping("10.0.0.2", count=2), "ping succeeded without an outbound SA")
        events = wait_for_event(lab.a, lambda e: isinstance(e, TrafficWhileDown), 3.0)
        require(TrafficWhileDown(if_id=IF_ID, interface=TUNNEL) in events, f"events: {events}")
        lab.b.call("delete_sa", SPI_BA, Direction.OUT, IF_ID)
        install_sas(lab, suite, SPI_AB + 1, SPI_BA + 1, encap=encap)
        require(lab.ping("10.0.0.2", count=2), "ping failed after installing new SAs")
        renewed: SaCounters = lab.b.call("sa_counters", SPI_AB + 1, Direction.IN, IF_ID)
        require(renewed.packets >= 2, f"the new SA carried nothing: {renewed}")

        # Lifetimes: soft then hard expiry reported for an SA that carries nothing.
        _, spare = sa_pair(suite, 0x5EED0001, OUTER_B, OUTER_A, encap=encap,
                           lifetime=Lifetime(soft_seconds=1, hard_seconds=2))  # fmt: skip
        lab.a.call("add_sa", spare)

        def expired(kind: ExpiryKind) -> SaExpired:
            return SaExpired(spi=spare.spi, direction=Direction.IN, kind=kind, if_id=IF_ID)

        events = wait_for_event(lab.a, lambda e: e == expired(ExpiryKind.HARD), 6.0)
        require(expired(ExpiryKind.SOFT) in events, f"no soft expiry: {events}")
        require(expired(ExpiryKind.HARD) in events, f"no hard expiry: {events}")

        # Stop removes everything: the interface, its routes, no guard left behind.
        lab.a.request("exit")
        require(lab.in_a("ip", "link", "show", TUNNEL, check=False).returncode != 0,
                f"{TUNNEL} survived stop()")  # fmt: skip
        routes = lab.in_a("ip", "route", "show", "table", "all").stdout
        require(TUNNEL not in routes and "unreachable" not in routes, f"left: {routes}")


def run_unnumbered_scenario(factory: str, suite: str = "chacha20-poly1305") -> None:
    borrowed = "10.255.0.1"
    with two_node_lab(factory) as lab:
        lab.in_a("ip", "addr", "add", f"{borrowed}/32", "dev", "lo")
        build_tunnel(lab, suite, encap=False, address_a=None, address_b="10.0.0.2/32",
                     borrowed_a=borrowed)  # fmt: skip
        lab.a.call("add_route", TUNNEL, ipaddress.IPv4Network("10.0.0.2/32"))
        lab.b.call("add_route", TUNNEL, ipaddress.IPv4Network(f"{borrowed}/32"))
        lab.b.request("capture_start", name="inner", ifname=TUNNEL)
        require(lab.ping("10.0.0.2", count=2), "ping from the unnumbered side failed")
        inner = ipv4_packets(lab.b.request("capture_stop", name="inner"))
        sources = {p[12:16] for out, p in inner if not out and p[9] == 1}
        require(sources == {ipaddress.IPv4Address(borrowed).packed},
                f"sources seen: {[ipaddress.IPv4Address(s) for s in sources]}")  # fmt: skip


TCP_SINK = """
import hashlib, socket, sys
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 5301)); server.listen(1); server.settimeout(10)
print("ready", flush=True)
conn, _ = server.accept(); conn.settimeout(10); digest = hashlib.sha256(); total = 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk); total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""
TCP_SOURCE = """
import hashlib, socket, sys
sock = socket.create_connection((sys.argv[1], 5301), timeout=10)
digest = hashlib.sha256(); block = hashlib.sha512(b"seed").digest() * 1024
for index in range(int(sys.argv[2])):
    chunk = block[index % 64:] + block[: index % 64]  # no two chunks alike in a row
    sock.sendall(chunk); digest.update(chunk)
sock.close(); print(digest.hexdigest(), flush=True)
"""


def run_tcp_stream_scenario(factory: str, suite: str, *, encap: bool, chunks: int = 300) -> None:
    """A TCP stream (chunks of 64 KiB) arrives intact: same length, same SHA-256."""
    with two_node_lab(factory) as lab:
        build_tunnel(lab, suite, encap=encap)
        python = ("ip", "netns", "exec")
        sink = subprocess.Popen(
            [*python, lab.ns_b, sys.executable, "-c", TCP_SINK, "10.0.0.2"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sink.stdout is not None
            require(sink.stdout.readline().strip() == "ready", "the TCP sink did not start")
            sent = sh(*python, lab.ns_a, sys.executable, "-c", TCP_SOURCE, "10.0.0.2",
                      str(chunks), timeout=60).stdout.strip()  # fmt: skip
            output, _ = sink.communicate(timeout=30)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
        total, received = output.split()
        require(int(total) == chunks * 65536, f"{total} bytes arrived of {chunks * 65536}")
        require(received == sent, "the stream arrived changed")
        counters: InterfaceCounters = lab.b.call("interface_counters", TUNNEL)
        require(counters.rx_errors == 0, f"B's interface counted errors: {counters}")


UDP_SINK = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.bind((sys.argv[1], 5302)); sock.settimeout(10); print("ready", flush=True)
indices = []; damaged = 0
try:
    while True:
        data = sock.recv(65535); sock.settimeout(1)
        index = int.from_bytes(data[:4], "big")
        damaged += data[4:] != bytes((index + i) % 251 for i in range(len(data) - 4))
        indices.append(index)
except TimeoutError:
    pass
print(damaged, *indices, flush=True)
"""
UDP_SOURCE = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
bursts, burst = int(sys.argv[2]), int(sys.argv[3])
for index in range(bursts * burst):
    size = 300 if index % burst == burst - 1 else 500  # a short tail ends each burst
    sock.sendto(index.to_bytes(4, "big") + bytes((index + i) % 251 for i in range(size - 4)),
                (sys.argv[1], 5302))
    if index % burst == burst - 1:
        time.sleep(0.005)
"""


def run_udp_burst_scenario(factory: str, suite: str, *, encap: bool, bursts: int = 20) -> None:
    """Bursts of UDP datagrams (which the receiving side may merge into GSO packets) all
    arrive, in order, each one intact."""
    burst = 32
    with two_node_lab(factory) as lab:
        build_tunnel(lab, suite, encap=encap)
        require(lab.ping("10.0.0.2", count=1), "ping across the tunnel failed")
        python = ("ip", "netns", "exec")
        sink = subprocess.Popen(
            [*python, lab.ns_b, sys.executable, "-c", UDP_SINK, "10.0.0.2"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sink.stdout is not None
            require(sink.stdout.readline().strip() == "ready", "the UDP sink did not start")
            sh(*python, lab.ns_a, sys.executable, "-c", UDP_SOURCE, "10.0.0.2", str(bursts),
               str(burst), timeout=60)  # fmt: skip
            output, _ = sink.communicate(timeout=30)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
        damaged, *indices = (int(value) for value in output.split())
        require(damaged == 0, f"{damaged} datagrams arrived changed")
        expected = bursts * burst
        require(
            indices == list(range(expected)),
            f"{len(indices)} of {expected} arrived, or out of order",
        )
        counters: InterfaceCounters = lab.b.call("interface_counters", TUNNEL)
        require(counters.rx_errors == 0, f"B's interface counted errors: {counters}")
