"""rbipsec against strongSwan: one rbipsec daemon and one private charon (root only).

The namespaces, links and the daemon come from the daemon's own end-to-end lab
(`tests.integration.netlab`: `NetLab`, `DaemonProcess`); charon comes from this package's
harness.  Three topologies:

    direct:      r 198.51.100.1 ---- 198.51.100.2 s
    wired:       r 198.51.100.1 ---- m ---- 198.51.100.2 s
                 (m's only link between its two ends is the `wire` process, which can
                 make IKE requests cross: tests/interop/wire.py)
    behind NAT:  inside 203.0.113.2 ---- nat ---- 198.51.100.2 outside
                 (the router masquerades to ports 20000-20999)

rbipsec runs in `r`, charon in `s` (behind NAT: whichever side the test puts inside).
rbipsec's tunnel interface `ipsec1` holds 10.0.0.1/30; charon's TUN `ipsec0` holds
10.0.0.2/32 with a route to 10.0.0.1.  Both sides use 0.0.0.0/0 traffic selectors.

Roles are rbipsec's: as `INITIATOR` its peer has the fixed remote address and charon
only responds; as `RESPONDER` its peer has `remote_address = "dynamic"` with charon's
ID, so rbipsec never initiates but keeps its DPD and rekeying, and charon initiates.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from tests.integration.netlab import (
    DaemonProcess,
    LabError,
    NetLab,
    global_section,
    peer_section,
    wait_until,
)
from tests.interop.harness import (
    Charon,
    CharonSettings,
    Child,
    Connection,
    IkeSaInfo,
    Netns,
    TunSetup,
)
from tests.interop.wire import Wire, start_wire

PSK = "rbipsec and strongSwan share this"
PEER = "sw"  # rbipsec's name for the strongSwan peer
CONN, CHILD = "rb", "net"  # charon's names for the rbipsec connection and its CHILD_SA
RB_INNER, SW_INNER = "10.0.0.1", "10.0.0.2"
NAT_PORTS = (20000, 20999)
ANY = ("0.0.0.0/0",)  # the traffic selectors of a route-based tunnel


class Role(Enum):
    """rbipsec's role in the IKE SA."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


ROLES = (Role.INITIATOR, Role.RESPONDER)
ROLE_IDS = [role.value for role in ROLES]


@dataclass(frozen=True)
class Topology:
    """Where each side sits: the addresses they bind and those they reach each other by."""

    rb_local: str  # rbipsec's own outer address
    sw_local: str  # charon's own outer address
    rb_seen: str  # rbipsec's address as charon sees it
    sw_seen: str  # charon's address as rbipsec sees it
    nat: str | None = None  # "rb" or "sw": who sits behind the NAT
    rb_id: str = ""  # rbipsec's IKE identity in strongSwan's syntax ("" = its address)
    sw_id: str = ""

    @property
    def rb_identity(self) -> str:
        return self.rb_id or self.rb_local

    @property
    def sw_identity(self) -> str:
        return self.sw_id or self.sw_local


def direct_topology(netlab: NetLab) -> Topology:
    netlab.namespace("r")
    netlab.namespace("s")
    netlab.link("r", "198.51.100.1/24", "s", "198.51.100.2/24", "outer0", "outer0")
    return Topology("198.51.100.1", "198.51.100.2", "198.51.100.1", "198.51.100.2")


def wired_topology(netlab: NetLab) -> tuple[Topology, Wire]:
    """As `direct_topology`, but the link runs through namespace `m`, where the `wire`
    process copies the frames and can hold IKE messages so that two requests cross."""
    netlab.namespace("r")
    netlab.namespace("m")
    netlab.namespace("s")
    netlab.link("r", "198.51.100.1/24", "m", None, "outer0", "tor")
    netlab.link("s", "198.51.100.2/24", "m", None, "outer0", "tos")
    for end in ("tor", "tos"):
        netlab.run("m", "ip", "link", "set", end, "promisc", "on")
    wire = start_wire(netlab.namespaces["m"], "tor", "tos", netlab.workdir / "wire.trace")
    return Topology("198.51.100.1", "198.51.100.2", "198.51.100.1", "198.51.100.2"), wire


