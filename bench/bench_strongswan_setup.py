"""Cold start of N peers between two namespaces until every tunnel passes a ping (root only).

    sudo python bench/bench_strongswan_setup.py [--peers 64] [--runs 1]

The lab (`setup_lab`): namespaces A and B joined by one veth; peer i has its own outer
addresses (A: 198.51.100.(i+1), B: 203.0.113.(i+1), both prefixes on-link on each side)
and its own inner networks (A: 10.10.i.0/24 with 10.10.i.1, B: 10.20.i.0/24 with
10.20.i.1), plus a PSK of its own.  A initiates every peer, B responds.

A `SetupRunner` starts both sides' daemons for a lab and yields their pids; the clock
starts before it is entered and stops when the last peer answered a ping from 10.10.i.1
to 10.20.i.1 (one raw-socket pinger process in A, so that the probe costs little CPU).
Memory is each daemon's VmRSS with every tunnel up, CPU its user+system time.

`StrongswanSetup` is the strongSwan <-> strongSwan runner: one private charon per side
(tests/interop/harness.py), one connection per peer with its own addresses, IDs, PSK and
traffic selectors (kernel-libipsec has a single TUN, `ipsec0`, so the inner networks
tell the CHILD_SAs apart), `start_action = start` on A.  An rbipsec runner (bench/
bench_setup.py) implements the same protocol and calls `measure_cold_start` with it;
`print_results` prints the ratios against the first runner.

Seen here: the time is mostly the two charons starting (~0.15 s each); the 64 IKE_SAs
take tens of ms.  A burst of 64 IKE_SA_INITs makes charon answer with COOKIEs once 10 are
half-open (`--cookie-threshold` changes that); with verbose charon logs one peer then
occasionally waits for the 4 s retransmission, so run several times and read the median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.interop.harness import (  # noqa: E402  (path fix first)
    Charon,
    CharonSettings,
    Child,
    Connection,
    HarnessError,
    Netns,
    TunSetup,
    connect_veth,
)

MAX_PEERS = 254
IKE_PROPOSAL = "aes256gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes256gcm16"


@dataclass(frozen=True)
class PeerPlan:
    """Addresses, networks and PSK of peer `index` (A is the initiator side)."""

    index: int
    outer_a: str
    outer_b: str
    inner_a: str  # on A's tunnel interface; pings leave from here
    inner_b: str  # on B's tunnel interface; pings go here
    net_a: str  # A's inner network (B routes it into the tunnel)
    net_b: str
    psk: str


def plan_peers(count: int) -> list[PeerPlan]:
    if not 1 <= count <= MAX_PEERS:
        raise ValueError(f"peers must be 1..{MAX_PEERS}, not {count}")
    return [
        PeerPlan(
            index=i,
            outer_a=f"198.51.100.{i + 1}",
            outer_b=f"203.0.113.{i + 1}",
            inner_a=f"10.10.{i}.1",
            inner_b=f"10.20.{i}.1",
            net_a=f"10.10.{i}.0/24",
            net_b=f"10.20.{i}.0/24",
            psk=f"setup-bench-psk-{i}",
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class SetupLab:
    ns_a: Netns
    ns_b: Netns
    peers: list[PeerPlan]
    outer_device: str = "outer0"


@contextlib.contextmanager
def setup_lab(count: int) -> Iterator[SetupLab]:
    """The two namespaces and the veth with every peer's outer address; removed after."""
    peers = plan_peers(count)
    with Netns.create("rbsetup-a") as ns_a, Netns.create("rbsetup-b") as ns_b:
        connect_veth(ns_a, ns_b, [f"{p.outer_a}/24" for p in peers],
                     [f"{p.outer_b}/24" for p in peers])  # fmt: skip
        ns_a.ip("route", "add", "203.0.113.0/24", "dev", "outer0")
        ns_b.ip("route", "add", "198.51.100.0/24", "dev", "outer0")
        yield SetupLab(ns_a, ns_b, peers)


class SetupRunner(Protocol):
    """Starts the daemons of both sides for a lab (A initiates, B responds)."""

    name: str

    def running(self, lab: SetupLab) -> contextlib.AbstractContextManager[list[int]]:
        """Starts both sides, yields the daemon pids (tunnels may still be coming up),
        and stops everything on the way out.  Inner addresses and routes are the runner's
        job: `inner_a` must reach `inner_b` through the tunnel of its peer."""
        ...


