"""`rbipsec console --demo`: a throwaway lab of real tunnels, shown live, then removed.

The lab (root only; everything is named with the prefix `rbdemo-`):

    rbdemo-hub ─ wan1 198.51.100.1/30 ─── 198.51.100.2/30 ─ rbdemo-hq       IKEv2, short
               │                                                            lifetimes: rekeys
               ├ wan2 198.51.100.5/30 ─── 198.51.100.6/30 ─ rbdemo-branch   IKEv1 main mode,
               │                                                            the hub initiates
               ├ wan3 198.51.100.9/30 ─── 198.51.100.10/30 rbdemo-nat ─ 203.0.113.1/24
               │                            (masquerade)        └─ 203.0.113.2/24 rbdemo-shop
               │                                                   behind NAT, initiates
               └ wan4 198.51.100.13/30 ── 198.51.100.14/30 rbdemo-kiosk  the hub is passive

Each peer namespace runs `rbipsec daemon` with the userspace dataplane; the console runs
in rbdemo-hub with the core embedded (`-c hub.toml`), and pings flow through every tunnel.
No namespace has a default route, so nothing leaves the lab.  On exit -- also Ctrl-C, a
signal, or a crash of the console or of a peer -- the processes are stopped and the
namespaces and files removed; leftovers of a demo that was killed outright are removed
the next time a demo starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PREFIX = "rbdemo-"
PID_FILE = "demo.pid"
# The branch tunnel runs IKEv1 main mode (an IKEv1 IKE SA cannot use AEAD algorithms); only
# the hub initiates it: under load, both sides starting phase 1 at once sometimes ended with
# an IKE SA and no Child SA for over a minute (reported to the IKEv1 engine).
_IKEV1 = 'ike_version = 1\nexchange_mode = "main"\nike_proposals = ["aes256-sha256-modp2048"]\n'
REPO = Path(__file__).resolve().parents[1]


class DemoError(Exception):
    pass


@dataclass(frozen=True)
class DemoPeer:
    name: str  # the peer's name on the hub, and its namespace rbdemo-<name>
    index: int  # ipsecN on the hub, 10.0.N.0/30 inside the tunnel
    hub_address: str  # the hub's end of its /30 link
    link_address: str  # the other end: the peer, or the NAT router's public side
    peer_address: str  # the peer's own address (differs from link_address behind NAT)
    settings: str = ""  # extra TOML lines for the hub's [[peer]]
    peer_settings: str = ""  # extra TOML lines for the peer's own [[peer]]
    behind_nat: bool = False

    def namespace(self, prefix: str = PREFIX) -> str:
        return prefix + self.name


PEERS = (
    DemoPeer("hq", 1, "198.51.100.1", "198.51.100.2", "198.51.100.2",
             settings="child_lifetime = 120\nike_lifetime = 600\ndpd_interval = 5\n"),
    DemoPeer("branch", 2, "198.51.100.5", "198.51.100.6", "198.51.100.6",
             settings=_IKEV1, peer_settings=_IKEV1 + "passive = true\n"),
    DemoPeer("shop", 3, "198.51.100.9", "198.51.100.10", "203.0.113.2", behind_nat=True,
             settings='remote_address = "dynamic"\nremote_id = "fqdn:shop.demo"\n',
             peer_settings='local_id = "fqdn:shop.demo"\n'),
    DemoPeer("kiosk", 4, "198.51.100.13", "198.51.100.14", "198.51.100.14",
             settings="passive = true\n"),
)  # fmt: skip


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise DemoError(f"{' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def _global(socket: Path, level: str) -> str:
    return (f'[global]\nenabled = true\ndataplane = "userspace"\nsocket = "{socket}"\n'
            f'log_level = "{level}"\n')  # fmt: skip


def hub_config(workdir: Path) -> str:
    text = "# The demo hub: the console's embedded core.\n" + _global(workdir / "hub.sock", "info")
    for peer in PEERS:
        remote = "" if peer.behind_nat else f'remote_address = "{peer.peer_address}"\n'
        text += (
            f"\n[[peer]]\nname = \"{peer.name}\"\ninterface = \"ipsec{peer.index}\"\n"
            f'local_address = "{peer.hub_address}"\n{remote}'
            f'psk = "demo-only-{peer.name}"\naddress = "10.0.{peer.index}.1/30"\n'
            f"{peer.settings}"
        )  # fmt: skip
    return text


def peer_config(peer: DemoPeer, workdir: Path) -> str:
    return _global(workdir / f"{peer.name}.sock", "info") + (
        f'\n[[peer]]\nname = "hub"\ninterface = "ipsec0"\n'
        f'local_address = "{peer.peer_address}"\nremote_address = "{peer.hub_address}"\n'
        f'psk = "demo-only-{peer.name}"\naddress = "10.0.{peer.index}.2/30"\n'
        f"{peer.peer_settings}"
    )


class Lab:
    """The namespaces, links, peer daemons and pings; `prefix` names every namespace."""

    def __init__(self, workdir: Path, prefix: str = PREFIX) -> None:
        self.workdir = workdir
        self.prefix = prefix
        self.hub = prefix + "hub"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def _namespace(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    @staticmethod
    def _veth(ns_a: str, name_a: str, cidr_a: str, ns_b: str, name_b: str, cidr_b: str) -> None:
        sh("ip", "-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b,
           "netns", ns_b)  # fmt: skip
        for namespace, name, cidr in ((ns_a, name_a, cidr_a), (ns_b, name_b, cidr_b)):
            sh("ip", "-n", namespace, "addr", "add", cidr, "dev", name)
            sh("ip", "-n", namespace, "link", "set", name, "up")

    def build(self) -> None:
        self._namespace(self.hub)
        for peer in PEERS:
            home = self._namespace(peer.namespace(self.prefix))
            hub_side = f"{peer.hub_address}/30"
            if not peer.behind_nat:
                self._veth(self.hub, f"wan{peer.index}", hub_side, home, "wan0",
                           f"{peer.peer_address}/30")  # fmt: skip
                continue
            nat = self._namespace(self.prefix + "nat")
            self._veth(self.hub, f"wan{peer.index}", hub_side, nat, "outside",
                       f"{peer.link_address}/30")  # fmt: skip
            self._veth(nat, "inside", "203.0.113.1/24", home, "wan0",
                       f"{peer.peer_address}/24")  # fmt: skip
            sh("ip", "-n", home, "route", "add", f"{peer.hub_address}/32",
               "via", "203.0.113.1")  # fmt: skip
            sh("ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = self.workdir / "nat.nft"
            rules.write_text("table ip nat {\n chain post { type nat hook postrouting priority"
                             ' 100;\n  oifname "outside" masquerade\n }\n}\n')  # fmt: skip
            sh("ip", "netns", "exec", nat, "nft", "-f", str(rules))

    def spawn(self, namespace: str, *command: str, log: str | None = None) -> None:
        out = open(self.workdir / log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *command], stdin=subprocess.DEVNULL,
            stdout=out, stderr=out, env=env, cwd=self.workdir, start_new_session=True,
        )  # fmt: skip
        if log:
            out.close()  # type: ignore[union-attr]
        self.processes.append(process)

    def write_hub_config(self) -> Path:
        path = self.workdir / "hub.toml"
        path.write_text(hub_config(self.workdir))
        return path

    def start_peers_and_traffic(self) -> None:
        for peer in PEERS:
            path = self.workdir / f"{peer.name}.toml"
            path.write_text(peer_config(peer, self.workdir))
            self.spawn(peer.namespace(self.prefix), sys.executable, "-m", "core.cli", "daemon",
                       "-c", str(path), log=f"{peer.name}.log")  # fmt: skip
        for peer in PEERS:  # pings that keep trying while a tunnel is still coming up
            loop = (f"while :; do ping -q -c 20 -i 0.5 -W 1 -s {200 * peer.index} "
                    f"10.0.{peer.index}.2 >/dev/null 2>&1 || sleep 1; done")  # fmt: skip
            self.spawn(self.hub, "sh", "-c", loop)

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        for namespace in reversed(self.namespaces):
            remove_namespace(namespace)
        self.namespaces.clear()


def remove_namespace(namespace: str) -> None:
    """Kills what still runs inside the namespace, then deletes it (its links go with it)."""
    pids = sh("ip", "netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    sh("ip", "netns", "del", namespace, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Removes namespaces and work directories of demos that did not clean up (killed with
    SIGKILL, power loss).  Refuses while another demo is still running."""
    removed: list[str] = []
    for workdir in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        pid_file = workdir / PID_FILE
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if pid != os.getpid() and _alive(pid):
                raise DemoError(f"another demo is running (pid {pid}); quit it first")
        shutil.rmtree(workdir, ignore_errors=True)
        removed.append(str(workdir))
    listing = sh("ip", "netns", "list", check=False).stdout.splitlines()
    for line in listing:
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            remove_namespace(name)
            removed.append(name)
    return removed