def nat_topology(netlab: NetLab, behind: str) -> Topology:
    """`behind` ("rb" or "sw") sits at 203.0.113.2 behind a masquerading router."""
    inside, outside = ("r", "s") if behind == "rb" else ("s", "r")
    for name in (inside, "nat", outside):
        netlab.namespace(name)
    netlab.link(inside, "203.0.113.2/24", "nat", "203.0.113.1/24", "outer0", "inside")
    netlab.link("nat", "198.51.100.1/24", outside, "198.51.100.2/24", "outside", "outer0")
    netlab.run(inside, "ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
    netlab.run("nat", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    rules = netlab.workdir / "masquerade.nft"
    low, high = NAT_PORTS
    rules.write_text("table ip nat {\n chain post { type nat hook postrouting priority 100;\n"
                     f'  oifname "outside" meta l4proto udp masquerade to :{low}-{high}\n'
                     '  oifname "outside" masquerade\n }\n}\n')  # fmt: skip
    netlab.run("nat", "nft", "-f", str(rules))
    ids = {"rb_id": "rb.example.net", "sw_id": "sw.example.net"}
    if behind == "rb":
        return Topology("203.0.113.2", "198.51.100.2", "198.51.100.1", "198.51.100.2", "rb", **ids)
    return Topology("198.51.100.2", "203.0.113.2", "198.51.100.2", "198.51.100.1", "sw", **ids)


@dataclass
class PingRun:
    """A continuous ping (`ping -D -O`), read when it is finished.

    A request counts as lost when no answer came within `GRACE` seconds: ping reports an
    unanswered request (`-O`) when it sends the next one, and requests still in flight
    when ping is interrupted are not judged (the blocks that ping end with quiet traffic
    for longer than the grace)."""

    GRACE = 1.0

    process: subprocess.Popen[str]
    sent: int = 0
    output: str = ""
    ended: float = 0.0  # unix time of the interruption

    def _answered(self) -> set[int]:
        return {int(m[1]) for m in re.finditer(r"icmp_seq=(\d+) ttl=", self.output)}

    def _unanswered(self) -> dict[int, float]:
        """Unanswered requests by sequence, with when ping noticed (the next send)."""
        answered = self._answered()
        late = re.finditer(r"\[([\d.]+)\] no answer yet for icmp_seq=(\d+)", self.output)
        noticed = {int(m[2]): float(m[1]) for m in late}
        return {seq: when for seq, when in noticed.items() if seq not in answered}

    @property
    def lost_sequences(self) -> list[int]:
        cutoff = self.ended - self.GRACE
        return sorted(seq for seq, when in self._unanswered().items() if when < cutoff)

    @property
    def lost(self) -> int:
        return len(self.lost_sequences)

    def losses(self) -> str:
        """The lost requests as `seq@unix-time` (for assertion messages)."""
        unanswered = self._unanswered()
        lost = ", ".join(f"{seq}@{unanswered[seq]:.3f}" for seq in self.lost_sequences)
        return f"sent {self.sent}, answered {len(self._answered())}, lost: {lost or 'none'}"


@dataclass
class InteropLab:
    netlab: NetLab
    topology: Topology
    charon: Charon | None = None
    daemon: DaemonProcess | None = None
    charons: list[Charon] = field(default_factory=list)
    wire: Wire | None = None

    # -- strongSwan ------------------------------------------------------------------------
    def connection(self, role: Role, **changes: Any) -> Connection:
        """charon's side of the tunnel; `child` (a dict) changes the CHILD_SA."""
        child = Child(CHILD, **changes.pop("child", {}))
        remote = self.topology.rb_seen if role is Role.RESPONDER else "%any"
        values: dict[str, Any] = {
            "name": CONN, "local_addrs": self.topology.sw_local, "remote_addrs": remote,
            "psk": PSK, "children": (child,), "local_id": self.topology.sw_identity,
            "remote_id": self.topology.rb_identity,
        }  # fmt: skip
        values.update(changes)
        return Connection(**values)

    def start_charon(
        self, connection: Connection, settings: CharonSettings | None = None
    ) -> Charon:
        settings = settings or CharonSettings()
        # charon keeps a rekeyed inbound SA 5 s by default; 1 s keeps the suite fast.
        settings = replace(settings, extra={"delete_rekeyed_delay": "1", **settings.extra})
        tun = TunSetup((f"{SW_INNER}/32",), (f"{RB_INNER}/32",))
        charon = Charon(Netns(self.netlab.namespaces["s"]), "sw", [connection], settings, tun,
                        block_listings=True)  # fmt: skip
        self.charons.append(charon)
        charon.start()
        self.charon = charon
        return charon

    @property
    def sw(self) -> Charon:
        assert self.charon is not None, "charon is not started"
        return self.charon

    def sw_sa_ids(self) -> list[str]:
        """charon's IKE_SAs for the rbipsec connection, by unique ID."""
        return [sa.uniqueid for sa in self.sw.list_sas(CONN)]

    def sw_sa(self) -> IkeSaInfo:
        """charon's one IKE_SA for the rbipsec connection (ignoring ones being deleted)."""
        sas = [sa for sa in self.sw.list_sas(CONN) if sa.state != "DELETING"]
        assert len(sas) == 1, f"charon holds {len(sas)} IKE_SAs: {sas}"
        return sas[0]

    # -- rbipsec ---------------------------------------------------------------------------
    def peer_config(self, role: Role, **peer: object) -> str:
        values: dict[str, object] = {
            "name": PEER, "interface": "ipsec1", "psk": PSK, "address": f"{RB_INNER}/30",
            "local_address": "dynamic" if self.topology.nat == "rb" else self.topology.rb_local,
            "local_id": _rbipsec_id(self.topology.rb_identity),
            "remote_id": _rbipsec_id(self.topology.sw_identity),
            "remote_address": self.topology.sw_seen if role is Role.INITIATOR else "dynamic",
        }  # fmt: skip
        values.update(peer)
        socket = self.netlab.workdir / "r.sock"
        return global_section(socket) + peer_section(**values)

    def start_rbipsec(self, role: Role, **peer: object) -> DaemonProcess:
        self.daemon = self.netlab.daemon("r", self.peer_config(role, **peer)).start()
        return self.daemon

    @property
    def rb(self) -> DaemonProcess:
        assert self.daemon is not None, "rbipsec is not started"
        return self.daemon

    def rb_peer(self) -> dict[str, Any]:
        return self.rb.peer(PEER)

    def rb_error(self) -> str:
        return str((self.rb_peer()["last_error"] or {}).get("message") or "")

    # -- together ----------------------------------------------------------------------------
    def establish(
        self,
        role: Role,
        peer: Mapping[str, object] | None = None,
        connection: Mapping[str, Any] | None = None,
        settings: CharonSettings | None = None,
        timeout: float = 15.0,
    ) -> None:
        """Starts both sides in the order the role asks for and waits for the tunnel."""
        self.start_charon(self.connection(role, **(connection or {})), settings)
        self.start_rbipsec(role, **(peer or {}))
        if role is Role.RESPONDER:
            wait_until(lambda: self.rb.state(PEER) == "waiting", 10, "rbipsec to wait")
            self.sw.initiate(CHILD, timeout=timeout)
        self.rb.wait_up(PEER, timeout=timeout)
        self.sw.wait_child_installed(CHILD, timeout=timeout)

    def ping(self, count: int = 3, interval: float = 0.1) -> tuple[int, int]:
        return self.netlab.ping("r", SW_INNER, count=count, interval=interval)

    def start_ping(self, interval: float = 0.05) -> PingRun:
        command = self.netlab_command("r", "ping", "-D", "-O", "-i", str(interval), "-W", "1",
                                      SW_INNER)  # fmt: skip
        return PingRun(subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))  # fmt: skip

    @staticmethod
    def finish_ping(run: PingRun) -> PingRun:
        run.ended = time.time()
        run.process.send_signal(signal.SIGINT)
        run.output, _ = run.process.communicate(timeout=10)
        match = re.search(r"(\d+) packets transmitted", run.output)
        if match is None:
            raise LabError(f"ping said: {run.output[-2000:]}")
        run.sent = int(match[1])
        return run

    def netlab_command(self, namespace: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netlab.namespaces[namespace], *args]

    @contextlib.contextmanager
    def pinging(self, interval: float = 0.05) -> Iterator[PingRun]:
        """A continuous ping for the block (and `PingRun.GRACE` after it, so that every
        request sent inside is judged); read `sent`/`lost` after it."""
        run = self.start_ping(interval)
        try:
            time.sleep(0.3)
            yield run
            time.sleep(PingRun.GRACE + 0.2)
        finally:
            if run.process.poll() is None:
                self.finish_ping(run)

    def settled(
        self, timeout: float = 10.0, strict: bool = True
    ) -> tuple[dict[str, Any], IkeSaInfo]:
        """Waits until both sides hold exactly one IKE SA with one Child SA, mirrored.

        Not `strict`: charon may still hold rekeyed inbound SAs (`delete_rekeyed_delay`)."""
        found: list[tuple[dict[str, Any], IkeSaInfo]] = []
        problems: list[str] = []

        def probe() -> bool:
            problem = self._mismatch(strict)
            if isinstance(problem, str):
                problems[:] = [problem]
                return False
            found[:] = [problem]
            return True

        with contextlib.suppress(LabError):
            wait_until(probe, timeout, "both sides to settle on one mirrored SA pair")
        assert found, f"never settled: {problems[-1] if problems else '?'}"
        return found[0]

    def _mismatch(self, strict: bool) -> str | tuple[dict[str, Any], IkeSaInfo]:
        peer = self.rb_peer()
        sas = [sa for sa in self.sw.list_sas(CONN) if sa.state != "DELETING"]
        if len(sas) != 1:
            return f"charon holds {len(sas)} IKE_SAs"
        sa = sas[0]
        ike = peer["ike_sa"]
        if ike is None or sa.state != "ESTABLISHED" or ike["state"] != "established":
            return f"IKE SA states: rbipsec {ike and ike['state']}, charon {sa.state}"
        if (ike["spi_i"], ike["spi_r"]) != (sa.spi_i, sa.spi_r):
            return f"IKE SPIs differ: rbipsec {ike['spi_i']}/{ike['spi_r']}, {sa.spi_i}/{sa.spi_r}"
        children, installed = peer["child_sas"], sa.installed
        leftovers = len(sa.children) != 1 and strict
        if len(children) != 1 or len(installed) != 1 or leftovers:
            return (f"Child SAs: rbipsec {[(c['spi_in'], c['state']) for c in children]}, "
                    f"charon {[(c.spi_in, c.state) for c in sa.children]}")  # fmt: skip
        (ours,), (theirs,) = children, installed
        if (ours["spi_in"], ours["spi_out"]) != (theirs.spi_out, theirs.spi_in):
            return f"Child SPIs not mirrored: rbipsec {ours}, charon {theirs}"
        return peer, sa

    def diagnostics(self) -> str:
        parts = [charon.diagnostics() for charon in self.charons]
        if self.wire is not None and self.wire.trace.exists():
            trace = self.wire.trace.read_text()[-4000:]
            parts.append(f"--- IKE through the wire (> towards charon) ---\n{trace}")
        for daemon in self.netlab.daemons:
            parts.append(f"--- rbipsec {daemon.name} log ---\n{daemon.log()[-8000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for charon in self.charons:
            charon.cleanup()
        if self.wire is not None:
            self.wire.close()


def _rbipsec_id(identity: str) -> str:
    """strongSwan's ID syntax to rbipsec's: names become `fqdn:NAME`."""
    return identity if identity[0].isdigit() or ":" in identity else f"fqdn:{identity}"


def check_established(lab: InteropLab, role: Role) -> tuple[dict[str, Any], IkeSaInfo]:
    """Both sides agree: one IKE SA, one Child SA, SPIs mirrored, roles, addresses, ports."""
    peer, sa = lab.settled()
    ike, (child,) = peer["ike_sa"], sa.children
    assert ike["initiator"] is (role is Role.INITIATOR)
    assert sa.initiator is (role is Role.RESPONDER)
    assert peer["state"] == "up" and peer["link_up"]
    assert (child.mode, child.local_ts, child.remote_ts) == (
        "TUNNEL",
        ("0.0.0.0/0",),
        ("0.0.0.0/0",),
    )
    assert child.encap and peer["child_sas"][0]["encap"]  # libipsec always encapsulates
    assert peer["nat"]["in_use"]
    top = lab.topology
    assert (sa.local_host, sa.local_port) == (top.sw_local, 4500)
    assert peer["local"] == {"address": top.rb_local, "port": 4500}
    if top.nat is None:  # without NAT the ports mirror each other exactly
        assert peer["remote"] == {"address": sa.local_host, "port": sa.local_port}
        assert (sa.remote_host, sa.remote_port) == (top.rb_local, 4500)
    return peer, sa


def spis(peer: Mapping[str, Any]) -> set[str]:
    return {spi for c in peer["child_sas"] for spi in (c["spi_in"], c["spi_out"])}


def simultaneously(*calls: Callable[[], object]) -> list[object]:
    """Runs the calls in threads released by one barrier; returns results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:  # handed back to the test, which asserts on it
            results[index] = error

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


FAST_RETRANSMIT = CharonSettings(retransmit_timeout=0.5, retransmit_base=1.4,
                                 retransmit_tries=2)  # fmt: skip
"""charon gives up on a silent peer after 0.5 + 0.7 + 0.98 s (strongSwan: about 165 s)."""