# -- the probe: one process in A pings every peer until each has answered once -------------
PINGER = r"""
import json, os, select, socket, struct, sys, time
pairs, deadline = json.loads(sys.argv[1]), time.monotonic() + float(sys.argv[2])
ident = os.getpid() & 0xFFFF

def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF

def echo(seq):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"rbipsec-setup-bench"
    return header[:2] + struct.pack("!H", checksum(header)) + header[4:]

sockets, answered, seq, next_send = {}, {}, 0, 0.0
print("ready", flush=True)
while len(answered) < len(pairs) and time.monotonic() < deadline:
    if time.monotonic() >= next_send:
        seq = (seq + 1) & 0xFFFF
        bound = {index for index, _ in sockets.values()}
        for index, (source, destination) in enumerate(pairs):
            if index in bound:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            try:
                sock.bind((source, 0))  # fails until the runner has put the address up
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            sockets[sock] = (index, destination)
        for sock, (index, destination) in sockets.items():
            if index not in answered:
                try:
                    sock.sendto(echo(seq), (destination, 0))
                except OSError:
                    pass  # no route yet (an interface still down)
        next_send = time.monotonic() + 0.02
    readable, _, _ = select.select(list(sockets), [], [], 0.005)
    for sock in readable:
        index, destination = sockets[sock]
        packet, (sender, _) = sock.recvfrom(2048)
        offset = (packet[0] & 0x0F) * 4
        kind, _, _, reply_ident, _ = struct.unpack("!BBHHH", packet[offset:offset + 8])
        if kind == 0 and reply_ident == ident and sender == destination:
            answered.setdefault(index, time.monotonic())
print(json.dumps(answered))
"""


class Pinger:
    """One process in A that pings every peer (from the moment its inner address exists)
    until each has answered once; started before the daemons so it costs no start time."""

    def __init__(self, lab: SetupLab, timeout: float) -> None:
        pairs = [[peer.inner_a, peer.inner_b] for peer in lab.peers]
        self.process = lab.ns_a.popen(sys.executable, "-c", PINGER, json.dumps(pairs),
                                      str(timeout), stdout=subprocess.PIPE)  # fmt: skip
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise HarnessError("the pinger did not start")
        self.timeout = timeout

    def answers(self) -> dict[int, float]:
        """Peer index -> monotonic time of its first answer (missing: never answered)."""
        output, _ = self.process.communicate(timeout=self.timeout + 30)
        if self.process.returncode != 0:
            raise HarnessError(f"the pinger failed ({self.process.returncode})")
        return {int(index): when for index, when in json.loads(output).items()}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise HarnessError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SetupResult:
    name: str
    peers: int
    seconds: float  # cold start (daemons launched) until the last peer answered
    daemons_started: float  # of which: until the runner had both sides running
    rss_kib: list[int]  # per daemon, A first
    cpu_seconds: list[float]


def measure_cold_start(runner: SetupRunner, peers: int, timeout: float = 60.0) -> SetupResult:
    with setup_lab(peers) as lab:
        pinger = Pinger(lab, timeout)
        try:
            start = time.monotonic()
            with runner.running(lab) as pids:
                started = time.monotonic()
                answered = pinger.answers()
                missing = sorted(set(range(peers)) - set(answered))
                if missing:
                    raise HarnessError(f"{runner.name}: peers {missing} never passed a ping")
                return SetupResult(
                    name=runner.name, peers=peers, seconds=max(answered.values()) - start,
                    daemons_started=started - start, rss_kib=[rss_kib(pid) for pid in pids],
                    cpu_seconds=[cpu_seconds(pid) for pid in pids],
                )  # fmt: skip
        finally:
            pinger.kill()