def why_not(euid: int | None = None) -> str | None:
    """Why the demo cannot run here, or None."""
    if (os.geteuid() if euid is None else euid) != 0:
        return ("rbipsec console --demo needs root: it creates network namespaces, veth "
                "links, TUN interfaces and NAT rules (run it with sudo).  Without root, "
                "`python -m tui --fake` shows the console on made-up tunnels.")  # fmt: skip
    for tool in ("ip", "nft", "ping"):
        if shutil.which(tool) is None:
            return f"rbipsec console --demo needs `{tool}` (iproute2, nftables, iputils)"
    if not os.path.exists("/dev/net/tun"):
        return "rbipsec console --demo needs /dev/net/tun for the userspace dataplane"
    return None


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_demo(args: argparse.Namespace) -> int:
    problem = why_not()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    try:
        remove_leftovers()
    except DemoError as error:
        print(f"rbipsec console --demo: {error}", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX))
    (workdir / PID_FILE).write_text(str(os.getpid()))
    lab = Lab(workdir)
    previous = {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        lab.build()
        lab.start_peers_and_traffic()
        return _run_console(lab.write_hub_config())
    except DemoError as error:
        print(f"rbipsec console --demo: the lab could not be built: {error}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            lab.close()
            shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_console(hub: Path) -> int:
    """The console in the hub namespace, on this terminal; Ctrl-C is the console's key, so
    this process ignores SIGINT while it runs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
    command = ["ip", "netns", "exec", PREFIX + "hub", sys.executable, "-m", "tui", "-c", str(hub)]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        console = subprocess.Popen(command, env=env, cwd=hub.parent,
                                   preexec_fn=_default_sigint)  # fmt: skip
        try:
            return console.wait()
        except SystemExit:
            console.terminate()
            console.wait(timeout=10)
            raise
    finally:
        signal.signal(signal.SIGINT, previous)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
