"""Network namespaces and daemon processes for the end-to-end tests (root only).

`NetLab` creates uniquely named namespaces and veth links (198.51.100.0/24 and
203.0.113.0/24 outside, no default routes) and removes every one of them on exit, after
stopping the daemons it started.  `DaemonProcess` runs `python -m core.cli daemon` inside
a namespace with its own config, log file and control socket (unix sockets live in the
file system, so the test talks to every daemon directly).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.daemon.control.client import ControlClient, DaemonNotRunning

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


class LabError(AssertionError):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls `condition`; returns the seconds it took; raises LabError on timeout."""
    start = time.monotonic()
    timeout *= SLOW
    while not condition():
        if time.monotonic() - start > timeout:
            raise LabError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


class NetLab:
    """Namespaces named rbd<pid>-<name>, veth links between them, cleanup on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = f"rbd{os.getpid() % 100000}"
        self.namespaces: dict[str, str] = {}
        self.daemons: list[DaemonProcess] = []
        self._links = 0

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # Each daemon's log tail: pytest shows it when the test failed.
        print("\n".join(f"--- {d.name} ---\n{d.log()[-6000:]}" for d in self.daemons))
        for daemon in self.daemons:
            daemon.kill()
        for namespace in self.namespaces.values():
            sh("ip", "netns", "del", namespace, check=False)
        self.namespaces.clear()

    def namespace(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces[name] = full
        sh("ip", "-n", full, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", full, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
        return full

    def link(self, a: str, a_address: str, b: str, b_address: str | None,
             a_name: str = "", b_name: str = "") -> tuple[str, str]:  # fmt: skip
        """A veth pair between namespaces a and b with the given addresses (CIDR)."""
        self._links += 1
        a_name = a_name or f"v{self._links}a"
        b_name = b_name or f"v{self._links}b"
        ns_a, ns_b = self.namespaces[a], self.namespaces[b]
        temp_a, temp_b = f"{self.prefix}x{self._links}", f"{self.prefix}y{self._links}"
        sh("ip", "link", "add", temp_a, "type", "veth", "peer", "name", temp_b)
        sh("ip", "link", "set", temp_a, "netns", ns_a, "name", a_name)
        sh("ip", "link", "set", temp_b, "netns", ns_b, "name", b_name)
        for namespace, name, address in ((ns_a, a_name, a_address), (ns_b, b_name, b_address)):
            for extra in [address] if address else []:
                sh("ip", "-n", namespace, "addr", "add", extra, "dev", name)
            sh("ip", "-n", namespace, "link", "set", name, "up")
        return a_name, b_name

    def run(self, name: str, *args: str, check: bool = True,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return sh("ip", "netns", "exec", self.namespaces[name], *args, check=check,
                  timeout=timeout)  # fmt: skip

    def ping(self, name: str, destination: str, *options: str, count: int = 3,
             interval: float = 0.2) -> tuple[int, int]:  # fmt: skip
        """(transmitted, received) of a ping from namespace `name`."""
        wait = str(max(1, round(SLOW)))  # seconds for a reply: longer under emulation
        result = self.run(name, "ping", "-c", str(count), "-i", str(interval), "-W", wait,
                          *options, destination, check=False,
                          timeout=count * interval + 10 * SLOW)  # fmt: skip
        match = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
        if match is None:
            raise LabError(f"ping said: {result.stdout} {result.stderr}")
        return int(match[1]), int(match[2])

    def start_ping(self, name: str, destination: str, interval: float = 0.05
                   ) -> subprocess.Popen[str]:  # fmt: skip
        """A continuous ping; stop it with SIGINT and read its summary (`finish_ping`).
        Quiet: nobody reads the pipe until the end, and a ping writing a line per reply
        would block once the pipe is full (about 1100 replies), silently ending the load."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[name], "ping", "-q", "-i", str(interval),
             "-W", str(max(1, round(SLOW))), destination],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    @staticmethod
    def finish_ping(process: subprocess.Popen[str]) -> tuple[int, int]:
        process.send_signal(signal.SIGINT)
        out, _err = process.communicate(timeout=10)
        match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if match is None:
            raise LabError(f"ping said: {out}")
        return int(match[1]), int(match[2])

    def daemon(self, name: str, config: str, extra_args: tuple[str, ...] = ()
               ) -> DaemonProcess:  # fmt: skip
        process = DaemonProcess(self, name, config, extra_args)
        self.daemons.append(process)
        return process


# The dataplane the daemons run: userspace here; the QEMU guest sets "kernel".
@contextlib.contextmanager
def scratch_namespace(prefix: str, *commands: str) -> Iterator[str]:
    """A namespace of our own for one test, set up by `ip -n NAME COMMAND...` lines and
    deleted afterwards (with everything in it)."""
    name = f"{prefix}-{os.getpid() % 100000}-{time.monotonic_ns() % 100000}"
    sh("ip", "netns", "add", name)
    try:
        for command in commands:
            sh("ip", "-n", name, *command.split())
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


