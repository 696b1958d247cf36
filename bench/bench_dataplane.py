"""Dataplane benchmark: two namespaces, one tunnel per peer, ratios in one run (root only).

    sudo python bench/bench_dataplane.py [--seconds 1.5] [--rounds 4] [--suite aes-gcm-128]
                                         [--udp-rate 150000] [--only-rbipsec] [--no-encap]

Tunnel peers, each a tunnel 10.0.0.1 (namespace A) -> 10.0.0.2 (namespace B):
- strongSwan's kernel-libipsec (bench/strongswan_peer.py; skipped with a note when
  strongSwan is not installed) -- the baseline the ratios are taken against,
- rbipsec's userspace backend with raw ESP (IP protocol 50),
- rbipsec's userspace backend with ESP in UDP 4500, as libipsec always sends it, received
  through the daemon's own UDP transport and demultiplexing (tests/dataplane/agent.py).

For each: TCP bulk throughput (a small Python sender and receiver), UDP packets/s delivered
for 64-byte and 1400-byte IP packets (the same paced load offered to every peer, above
what any forwards; the rate is the receiver's, first to last packet), and ping RTT (pings
20 ms apart, so each one finds the forwarders idle; for context also 2 ms apart, which
keeps the CPUs out of deep idle states, and over the bare outer link).  For the bulk
runs also the work done per CPU-second of the forwarding processes (rbipsec's agents,
the charons), which other jobs on the machine disturb much less than the throughput.
Plus the memory one more rbipsec tunnel costs (interface + SA pair, after warm-up
tunnels, in a separate process).

Machines are noisy (other jobs share the 2 CPUs): all tunnels stay up for the whole run,
each peer gets a warm-up, then `--rounds` rounds take each measurement for every peer in
turn (the order alternates) and the table shows medians.  The load average before and
after is printed so that a reader can judge the conditions.  Default run: 1.5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dataplane.scenario import build_tunnel, two_node_lab  # noqa: E402  (path fix first)

USERSPACE = "core.dataplane.userspace.backend:UserspaceDataplane"
DST = "10.0.0.2"
OUTER_B = "198.51.100.2"  # the far end of the outer link, for both kinds of peer
PING_INTERVAL = 0.02
PINGS_PER_ROUND = 40
# The same UDP load for every peer: above what any of them forwards, so the delivered
# rate is the forwarder's, yet paced, so the sender does not take a CPU to itself while
# the forwarders compete for the other (a flat-out sender's rate -- and so the CPU left
# to the forwarders -- depended on the peer).
UDP_OFFERED_PPS = 150_000

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
sock.recv(65535); first = last = time.monotonic(); count = 1; sock.settimeout(0.3)
try:
    while True:
        sock.recv(65535); count += 1; last = time.monotonic()
except TimeoutError:
    pass
print(count, last - first, flush=True)
"""
UDP_SENDER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(int(sys.argv[2])); seconds = float(sys.argv[3]); rate = float(sys.argv[4])
burst = 32; sent = 0; start = time.monotonic(); deadline = start + seconds; due = start
while (now := time.monotonic()) < deadline:
    if rate:  # paced: `burst` packets every burst/rate seconds, no catching up after a stall
        if now < due:
            time.sleep(due - now)
        due = max(due, time.monotonic() - 0.002) + burst / rate
    for _ in range(burst):
        try:
            sock.sendto(payload, (sys.argv[1], 5202)); sent += 1
        except OSError:
            pass
print(sent, time.monotonic() - start, flush=True)
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

    pids: list[int] = field(default_factory=list)  # the two agents, while a tunnel is up

    @contextlib.contextmanager
    def tunnel(self) -> Iterator[tuple[str, str]]:
        with two_node_lab(self.factory) as lab:
            build_tunnel(lab, self.suite, encap=self.encap)
            self.pids = [lab.a.process.pid, lab.b.process.pid]
            try:
                yield lab.ns_a, lab.ns_b
            finally:
                self.pids = []


def forwarder_pids(peer: TunnelPeer) -> list[int]:
    """The processes that forward the peer's packets: rbipsec's agents, the charons."""
    if isinstance(peer, RbipsecPeer):
        return peer.pids
    return [pid for charon in getattr(peer, "charons", []) if (pid := charon.pid)]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time used so far by all threads of `pids` (kernel time in their calls included)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def strongswan_peer(suite: str) -> tuple[TunnelPeer | None, str]:
    """The libipsec peer for `suite` (bench/strongswan_peer.py), or None and why not."""
    from bench.strongswan_peer import ESP_PROPOSALS, StrongswanPeer
    from tests.interop.harness import strongswan_missing

    missing = strongswan_missing()
    if missing is not None:
        return None, missing
    if suite not in ESP_PROPOSALS:
        return None, f"no strongSwan proposal for {suite}"
    return StrongswanPeer(suite=suite), ""