def print_results(results: Sequence[SetupResult], runners: int = 1) -> None:
    """One line per result; results come in runs of `runners` (one of each runner, in
    the same order), and a ratio is to the first runner of the same run."""
    print(f"{'runner':24}{'peers':>6}{'up (s)':>9}{'ratio':>7}{'start (s)':>10}"
          f"{'RSS A/B (MiB)':>16}{'CPU A/B (s)':>14}")  # fmt: skip
    for position, result in enumerate(results):
        baseline = results[position - position % runners]
        ratio = result.seconds / baseline.seconds
        rss = "/".join(f"{kib / 1024:.1f}" for kib in result.rss_kib)
        cpu = "/".join(f"{seconds:.2f}" for seconds in result.cpu_seconds)
        print(f"{result.name:24}{result.peers:>6}{result.seconds:>9.2f}{ratio:>7.2f}"
              f"{result.daemons_started:>10.2f}{rss:>16}{cpu:>14}")  # fmt: skip
    if len(results) > runners:
        for first in range(runners):
            print(summary(results[first::runners]))
        if runners > 1:
            ratios = sorted(
                results[i + 1].seconds / results[i].seconds for i in range(0, len(results), runners)
            )
            median = statistics.median(ratios)
            of_medians = statistics.median(r.seconds for r in results[1::runners]) / (
                statistics.median(r.seconds for r in results[0::runners])
            )
            print(f"ratio {results[1].name} / {results[0].name}: median of the runs' "
                  f"{median:.2f} (min {ratios[0]:.2f}, max {ratios[-1]:.2f}), "
                  f"of the medians {of_medians:.2f}")  # fmt: skip
    print("load average: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))


def summary(results: Sequence[SetupResult]) -> str:
    """Median, min and max cold-start time of several runs of one runner."""
    seconds = sorted(result.seconds for result in results)
    return (f"{results[0].name}: {len(seconds)} runs, median {statistics.median(seconds):.2f} s "
            f"(min {seconds[0]:.2f}, max {seconds[-1]:.2f})")  # fmt: skip


# -- strongSwan <-> strongSwan -------------------------------------------------------------
def strongswan_connections(peers: Sequence[PeerPlan], side: str) -> list[Connection]:
    """One connection per peer for side "a" (initiates at load) or "b" (responds)."""
    connections = []
    for peer in peers:
        local, remote = (
            (peer.outer_a, peer.outer_b) if side == "a" else (peer.outer_b, peer.outer_a)
        )
        local_net, remote_net = (
            (peer.net_a, peer.net_b) if side == "a" else (peer.net_b, peer.net_a)
        )
        child = Child(f"net{peer.index}", local_ts=(local_net,), remote_ts=(remote_net,),
                      esp_proposals=(ESP_PROPOSAL,),
                      start_action="start" if side == "a" else "none")  # fmt: skip
        connections.append(Connection(f"peer{peer.index}", local, remote, peer.psk, (child,),
                                      proposals=(IKE_PROPOSAL,)))  # fmt: skip
    return connections


def strongswan_tun(peers: Sequence[PeerPlan], side: str) -> TunSetup:
    if side == "a":
        return TunSetup(tuple(f"{p.inner_a}/32" for p in peers),
                        tuple((p.net_b, p.inner_a) for p in peers))  # fmt: skip
    return TunSetup(tuple(f"{p.inner_b}/32" for p in peers),
                    tuple((p.net_a, p.inner_b) for p in peers))  # fmt: skip


# Both runners poll for "the responder is ready" (and charon's TUN) this often: the
# harness's default of 50 ms would add tens of ms of waiting to strongSwan's figure.
POLL_INTERVAL = 0.005


class PromptCharon(Charon):
    """`Charon` whose start polls for vici and the TUN every POLL_INTERVAL."""

    poll_interval = POLL_INTERVAL


@dataclass
class StrongswanSetup:
    name: str = "strongswan<->strongswan"
    settings: CharonSettings | None = None  # e.g. to raise charon.cookie_threshold

    @contextlib.contextmanager
    def running(self, lab: SetupLab) -> Iterator[list[int]]:
        settings = self.settings or CharonSettings(log_levels={"default": 0})
        charon_b = PromptCharon(lab.ns_b, "setup-b", strongswan_connections(lab.peers, "b"),
                          settings=settings, tun=strongswan_tun(lab.peers, "b"))  # fmt: skip
        charon_a = PromptCharon(lab.ns_a, "setup-a", strongswan_connections(lab.peers, "a"),
                          settings=settings, tun=strongswan_tun(lab.peers, "a"))  # fmt: skip
        with charon_b, charon_a:  # the responder first: A initiates as it loads its config
            pids = [charon.pid for charon in (charon_a, charon_b)]
            yield [pid for pid in pids if pid is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--cookie-threshold",
        type=int,
        help="charon.cookie_threshold (strongSwan's default is 10 half-open)",
    )
    args = parser.parse_args()
    extra = (
        {} if args.cookie_threshold is None else {"cookie_threshold": str(args.cookie_threshold)}
    )
    runner = StrongswanSetup(settings=CharonSettings(log_levels={"default": 0}, extra=extra))
    results = [measure_cold_start(runner, args.peers) for _ in range(args.runs)]
    print_results(results)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as error:
        sys.exit(f"{error}\n{error.stderr}")
