"""strongSwan as a real peer: network namespaces and private charon instances (root only).

    with namespace_pair() as (ns_a, ns_b):
        with Charon(ns_a, "a", [connection], tun=TunSetup(("10.1.0.1/32",), ("10.2.0.0/24",))):
            ...

How one charon runs here (../shared/NOTES.md has the measurements):
- a generated, self-contained strongswan.conf (`STRONGSWAN_CONF`) loads kernel-libipsec
  (userspace ESP over the TUN `ipsec0`) before kernel-netlink, installs no routes, and
  makes the table-220 rule inert with a fwmark; `TunSetup` puts our inner addresses and
  routes on `ipsec0` after every start (they vanish with the TUN when charon exits);
- charon hard-codes /var/run/charon.pid, so each runs under `ip netns exec NS unshare
  --mount` with its instance directory's `run/` bind-mounted over /run;
- the vici socket and the log live in the instance directory; swanctl loads the generated
  swanctl.conf over that socket; queries and commands go through our own vici client;
- kernel-libipsec always UDP-encapsulates ESP (it fakes NAT: the peer floats to 4500) and
  refuses transport mode;
- SIGTERM makes charon send DELETEs, SIGKILL does not (DPD tests).  Daemons are stopped
  by the pid we started, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from tests.interop.sa_info import ChildSaInfo, IkeSaInfo, parse_list_sa
from tests.interop.strongswan_config import (
    CharonSettings,
    Child,
    Connection,
    render_swanctl,
)
from tests.interop.vici import Message, ViciClient, ViciError

__all__ = [
    "Charon",
    "CharonFactory",
    "CharonSettings",
    "Child",
    "ChildSaInfo",
    "Connection",
    "HarnessError",
    "IkeSaInfo",
    "Netns",
    "TunSetup",
    "connect_veth",
    "find_charon",
    "namespace_pair",
    "strongswan_missing",
]

CHARON_PATHS = (
    "/usr/lib/ipsec/charon",
    "/usr/libexec/ipsec/charon",
    "/usr/lib/strongswan/charon",
    "/usr/libexec/strongswan/charon",
)
T = TypeVar("T")


class HarnessError(Exception):
    """The harness could not build or drive the lab; the message carries the evidence."""


def find_charon() -> str | None:
    override = os.environ.get("RBIPSEC_CHARON")
    candidates = (override,) if override else CHARON_PATHS
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def strongswan_missing() -> str | None:
    """Why strongSwan cannot run here (a skip reason), or None when it can."""
    if find_charon() is None:
        return "strongSwan's charon is not installed (apt-get install strongswan-charon)"
    if shutil.which("swanctl") is None:
        return "swanctl is not installed (apt-get install strongswan-swanctl)"
    if shutil.which("unshare") is None:
        return "util-linux's unshare is missing"
    return None


def sh(*args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise HarnessError(f"{' '.join(args)} failed ({result.returncode}): {output}")
    return result


def wait_until(probe: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Polls `probe` until it returns something truthy (not None, False or empty), or the
    timeout; then None."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


class Netns:
    """A network namespace we created and will delete."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def create(cls, prefix: str = "rbss") -> Netns:
        name = f"{prefix}-{os.getpid() % 100000}-{time.monotonic_ns() % 1000000}"
        sh("ip", "netns", "add", name)
        namespace = cls(name)
        try:
            namespace.ip("link", "set", "lo", "up")
        except HarnessError:
            namespace.delete()
            raise
        return namespace

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        return sh(*self.command(*args), check=check, timeout=timeout)

    def popen(self, *args: str, **options: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), text=True, **options)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.name, *args, check=check)

    def ip_batch(self, commands: Sequence[str]) -> None:
        """Many `ip` commands in one process (`ip -batch`), for large setups."""
        if not commands:
            return
        result = subprocess.run(
            ["ip", "-n", self.name, "-batch", "-"], input="\n".join(commands) + "\n",
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise HarnessError(f"ip -n {self.name} -batch failed: {result.stderr.strip()}")

    def add_address(self, device: str, cidr: str) -> None:
        self.ip("addr", "add", cidr, "dev", device)

    def has_link(self, device: str) -> bool:
        return self.ip("link", "show", device, check=False).returncode == 0

    def ping(
        self, destination: str, *, source: str | None = None, count: int = 1,
        interval: float = 0.2, wait: float = 1.0,
    ) -> bool:  # fmt: skip
        options = ["-I", source] if source else []
        result = self.run(
            "ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(wait),
            *options, destination, check=False, timeout=count * (interval + wait) + 10,
        )  # fmt: skip
        return result.returncode == 0


def connect_veth(
    ns_a: Netns, ns_b: Netns, addresses_a: Sequence[str], addresses_b: Sequence[str],
    device: str = "outer0",
) -> None:  # fmt: skip
    """A veth pair named `device` on both sides, with the addresses, links up."""
    sh("ip", "-n", ns_a.name, "link", "add", device, "type", "veth", "peer", "name", device,
       "netns", ns_b.name)  # fmt: skip
    for namespace, addresses in ((ns_a, addresses_a), (ns_b, addresses_b)):
        commands = [f"addr add {cidr} dev {device} nodad" for cidr in addresses]
        namespace.ip_batch([*commands, f"link set {device} up"])


@contextlib.contextmanager
def namespace_pair(
    addresses_a: Sequence[str] = ("198.51.100.1/24",),
    addresses_b: Sequence[str] = ("198.51.100.2/24",),
    prefix: str = "rbss",
) -> Iterator[tuple[Netns, Netns]]:
    """Two namespaces joined by a veth `outer0`, no default route; deleted on the way out."""
    with contextlib.ExitStack() as stack:
        ns_a = stack.enter_context(Netns.create(f"{prefix}-a"))
        ns_b = stack.enter_context(Netns.create(f"{prefix}-b"))
        connect_veth(ns_a, ns_b, addresses_a, addresses_b)
        yield ns_a, ns_b


@dataclass(frozen=True)
class TunSetup:
    """Inner addresses on libipsec's TUN and the routes through it.

    A route is a destination (source: the first address) or a (destination, source) pair.
    """

    addresses: tuple[str, ...] = ()
    routes: tuple[str | tuple[str, str], ...] = ()
    device: str = "ipsec0"

    def apply(self, namespace: Netns) -> None:
        commands = [f"addr replace {cidr} dev {self.device}" for cidr in self.addresses]
        default_source = self.addresses[0].split("/")[0] if self.addresses else None
        for route in self.routes:
            destination, source = route if isinstance(route, tuple) else (route, default_source)
            src = f" src {source}" if source else ""
            commands.append(f"route replace {destination} dev {self.device}{src}")
        namespace.ip_batch(commands)


class Charon:
    """One private charon in a namespace; a context manager that starts and removes it."""

    def __init__(
        self, netns: Netns, name: str, connections: Sequence[Connection],
        settings: CharonSettings | None = None, tun: TunSetup | None = None,
        block_listings: bool = False,
    ) -> None:  # fmt: skip
        """`block_listings`: `list_sas` waits for IKE_SAs charon is busy with instead of
        leaving them out of the answer (vici's `noblock`), so counts are exact."""
        self.netns = netns
        self.block_listings = block_listings
        self.name = name
        self.connections = list(connections)
        self.settings = settings or CharonSettings()
        self.tun = tun
        self.dir = Path(tempfile.mkdtemp(prefix=f"rbss-{name}-"))
        self.run_dir = self.dir / "run"
        self.run_dir.mkdir()
        self.strongswan_conf = self.dir / "strongswan.conf"
        self.swanctl_conf = self.dir / "swanctl.conf"
        self.vici_socket = self.dir / "charon.vici"
        self.log_path = self.dir / "charon.log"
        self.output_path = self.dir / "charon.out"
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Charon:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        self.cleanup()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    poll_interval = 0.05  # seconds between looks for vici and the TUN while starting

    def start(self, timeout: float = 15.0) -> None:
        """Starts charon (again, after stop/kill), waits for vici, loads swanctl.conf."""
        if self.running:
            raise HarnessError(f"charon {self.name} is already running (pid {self.pid})")
        charon = find_charon()
        if charon is None:
            raise HarnessError("charon is not installed")
        self.strongswan_conf.write_text(self.settings.render(self.dir))
        self.vici_socket.unlink(missing_ok=True)
        mount_and_exec = 'mount --bind "$0" /run && exec "$1"'
        with self.output_path.open("ab") as output:
            self.process = subprocess.Popen(
                self.netns.command("unshare", "--mount", "--propagation", "private",
                                   "sh", "-c", mount_and_exec, str(self.run_dir), charon),
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=self._env(), start_new_session=True,
            )  # fmt: skip
        if wait_until(self._vici_ready, timeout, self.poll_interval) is None:
            self.kill()
            raise HarnessError(f"charon {self.name}: no vici socket within {timeout} s\n"
                               + self.diagnostics())  # fmt: skip
        tun = self.tun
        if tun is not None:
            # Before loading: kernel-libipsec refuses a CHILD_SA whose local traffic
            # selector holds none of our addresses, and `start_action = start` initiates
            # during the load.
            if wait_until(lambda: self.netns.has_link(tun.device), 5.0,
                          self.poll_interval) is None:  # fmt: skip
                raise HarnessError(
                    f"charon {self.name}: no TUN {tun.device}\n" + self.diagnostics()
                )
            tun.apply(self.netns)
        self.load()

    def _env(self) -> dict[str, str]:
        return dict(os.environ, STRONGSWAN_CONF=str(self.strongswan_conf))

    def _vici_ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise HarnessError(f"charon {self.name} exited during start\n" + self.diagnostics())
        try:
            with ViciClient(str(self.vici_socket), timeout=2.0) as client:
                client.request("version")
        except (OSError, ViciError):
            return False
        return True

    def load(self, connections: Sequence[Connection] | None = None) -> None:
        """Writes swanctl.conf (new connections if given) and loads it with swanctl."""
        if connections is not None:
            self.connections = list(connections)
        self.swanctl_conf.write_text(render_swanctl(self.connections))
        self.swanctl("--load-all", "--noprompt", "--file", str(self.swanctl_conf))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (charon sends DELETEs), then SIGKILL if it lingers."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: the peer hears nothing (for DPD tests)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, signum: signal.Signals, timeout: float) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10.0)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def rss_kib(self) -> int:
        """charon's resident set size (VmRSS), in KiB."""
        if self.pid is None:
            raise HarnessError(f"charon {self.name} is not running")
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise HarnessError(f"no VmRSS for pid {self.pid}")

    # -- control ---------------------------------------------------------------------------
    def swanctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["swanctl", args[0], "--uri", f"unix://{self.vici_socket}", *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, env=self._env(),
                                timeout=30, check=False)  # fmt: skip
        if check and result.returncode != 0:
            raise HarnessError(f"charon {self.name}: {' '.join(command)} failed: "
                               f"{result.stdout}{result.stderr}\n{self.log_tail()}")  # fmt: skip
        return result

    def request(self, command: str, message: dict[str, Any] | None = None) -> Message:
        with ViciClient(str(self.vici_socket)) as client:
            return client.request(command, message)

    def _checked(self, command: str, message: dict[str, Any]) -> Message:
        reply = self.request(command, message)
        if reply.get("success") != "yes":
            raise HarnessError(f"charon {self.name}: {command} {message} failed: "
                               f"{reply.get('errmsg', reply)}\n{self.log_tail()}")  # fmt: skip
        return reply

    def initiate(self, child: str, ike: str | None = None, timeout: float = 15.0) -> None:
        """Initiates a CHILD_SA (and its IKE_SA) and waits for the outcome."""
        message: dict[str, Any] = {"child": child, "timeout": int(timeout * 1000)}
        if ike is not None:
            message["ike"] = ike
        self._checked("initiate", message)

    def initiate_async(self, child: str, ike: str | None = None) -> None:
        message: dict[str, Any] = {"child": child, "timeout": -1}
        if ike is not None:
            message["ike"] = ike
        self._checked("initiate", message)

    def terminate(self, ike: str | None = None, child: str | None = None,
                  timeout: float = 10.0, force: bool = False) -> None:  # fmt: skip
        """Terminates by config name, waiting up to `timeout` for the peer's answer.

        With `force`, an IKE_SA whose peer does not answer is destroyed when the timeout
        expires; charon then reports a failure, which is fine as long as the SA is gone.
        """
        message: dict[str, Any] = {"timeout": int(timeout * 1000), "force": force}
        message.update({key: value for key, value in (("ike", ike), ("child", child)) if value})
        reply = self.request("terminate", message)
        if reply.get("success") == "yes" or (force and ike and not self.list_sas(ike)):
            return
        raise HarnessError(f"charon {self.name}: terminate {message} failed: "
                           f"{reply.get('errmsg', reply)}\n{self.log_tail()}")  # fmt: skip

    def terminate_async(self, ike: str | None = None, child: str | None = None) -> None:
        """Starts closing by config name and returns at once (the DELETE is on its way)."""
        message: dict[str, Any] = {"timeout": -1}
        message.update({key: value for key, value in (("ike", ike), ("child", child)) if value})
        self._checked("terminate", message)

    def rekey(self, child: str | None = None, ike: str | None = None,
              reauth: bool = False) -> None:  # fmt: skip
        """Asks charon to rekey a CHILD_SA or an IKE_SA by config name (returns at once)."""
        message: dict[str, Any] = {"reauth": reauth}
        message.update({key: value for key, value in (("ike", ike), ("child", child)) if value})
        self._checked("rekey", message)

    def list_sas(self, ike: str | None = None, *, block: bool | None = None) -> list[IkeSaInfo]:
        blocking = self.block_listings if block is None else block
        message: dict[str, Any] = {"noblock": "no" if blocking else "yes"}
        if ike is not None:
            message["ike"] = ike
        with ViciClient(str(self.vici_socket)) as client:
            events, _ = client.streamed("list-sas", "list-sa", message)
        return [sa for event in events for sa in parse_list_sa(event)]

    def child_sas(self, child: str | None = None) -> list[ChildSaInfo]:
        return [c for sa in self.list_sas() for c in sa.children if child in (None, c.name)]

    def wait_child_installed(self, child: str, timeout: float = 15.0) -> ChildSaInfo:
        def installed() -> ChildSaInfo | None:
            found = [c for c in self.child_sas(child) if c.state == "INSTALLED"]
            return found[0] if found else None

        result = wait_until(installed, timeout, interval=0.1)
        if result is None:
            raise HarnessError(f"charon {self.name}: CHILD_SA {child} not installed within "
                               f"{timeout} s\n{self.diagnostics()}")  # fmt: skip
        return result

    # -- evidence --------------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def diagnostics(self) -> str:
        output = self.output_path.read_text(errors="replace") if self.output_path.exists() else ""
        sas = ""
        if self.running:
            sas = self.swanctl("--list-sas", check=False).stdout
        return (f"--- charon {self.name} output ---\n{output[-2000:]}\n--- list-sas ---\n{sas}"
                f"--- log tail ---\n{self.log_tail()}")  # fmt: skip


class CharonFactory(Protocol):
    """What the `charon_factory` fixture hands a test: makes, starts and tracks a Charon."""

    def __call__(
        self,
        netns: Netns,
        name: str,
        connections: Sequence[Connection],
        settings: CharonSettings | None = None,
        tun: TunSetup | None = None,
    ) -> Charon: ...
