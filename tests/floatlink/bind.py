"""A BIND9 authoritative server in a network namespace, with a TSIG-protected dynamic zone.

`BindServer` writes a named.conf, one key file per node (BIND's format, mode 0600) and the
zone into a temporary directory, and runs `named -g` (foreground, no pid file, no control
channel) inside the namespace.  Each node's key may update only the node's own name
(`update-policy { grant KEY name NODE.ZONE A AAAA TXT; }`: the address and its
registration stamp), as an operator would set it up; `types` narrows that (an older setup
that allows only addresses).

`in_netns` runs a function in a thread that has entered a namespace (setns(2) works per
thread), so a test can drive asyncio code and dnspython inside the lab without a subprocess.
"""

from __future__ import annotations

import base64
import ctypes
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dns.message
import dns.query
import dns.rdatatype

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NAMED = "/usr/sbin/named"


def in_netns(namespace: str, function: Callable[[], T]) -> T:
    """`function()` run in a thread inside the named network namespace."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            _enter(namespace)
            results.append(function())
        except BaseException as error:  # handed to the caller's thread
            errors.append(error)

    thread = threading.Thread(target=target, name=f"in-{namespace}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _enter(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({namespace}): {os.strerror(error)}")
    finally:
        os.close(descriptor)


def write_key_file(path: Path, name: str, secret: bytes | None = None) -> bytes:
    """A BIND-style hmac-sha256 key file (mode 0600); returns the secret."""
    secret = secret if secret is not None else secrets.token_bytes(32)
    text = (
        f'key "{name}" {{\n\talgorithm hmac-sha256;\n'
        f'\tsecret "{base64.b64encode(secret).decode()}";\n}};\n'
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
    return secret


class BindServer:
    """named serving `zone` on `address`:53 inside `namespace`; `nodes` get keys."""

    def __init__(
        self,
        workdir: Path,
        namespace: str,
        address: str,
        zone: str,
        nodes: tuple[str, ...],
        types: str = "A AAAA TXT",
    ) -> None:
        self.directory = workdir / "bind"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.address = address
        self.zone = zone
        self.types = types
        self.key_files: dict[str, Path] = {}
        for node in nodes:
            path = self.directory / f"{node}.key"
            write_key_file(path, f"{node}-key")
            self.key_files[node] = path
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "named.log"

    def _config(self) -> str:
        includes = "".join(f'include "{path}";\n' for path in self.key_files.values())
        grants = "".join(
            f"\t\tgrant {node}-key name {node}.{self.zone} {self.types};\n"
            for node in self.key_files
        )
        listen = "listen-on-v6" if ":" in self.address else "listen-on"
        other = "listen-on" if ":" in self.address else "listen-on-v6"
        return (
            f"{includes}"
            "options {\n"
            f'\tdirectory "{self.directory}";\n'
            "\tpid-file none;\n"
            f'\tsession-keyfile "{self.directory}/session.key";\n'
            f"\t{listen} port 53 {{ {self.address}; }};\n"
            f"\t{other} {{ none; }};\n"
            "\trecursion no;\n"
            "\tdnssec-validation no;\n"
            "\tnotify no;\n"
            "};\n"
            "controls { };\n"
            f'zone "{self.zone}" {{\n'
            "\ttype primary;\n"
            f'\tfile "{self.directory}/zone.db";\n'
            f"\tupdate-policy {{\n{grants}\t}};\n"
            "};\n"
        )

    def _zone_file(self) -> str:
        return (
            "$TTL 300\n"
            f"@ IN SOA ns.{self.zone} hostmaster.{self.zone} 1 60 60 3600 60\n"
            f"@ IN NS ns.{self.zone}\n"
            f"ns IN {'AAAA' if ':' in self.address else 'A'} {self.address}\n"
        )

    def start(self) -> BindServer:
        """Starts named; a restart keeps the zone with the updates it took (its journal)."""
        if not (self.directory / "named.conf").exists():
            (self.directory / "named.conf").write_text(self._config())
            (self.directory / "zone.db").write_text(self._zone_file())
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, NAMED, "-g", "-4" if ":" not in self.address
             else "-6", "-c", str(self.directory / "named.conf")],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"named exited {self.process.returncode}:\n{self.log()}")
            try:
                in_netns(self.namespace, lambda: dns.query.udp(query, self.address, timeout=0.3))
                return
            except Exception as error:  # not answering yet (timeout, refused)
                if time.monotonic() > deadline:
                    message = f"named did not answer in {timeout} s:\n{self.log()}"
                    raise AssertionError(message) from error
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to named (its pid, via the `ip netns exec` that execs it), then wait."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def records(self, name: str, rdtype: str = "A") -> list[str]:
        """The records of `rdtype` the server holds for `name` (an unsigned query)."""
        query = dns.message.make_query(name, rdtype)
        response = in_netns(self.namespace, lambda: dns.query.udp(query, self.address, timeout=2))
        return sorted(item.to_text() for rrset in response.answer for item in rrset)