# -- the measurements ------------------------------------------------------------------
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


def tcp_bulk(ns_a: str, ns_b: str, seconds: float) -> tuple[float, float]:
    """(Mbit/s, Mbit carried) of one TCP connection sending flat out for `seconds`."""
    receiver = python_in(ns_b, TCP_RECEIVER, DST)
    wait_ready(receiver)
    subprocess.run(in_ns(ns_a, sys.executable, "-c", TCP_SENDER, DST, str(seconds)), check=True)
    output, _ = receiver.communicate(timeout=seconds + 30)
    total, elapsed = output.split()
    megabits = int(total) * 8 / 1e6
    return megabits / float(elapsed), megabits


def udp_pps(
    ns_a: str, ns_b: str, ip_size: int, seconds: float, rate: float
) -> tuple[float, float, int]:
    """(packets/s offered, packets/s delivered, packets delivered), IP packets of `ip_size`,
    offered at `rate` packets/s (0: flat out).

    The delivered rate is the receiver's own: packets over the time from its first to its
    last packet, so packets a forwarder had buffered and delivers after the sender
    stopped do not count as if they had been forwarded during the sender's time."""
    receiver = python_in(ns_b, UDP_RECEIVER, DST)
    wait_ready(receiver)
    sender = subprocess.run(
        in_ns(ns_a, sys.executable, "-c", UDP_SENDER, DST, str(ip_size - 28), str(seconds),
              str(rate)),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    output, _ = receiver.communicate(timeout=seconds + 30)
    sent, elapsed = sender.stdout.split()
    received, span = output.split()
    delivered = (int(received) - 1) / float(span) if float(span) > 0 else 0.0
    return int(sent) / float(elapsed), delivered, int(received)


def ping_rtts_ms(
    ns_a: str, count: int, interval: float = PING_INTERVAL, destination: str = DST
) -> list[float]:
    """One RTT per answered ping; pings `interval` apart."""
    result = subprocess.run(
        in_ns(ns_a, "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
              destination),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    rtts = [float(value) for value in re.findall(r"time=([\d.]+) ms", result.stdout)]
    if not rtts:
        raise RuntimeError(f"no ping answered: {result.stdout}{result.stderr}")
    return rtts


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    goal: float  # the ratio against libipsec that issue 4 asks for


METRICS = (
    Metric("TCP Mbit/s", True, 1.5),
    Metric("UDP 64 B pps delivered", True, 1.5),
    Metric("UDP 1400 B pps delivered", True, 1.5),
    Metric("ping RTT ms (median)", False, 0.5),
)
# Ping RTT context: pings 2 ms apart keep the CPUs out of deep idle states, and the
# outer link without a tunnel (pings 20 ms apart) is the floor every tunnel adds to.
BUSY_PING_INTERVAL = 0.002
BUSY_PING = "ping RTT ms, 2 ms apart"
OUTER_PING = "outer link RTT ms"
CONTEXT = ("UDP 64 B pps offered", "UDP 1400 B pps offered", BUSY_PING, OUTER_PING)
Samples = dict[str, list[float]]


# A measurement runs once for one peer, adds its samples and returns the work done
# (Mbit or packets), which run_peers() divides by the forwarders' CPU time.
Measurement = Callable[[str, str, float, Samples], float]


def measure_tcp(ns_a: str, ns_b: str, seconds: float, samples: Samples) -> float:
    mbps, megabits = tcp_bulk(ns_a, ns_b, seconds)
    samples.setdefault("TCP Mbit/s", []).append(mbps)
    return megabits


def measure_udp(size: int, rate: float) -> Measurement:
    def measure(ns_a: str, ns_b: str, seconds: float, samples: Samples) -> float:
        offered, delivered, packets = udp_pps(ns_a, ns_b, size, seconds, rate)
        samples.setdefault(f"UDP {size} B pps offered", []).append(offered)
        samples.setdefault(f"UDP {size} B pps delivered", []).append(delivered)
        return packets / 1000

    return measure


def measure_ping(ns_a: str, ns_b: str, seconds: float, samples: Samples) -> float:
    samples.setdefault("ping RTT ms (median)", []).extend(ping_rtts_ms(ns_a, PINGS_PER_ROUND))
    busy = ping_rtts_ms(ns_a, PINGS_PER_ROUND, BUSY_PING_INTERVAL)
    samples.setdefault(BUSY_PING, []).extend(busy)
    outer = ping_rtts_ms(ns_a, PINGS_PER_ROUND, destination=OUTER_B)
    samples.setdefault(OUTER_PING, []).extend(outer)
    return 0.0


def measurements(udp_rate: float) -> tuple[tuple[Measurement, str], ...]:
    """(measurement, the name of its work per forwarder CPU-second, or "")."""
    return (
        (measure_tcp, "TCP Mbit per CPU-s"),
        (measure_udp(64, udp_rate), "UDP 64 B kpkt per CPU-s"),
        (measure_udp(1400, udp_rate), "UDP 1400 B kpkt per CPU-s"),
        (measure_ping, ""),
    )


def warm_up(ns_a: str, ns_b: str) -> None:
    """Routes, neighbours, socket buffers and caches, so that round 1 is not special."""
    ping_rtts_ms(ns_a, 5)
    tcp_bulk(ns_a, ns_b, 0.5)


def run_peers(
    peers: list[TunnelPeer], seconds: float, rounds: int, udp_rate: float
) -> dict[str, Samples]:
    """Every measurement for every peer back to back (the order alternating per round),
    so that the numbers compared were taken a few seconds apart."""
    samples: dict[str, Samples] = {peer.name: {} for peer in peers}
    with contextlib.ExitStack() as stack:
        tunnels = [(peer, stack.enter_context(peer.tunnel())) for peer in peers]
        for _peer, (ns_a, ns_b) in tunnels:
            warm_up(ns_a, ns_b)
        for round_index in range(rounds):
            order = tunnels if round_index % 2 == 0 else tunnels[::-1]
            for measure, per_cpu in measurements(udp_rate):
                for peer, (ns_a, ns_b) in order:
                    pids = forwarder_pids(peer)
                    cpu_before = cpu_seconds(pids)
                    work = measure(ns_a, ns_b, seconds, samples[peer.name])
                    cpu = cpu_seconds(pids) - cpu_before
                    if per_cpu and cpu > 0:
                        samples[peer.name].setdefault(per_cpu, []).append(work / cpu)
    return samples


# -- memory per tunnel (runs inside a namespace, as a child of this script) ------------
MEMORY_WARM_UP_TUNNELS = 8  # first-use costs (imports, sockets, caches) land here
MEMORY_TUNNELS = 28  # then each further tunnel: 28 measured by RSS, 28 by tracemalloc


def _retained_rss_bytes() -> int:
    """Resident memory after garbage collection and glibc's malloc_trim(), which hands
    back free heap pages, so transient garbage (netlink replies) does not count."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _memory_probe() -> dict[str, float]:
    import tracemalloc

    from core.dataplane.model import InterfaceSpec, SaSpec, if_id_for
    from core.dataplane.userspace.backend import UserspaceDataplane
    from tests.dataplane.scenario import sa_pair

    backend = UserspaceDataplane()
    await backend.start(lambda event: None)
    local = ipaddress.IPv4Address("198.51.100.1")

    async def add_tunnels(first: int, count: int) -> None:
        for index in range(first, first + count):
            if_id = if_id_for(index)
            remote = ipaddress.IPv4Address(f"203.0.113.{index + 1}")
            out, _ = sa_pair("aes-gcm-256", 0x1000 + index, local, remote, encap=True)
            _, inbound = sa_pair("aes-gcm-256", 0x2000 + index, remote, local, encap=True)
            address = ipaddress.IPv4Interface(f"10.{index}.0.1/30")
            await backend.create_interface(
                InterfaceSpec(name=f"ipsec{index}", if_id=if_id, address=address)
            )
            for spec in (out, inbound):
                await backend.add_sa(SaSpec(**{**spec.__dict__, "if_id": if_id}))
            await backend.set_link(f"ipsec{index}", True)

    await add_tunnels(0, MEMORY_WARM_UP_TUNNELS)
    rss_before = _retained_rss_bytes()
    await add_tunnels(MEMORY_WARM_UP_TUNNELS, MEMORY_TUNNELS)
    rss = _retained_rss_bytes() - rss_before
    tracemalloc.start()  # only now: its own bookkeeping would count in the RSS
    await add_tunnels(MEMORY_WARM_UP_TUNNELS + MEMORY_TUNNELS, MEMORY_TUNNELS)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    await backend.stop()
    return {
        "RSS bytes/tunnel": rss / MEMORY_TUNNELS,
        "Python heap bytes/tunnel": traced / MEMORY_TUNNELS,
    }


def memory_per_tunnel() -> dict[str, float]:
    namespace = f"rbdp-mem-{os.getpid() % 100000}-{time.monotonic_ns() % 100000}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(in_ns(namespace, "ip", "link", "set", "lo", "up"), check=True)
        result = subprocess.run(
            in_ns(namespace, sys.executable, __file__, "--memory-probe"),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        measured: dict[str, float] = json.loads(result.stdout)
        return measured
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


# -- the report ------------------------------------------------------------------------
def efficiency_metrics() -> list[Metric]:
    """Work per CPU-second of the forwarding processes: roughly the throughput they would
    reach with the CPUs to themselves, so less at the mercy of other jobs on the machine."""
    return [Metric(per_cpu, True, 1.5) for _, per_cpu in measurements(0) if per_cpu]


def print_table(samples: dict[str, Samples], baseline: str | None) -> None:
    peers = list(samples)
    print(f"{'metric (median)':26}" + "".join(f"{peer:>26}" for peer in peers) + "    goal")
    rows: list[Metric | str] = [*METRICS, *efficiency_metrics(), *CONTEXT]
    for metric in rows:
        name = metric.name if isinstance(metric, Metric) else metric
        medians = {peer: statistics.median(samples[peer][name]) for peer in peers}
        row = f"{name:26}"
        for peer in peers:
            note = ""
            if baseline is not None and peer != baseline and medians[baseline]:
                note = f" ({medians[peer] / medians[baseline]:.2f}x)"
            row += f"{medians[peer]:>17.{3 if 'ms' in name else 0}f}{note:>9}"
        if isinstance(metric, Metric) and baseline is not None:
            row += f"  {'>=' if metric.higher_is_better else '<='}{metric.goal}x"
        print(row)


def print_spread(samples: dict[str, Samples]) -> None:
    """Per-round values, so that a reader sees how much the medians can be trusted."""
    for peer, metrics in samples.items():
        for metric in METRICS[:3]:
            values = ", ".join(f"{value:.0f}" for value in metrics[metric.name])
            print(f"  {peer} {metric.name}: {values}")
        rtts = sorted(metrics["ping RTT ms (median)"])
        p90 = rtts[int(len(rtts) * 0.9)]
        print(f"  {peer} ping RTT ms: min {rtts[0]:.3f}, p90 {p90:.3f} ({len(rtts)} pings)")


def conditions() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="per TCP/UDP run")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--suite", default="aes-gcm-128")
    parser.add_argument(
        "--udp-rate", type=float, default=UDP_OFFERED_PPS,
        help="packets/s offered to every peer in the UDP runs (0: flat out)",
    )  # fmt: skip
    parser.add_argument("--only-rbipsec", action="store_true", help="no strongSwan peer")
    parser.add_argument("--no-encap", action="store_true", help="rbipsec with raw ESP only")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        import asyncio

        print(json.dumps(asyncio.run(_memory_probe())))
        return
    started = time.monotonic()
    print(f"conditions at start: {conditions()}")
    peers: list[TunnelPeer] = []
    baseline: str | None = None
    if not args.only_rbipsec:
        libipsec, why_not = strongswan_peer(args.suite)
        if libipsec is None:
            print(f"no strongSwan peer ({why_not}): rbipsec numbers only, no ratios")
        else:
            peers.append(libipsec)
            baseline = libipsec.name
    peers.append(RbipsecPeer(suite=args.suite, name="rbipsec raw ESP"))
    if not args.no_encap:
        peers.append(RbipsecPeer(suite=args.suite, encap=True, name="rbipsec UDP 4500"))
    samples = run_peers(peers, args.seconds, args.rounds, args.udp_rate)
    memory = memory_per_tunnel()
    print(f"conditions at end:   {conditions()}")
    offered = f"{args.udp_rate:.0f} packets/s" if args.udp_rate else "flat out"
    print(f"suite {args.suite}, {args.rounds} rounds of {args.seconds} s per run, medians; "
          f"UDP offered {offered} to every peer")  # fmt: skip
    print_table(samples, baseline)
    print_spread(samples)
    print(
        f"memory per rbipsec tunnel (interface + SA pair): "
        f"{memory['RSS bytes/tunnel'] / 1024:.1f} KiB retained RSS, of which Python objects "
        f"{memory['Python heap bytes/tunnel'] / 1024:.1f} KiB; goal <= 16 KiB"
    )
    print(f"bench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