def python_in(namespace: str, script: str, timeout: float = 60.0) -> Any:
    """Runs `script` with this interpreter inside the namespace (the repository on its
    path) and returns the JSON it printed; its stderr when it failed."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, PYTHON, "-c", script],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


OUTER_A, OUTER_B = "198.51.100.1", "198.51.100.2"  # the two nodes of `two_nodes`


def two_nodes(lab: NetLab) -> None:
    """Namespaces a and b joined by one link, outer0 on both sides, OUTER_A and OUTER_B."""
    lab.namespace("a")
    lab.namespace("b")
    lab.link("a", f"{OUTER_A}/24", "b", f"{OUTER_B}/24", "outer0", "outer0")


DATAPLANE = os.environ.get("RBIPSEC_E2E_DATAPLANE", "userspace")
# Seconds to wait for things in the lab: stretched under emulation (RBIPSEC_E2E_SLOW=20).
SLOW = float(os.environ.get("RBIPSEC_E2E_SLOW", "1"))


def global_section(socket_path: Path, **settings: object) -> str:
    values = {"enabled": True, "dataplane": DATAPLANE, "socket": str(socket_path),
              "log_level": "debug", **settings}  # fmt: skip
    return "[global]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())


def peer_section(**settings: object) -> str:
    defaults: dict[str, object] = {"psk": "end-to-end test secret",
                                   "dpd_interval": max(2, round(2 * SLOW)),
                                   "dpd_retries": 2}  # fmt: skip
    values = {**defaults, **settings}
    return "\n[[peer]]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


class DaemonProcess:
    def __init__(self, lab: NetLab, name: str, config: str, extra_args: tuple[str, ...]) -> None:
        self.lab = lab
        self.name = name
        self.config_path = lab.workdir / f"{name}.toml"
        self.socket = lab.workdir / f"{name}.sock"
        self.log_path = lab.workdir / f"{name}.log"
        self.config_path.write_text(textwrap.dedent(config))
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.namespaces[self.name], PYTHON, "-m", "core.cli",
             "daemon", "-c", str(self.config_path), *self.extra_args],
            cwd=REPO, stdout=log, stderr=log, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip
        log.close()
        if wait:
            wait_until(self._answers, 15, f"daemon {self.name} to answer on {self.socket}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise LabError(f"daemon {self.name} exited {self.process.returncode}:\n{self.log()}")
        try:
            with ControlClient(str(self.socket), timeout=5) as client:
                client.request("ping")
        except DaemonNotRunning:
            return False
        return True

    def request(self, cmd: str, **args: Any) -> Any:
        with ControlClient(str(self.socket), timeout=20) as client:
            return client.request(cmd, **args)

    def status(self, peer: str | None = None) -> dict[str, Any]:
        result = self.request("status", **({"peer": peer} if peer else {}))
        assert isinstance(result, dict)
        return result

    def peer(self, name: str) -> dict[str, Any]:
        peer = self.status(name)["peers"][0]
        assert isinstance(peer, dict)
        return peer

    def state(self, peer: str) -> str:
        return str(self.peer(peer)["state"])

    def wait_up(self, *peers: str, timeout: float = 20.0) -> float:
        return wait_until(lambda: all(self.state(p) == "up" for p in peers), timeout,
                          f"{self.name}: {', '.join(peers)} up")  # fmt: skip

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`rbipsec ARGS --socket ...` run inside the daemon's namespace."""
        return self.lab.run(self.name, PYTHON, "-m", "core.cli", *args, "--socket",
                            str(self.socket), check=False)  # fmt: skip


@contextlib.contextmanager
def nft_counters(lab: NetLab, namespace: str, rules: dict[str, str],
                 hook: str = "output") -> Iterator[Callable[[], dict[str, int]]]:  # fmt: skip
    """Named nftables counters on `hook` in a namespace: rules {name: match expression}.
    Yields a function reading {name: packets}."""
    table = "rbdtest"
    script = [f"table inet {table} {{"]
    for name in rules:
        script.append(f"  counter n_{name} {{ }}")
    script.append(f"  chain c {{ type filter hook {hook} priority -300; policy accept;")
    for name, match in rules.items():
        script.append(f'    {match} counter name "n_{name}"')
    script.append("  }")
    script.append("}")
    path = lab.workdir / f"nft-{namespace}-{hook}.nft"
    path.write_text("\n".join(script) + "\n")
    lab.run(namespace, "nft", "-f", str(path))

    def read() -> dict[str, int]:
        out = lab.run(namespace, "nft", "-j", "list", "counters", "table", "inet", table).stdout
        values: dict[str, int] = {}
        for item in json.loads(out)["nftables"]:
            counter = item.get("counter")
            if counter:
                values[str(counter["name"]).removeprefix("n_")] = int(counter["packets"])
        return values

    try:
        yield read
    finally:
        lab.run(namespace, "nft", "delete", "table", "inet", table, check=False)
