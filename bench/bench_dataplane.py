"""Dataplane benchmark: two namespaces, one tunnel, numbers per peer (root only).

    sudo python bench/bench_dataplane.py [--seconds 5] [--suite aes-gcm-128] [--encap]

For each tunnel peer (today: rbipsec's userspace backend; strongSwan kernel-libipsec
plugs in as another `TunnelPeer`) it measures, through the tunnel 10.0.0.1 -> 10.0.0.2:
- TCP bulk throughput (a small Python sender and receiver),
- UDP packets/s delivered for 64-byte and 1400-byte IP packets (sender flat out),
- ping RTT (50 pings, 20 ms apart),
and for rbipsec the memory one more tunnel costs (64 interfaces with an SA pair each).
With two peers it prints the ratios against the first one.  Machines are noisy: compare
peers measured in the same run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dataplane.scenario import build_tunnel, two_node_lab  # noqa: E402  (path fix first)

USERSPACE = "core.dataplane.userspace.backend:UserspaceDataplane"
DST = "10.0.0.2"

TCP_RECEIVER = """
import socket, sys, time
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 5201)); server.listen(1); print("ready", flush=True)
conn, _ = server.accept(); total = 0; start = time.monotonic()
while chunk := conn.recv(1 << 20):
    total += len(chunk)
print(total, time.monotonic() - start, flush=True)
"""
TCP_SENDER = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], 5201), timeout=5)
block = bytes(1 << 18); deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    sock.sendall(block)
sock.close()
"""
UDP_RECEIVER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
sock.bind((sys.argv[1], 5202)); sock.settimeout(5); print("ready", flush=True)
count, first, last = 0, None, None
try:
    while True:
        sock.recv(65535); last = time.monotonic(); first = first or last; count += 1
        sock.settimeout(1)
except TimeoutError:
    pass
print(count, (last - first) if count > 1 else 0, flush=True)
"""
UDP_SENDER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(int(sys.argv[2])); deadline = time.monotonic() + float(sys.argv[3]); sent = 0
while time.monotonic() < deadline:
    for _ in range(256):
        try:
            sock.sendto(payload, (sys.argv[1], 5202)); sent += 1
        except OSError:
            pass
print(sent, flush=True)
"""


class TunnelPeer(Protocol):
    """Something that builds a tunnel 10.0.0.1 (ns A) <-> 10.0.0.2 (ns B)."""

    name: str

    def tunnel(self) -> contextlib.AbstractContextManager[tuple[str, str]]:
        """Yields (namespace A, namespace B) with the tunnel up; removes it all after."""
        ...


@dataclass
class RbipsecPeer:
    suite: str = "aes-gcm-128"
    encap: bool = False
    factory: str = USERSPACE
    name: str = "rbipsec-userspace"

    @contextlib.contextmanager
    def tunnel(self) -> Iterator[tuple[str, str]]:
        with two_node_lab(self.factory) as lab:
            build_tunnel(lab, self.suite, encap=self.encap)
            yield lab.ns_a, lab.ns_b


def in_ns(namespace: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *args]


