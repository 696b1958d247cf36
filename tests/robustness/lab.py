"""The robustness lab: daemons in namespaces (tests/integration/netlab.py) with test
timings, impairments of the outer link, event recording and resource snapshots.

- `LabDaemon` runs `tests.robustness.lab_daemon` (the real daemon with short timings);
- `impair()` drops and duplicates packets on a namespace's outer interface with nftables
  (`numgen random` drops, `dup to`); `Wire` bridges two veths through a namespace in
  userspace and holds back a share of frames (reordering);
- `EventLog` records a daemon's event stream (the control socket's `subscribe`);
- `resources()` counts a daemon's file descriptors, RSS, threads, its namespace's
  interfaces and routes, for leak checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.netlab import (
    PYTHON,
    REPO,
    DaemonProcess,
    NetLab,
    global_section,
    peer_section,
    wait_until,
)

# Fast but sane: IKE retransmits from 0.5 s (x1.5, 8 tries), rekeys at 60-75 % of the
# lifetime, re-establishment after 0.5-2 s.
FAST_TIMING: dict[str, object] = {
    "retransmit_timeout": 0.5,
    "retransmit_base": 1.5,
    "retransmit_tries": 8,
    "half_open_timeout": 10.0,
    "rekey_margin": 0.25,
    "rekey_jitter": 0.1,
    "reestablish_backoff": [0.5, 1.0, 2.0],
}

__all__ = ["PYTHON", "REPO", "NetLab", "global_section", "peer_section", "wait_until"]


class LabDaemon(DaemonProcess):
    """A DaemonProcess that runs the lab launcher with `timing` and `lifetimes`."""

    def __init__(
        self,
        lab: NetLab,
        name: str,
        config: str,
        *,
        timing: dict[str, object] | None = None,
        lifetimes: str = "",
    ) -> None:
        super().__init__(lab, name, config, ())
        self.env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            RBIPSEC_LAB_TIMING=json.dumps(timing if timing is not None else FAST_TIMING),
            RBIPSEC_LAB_LIFETIMES=lifetimes,
        )

    def start(self, wait: bool = True) -> LabDaemon:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.lab.namespaces[self.name],
                PYTHON,
                "-m",
                "tests.robustness.lab_daemon",
                "-c",
                str(self.config_path),
            ],
            cwd=REPO,
            stdout=log,
            stderr=log,
            env=self.env,
        )
        log.close()
        if wait:
            wait_until(self._answers, 15, f"daemon {self.name} to answer on {self.socket}")
        return self

    @property
    def pid(self) -> int:
        """The daemon's own pid (`ip netns exec` execs it, so the Popen pid is the daemon)."""
        assert self.process is not None
        return self.process.pid


def lab_daemon(lab: NetLab, name: str, config: str, **options: Any) -> LabDaemon:
    process = LabDaemon(lab, name, config, **options)
    lab.daemons.append(process)
    return process


# -- impairments -----------------------------------------------------------------------
@contextlib.contextmanager
def impair(
    lab: NetLab,
    namespace: str,
    interface: str,
    *,
    drop: int = 0,
    duplicate: int = 0,
    peer: str = "",
) -> Iterator[None]:
    """Drop `drop` % of the packets leaving and entering `interface` (each way) and send
    `duplicate` % of those leaving twice (to `peer`, the next hop)."""
    out_rules, in_rules = [], []
    if drop:
        out_rules.append(f'oifname "{interface}" numgen random mod 100 < {drop} counter drop')
        in_rules.append(f'iifname "{interface}" numgen random mod 100 < {drop} counter drop')
    if duplicate:
        out_rules.append(
            f'oifname "{interface}" numgen random mod 100 < {duplicate} counter '
            f'dup to {peer} device "{interface}"'
        )
    script = (
        "table ip rbloss {\n"
        "  chain out { type filter hook output priority -200; policy accept;\n"
        + "".join(f"    {rule}\n" for rule in out_rules)
        + "  }\n"
        "  chain in { type filter hook input priority -200; policy accept;\n"
        + "".join(f"    {rule}\n" for rule in in_rules)
        + "  }\n}\n"
    )
    path = lab.workdir / f"impair-{namespace}.nft"
    path.write_text(script)
    lab.run(namespace, "nft", "-f", str(path))
    try:
        yield
    finally:
        lab.run(namespace, "nft", "delete", "table", "ip", "rbloss", check=False)


class Wire:
    """Bridges two interfaces of a namespace in userspace (AF_PACKET), holding back
    `reorder` % of the frames for up to `delay` seconds: later frames overtake them."""

    def __init__(
        self, lab: NetLab, namespace: str, left: str, right: str, *, reorder: int, delay: float
    ) -> None:
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                lab.namespaces[namespace],
                PYTHON,
                "-m",
                "tests.robustness.wire",
                left,
                right,
                str(reorder),
                str(delay),
            ],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            raise AssertionError(f"wire did not start: {line}")

    def stop(self) -> dict[str, int]:
        """Stop the wire; returns its counters (forwarded, held back)."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        counters = {}
        for item in out.split():
            key, _, value = item.partition("=")
            if value.isdigit():
                counters[key] = int(value)
        return counters


# -- events ------------------------------------------------------------------------------
class EventLog:
    """Every event a daemon publishes, read by a thread from the control socket."""

    def __init__(self, socket_path: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(socket_path))
        self._sock.sendall(b'{"id": 1, "cmd": "subscribe"}\n')
        self._file = self._sock.makefile("rb")
        first = json.loads(self._file.readline())
        assert first.get("ok"), first
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self._file:
                self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("type") == kind]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)


# -- resources ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    fds: int
    rss_kib: int
    threads: int
    interfaces: int
    routes: int

    def line(self) -> str:
        return (
            f"fds {self.fds}, RSS {self.rss_kib} KiB, threads {self.threads}, "
            f"interfaces {self.interfaces}, routes {self.routes}"
        )


def resources(lab: NetLab, daemon: LabDaemon) -> Resources:
    pid = daemon.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(values["VmRSS"].split()[0])
    threads = int(values["Threads"])
    links = lab.run(daemon.name, "ip", "-o", "link").stdout.count("\n")
    routes = sum(
        1
        for line in lab.run(
            daemon.name, "ip", "-o", "route", "show", "table", "all"
        ).stdout.splitlines()
        if "ipsec" in line or "proto 114" in line
    )  # the daemon's, not the kernel's
    return Resources(fds, rss, threads, links, routes)


def wait_process_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def block(lab: NetLab, namespace: str, match: str) -> Iterator[None]:
    """Drop every packet entering `namespace` that matches the nft expression `match`."""
    path = lab.workdir / f"block-{namespace}.nft"
    path.write_text(
        "table ip rbblock {\n  chain in { type filter hook input priority -210; "
        f"policy accept;\n    {match} drop\n  }}\n}}\n"
    )
    lab.run(namespace, "nft", "-f", str(path))
    try:
        yield
    finally:
        lab.run(namespace, "nft", "delete", "table", "ip", "rbblock", check=False)


def kernel_state(lab: NetLab, namespace: str) -> dict[str, list[str]]:
    """The namespace's links (names) and routes (all tables), for leftover checks."""
    links = lab.run(namespace, "ip", "-o", "link").stdout.splitlines()
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links)
    routes = lab.run(namespace, "ip", "route", "show", "table", "all").stdout.splitlines()
    return {"links": names, "routes": sorted(routes)}