def python_in(namespace: str, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        in_ns(namespace, sys.executable, "-c", script, *args),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("receiver did not start")


def tcp_bulk_mbps(ns_a: str, ns_b: str, seconds: float) -> float:
    receiver = python_in(ns_b, TCP_RECEIVER, DST)
    wait_ready(receiver)
    subprocess.run(in_ns(ns_a, sys.executable, "-c", TCP_SENDER, DST, str(seconds)), check=True)
    output, _ = receiver.communicate(timeout=seconds + 30)
    total, elapsed = output.split()
    return int(total) * 8 / float(elapsed) / 1e6


def udp_pps(ns_a: str, ns_b: str, ip_size: int, seconds: float) -> tuple[float, float]:
    """(packets/s offered, packets/s delivered) for IP packets of `ip_size` bytes."""
    receiver = python_in(ns_b, UDP_RECEIVER, DST)
    wait_ready(receiver)
    sender = subprocess.run(
        in_ns(ns_a, sys.executable, "-c", UDP_SENDER, DST, str(ip_size - 28), str(seconds)),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    output, _ = receiver.communicate(timeout=seconds + 30)
    received, _span = output.split()
    return int(sender.stdout) / seconds, int(received) / seconds


def ping_rtt_ms(ns_a: str) -> float:
    result = subprocess.run(
        in_ns(ns_a, "ping", "-n", "-q", "-c", "50", "-i", "0.02", DST),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"= [\d.]+/([\d.]+)/", result.stdout)
    if match is None:
        raise RuntimeError(f"cannot read ping output: {result.stdout}")
    return float(match.group(1))


def measure(peer: TunnelPeer, seconds: float) -> dict[str, float]:
    with peer.tunnel() as (ns_a, ns_b):
        results = {"ping RTT ms": ping_rtt_ms(ns_a)}
        results["TCP Mbit/s"] = tcp_bulk_mbps(ns_a, ns_b, seconds)
        for size in (64, 1400):
            offered, delivered = udp_pps(ns_a, ns_b, size, seconds)
            results[f"UDP {size} B offered pps"] = offered
            results[f"UDP {size} B delivered pps"] = delivered
    return results


# -- memory per tunnel (runs inside a namespace, as a child of this script) ------------
MEMORY_TUNNELS = 64


async def _memory_probe(tunnels: int) -> dict[str, float]:
    import resource
    import tracemalloc

    from core.dataplane.model import InterfaceSpec, if_id_for
    from core.dataplane.userspace.backend import UserspaceDataplane
    from tests.dataplane.scenario import sa_pair

    backend = UserspaceDataplane()
    await backend.start(lambda event: None)
    local = ipaddress.IPv4Address("198.51.100.1")
    specs = []
    for index in range(tunnels):
        remote = ipaddress.IPv4Address(f"203.0.113.{index + 1}")
        out, _ = sa_pair("aes-gcm-256", 0x1000 + index, local, remote, encap=True)
        _, inbound = sa_pair("aes-gcm-256", 0x2000 + index, remote, local, encap=True)
        specs.append((index, out, inbound))
    tracemalloc.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    traced_before = tracemalloc.get_traced_memory()[0]
    for index, out, inbound in specs:
        if_id = if_id_for(index)
        await backend.create_interface(
            InterfaceSpec(
                name=f"ipsec{index}", if_id=if_id,
                address=ipaddress.IPv4Interface(f"10.{index}.0.1/30"),
            )
        )  # fmt: skip
        await backend.add_sa(type(out)(**{**out.__dict__, "if_id": if_id}))
        await backend.add_sa(type(inbound)(**{**inbound.__dict__, "if_id": if_id}))
        await backend.set_link(f"ipsec{index}", True)
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    await backend.stop()
    return {"Python heap bytes/tunnel": traced / tunnels, "RSS bytes/tunnel": rss / tunnels}


def memory_per_tunnel() -> dict[str, float]:
    namespace = f"rbdp-mem-{time.monotonic_ns() % 100000}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(in_ns(namespace, "ip", "link", "set", "lo", "up"), check=True)
        result = subprocess.run(
            in_ns(namespace, sys.executable, __file__, "--memory-probe", str(MEMORY_TUNNELS)),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        measured: dict[str, float] = json.loads(result.stdout)
        return measured
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def print_table(results: dict[str, dict[str, float]]) -> None:
    peers = list(results)
    baseline = peers[0]
    print(f"{'metric':32}" + "".join(f"{peer:>22}" for peer in peers))
    for metric in results[baseline]:
        row = f"{metric:32}"
        for peer in peers:
            value = results[peer].get(metric, float("nan"))
            ratio = value / results[baseline][metric] if results[baseline][metric] else 0
            note = f" ({ratio:.2f}x)" if peer != baseline else ""
            row += f"{value:>14.1f}{note:>8}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--suite", default="aes-gcm-128")
    parser.add_argument("--encap", action="store_true", help="ESP in UDP 4500")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        import asyncio

        print(json.dumps(asyncio.run(_memory_probe(args.memory_probe))))
        return
    peers: list[TunnelPeer] = [RbipsecPeer(suite=args.suite, encap=args.encap)]
    results = {peer.name: measure(peer, args.seconds) for peer in peers}
    results[peers[0].name].update(memory_per_tunnel())
    print(f"suite {args.suite}, {'UDP 4500' if args.encap else 'raw ESP'}, {args.seconds} s")
    print_table(results)


if __name__ == "__main__":
    main()
