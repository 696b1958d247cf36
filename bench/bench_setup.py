"""Cold start of 64 peers between two namespaces until every tunnel passes a ping (root).

    sudo python bench/bench_setup.py [--peers 64] [--runs 1] [--no-strongswan]
                                     [--both-initiate] [--dataplane userspace]
                                     [--no-bytecode-cache] [--profile DIR]

Same lab, pinger and measurement as bench/bench_strongswan_setup.py (its `SetupRunner`
protocol): peer i has its own outer addresses and inner networks; A initiates every peer,
B only responds (`passive = true`, as strongSwan's `start_action = none`).  When
strongSwan's charon is installed its run goes first and the ratio column is
rbipsec / strongSwan (goal: <= 1.0), RSS per daemon with every tunnel up (goal: <= 64 MiB).

`--both-initiate` makes B active too (both sides initiate every peer at once: the
collision case).

The same start line for both runners: the clock starts before the responder B is
launched; B counts as ready when its start has finished (strongSwan: its connections are
loaded; rbipsec: `status` says `started`, i.e. interfaces queued and the IKE ports open --
the control socket answers earlier); then A is launched and initiates.  Both runners poll
for readiness every 5 ms.  The daemons run from bytecode compiled before the clock starts
(see `daemon_environment`); `--no-bytecode-cache` shows the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_strongswan_setup import (  # noqa: E402  (path fix first)
    POLL_INTERVAL,
    PeerPlan,
    SetupLab,
    SetupResult,
    StrongswanSetup,
    measure_cold_start,
    print_results,
)

IKE_PROPOSAL = "aes256gcm16-prfsha256-x25519"
ESP_PROPOSAL = "aes256gcm16"


def rbipsec_config(
    peers: Sequence[PeerPlan], side: str, socket_path: Path, *, passive: bool, dataplane: str
) -> str:
    """The config of side "a" (initiator) or "b"; peer i is interface ipsec{i}."""
    lines = [
        "[global]",
        "enabled = true",
        f'dataplane = "{dataplane}"',
        f'socket = "{socket_path}"',
        'log_level = "info"',
    ]
    for peer in peers:
        local, remote = (peer.outer_a, peer.outer_b)
        if side == "b":
            local, remote = remote, local
        inner = peer.inner_a if side == "a" else peer.inner_b
        route = peer.net_b if side == "a" else peer.net_a
        lines += [
            "",
            "[[peer]]",
            f'name = "peer{peer.index}"',
            f'interface = "ipsec{peer.index}"',
            f'local_address = "{local}"',
            f'remote_address = "{remote}"',
            f'psk = "{peer.psk}"',
            f'ike_proposals = ["{IKE_PROPOSAL}"]',
            f'esp_proposals = ["{ESP_PROPOSAL}"]',
            f'address = "{inner}/24"',
            f'routes = ["{route}"]',
            f"passive = {'true' if passive else 'false'}",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class RbipsecSetup:
    """rbipsec <-> rbipsec: one daemon per namespace, B started first."""

    name: str = "rbipsec<->rbipsec"
    both_initiate: bool = False
    dataplane: str = "userspace"
    profile_dir: Path | None = None  # run each daemon under cProfile, stats to <dir>/<side>.prof
    bytecode_cache: bool = True  # False: the daemons compile their modules at each start

    def _profiler(self, side: str) -> list[str]:
        if self.profile_dir is None:
            return []
        return ["-m", "cProfile", "-o", str(self.profile_dir / f"{side}.prof")]

    @contextlib.contextmanager
    def running(self, lab: SetupLab) -> Iterator[list[int]]:
        with tempfile.TemporaryDirectory(prefix="rbipsec-setup-") as workdir:
            directory = Path(workdir)
            processes: list[subprocess.Popen[bytes]] = []
            try:
                for side, namespace in (("b", lab.ns_b), ("a", lab.ns_a)):
                    passive = side == "b" and not self.both_initiate
                    config = directory / f"{side}.toml"
                    config.write_text(rbipsec_config(
                        lab.peers, side, directory / f"{side}.sock", passive=passive,
                        dataplane=self.dataplane))  # fmt: skip
                    log = (directory / f"{side}.log").open("wb")
                    processes.append(subprocess.Popen(
                        namespace.command(sys.executable, *self._profiler(side), "-m",
                                          "core.cli", "daemon", "-c", str(config)),
                        cwd=REPO, stdout=log, stderr=log,
                        env=daemon_environment() if self.bytecode_cache else source_environment(),
                    ))  # fmt: skip
                    log.close()
                    if side == "b":  # like the strongSwan runner: the responder is ready
                        _wait_until_started(directory / "b.sock", processes[0])  # first
                # `ip netns exec` execs the program: these are the daemons' own pids
                yield [processes[1].pid, processes[0].pid]
            finally:
                for process in processes:
                    process.terminate()
                for process in processes:
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                for side in ("a", "b"):
                    log_path = directory / f"{side}.log"
                    text = log_path.read_text(errors="replace") if log_path.exists() else ""
                    keep = os.environ.get("RBIPSEC_BENCH_LOGS")
                    if keep:
                        shutil.copy(log_path, Path(keep) / f"{side}.log")
                    if "ERROR" in text or "Traceback" in text:
                        print(f"--- rbipsec {side} log (errors) ---\n{text[-3000:]}",
                              file=sys.stderr)  # fmt: skip


def _wait_until_started(path: Path, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Until the daemon has finished starting (interfaces set up, IKE ports open), as the
    strongSwan runner waits until charon has loaded its connections: the control socket
    answers earlier than that."""
    from core.daemon.control.client import ControlClient, DaemonNotRunning

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the responder daemon exited with {process.returncode}")
        try:
            with ControlClient(str(path), timeout=5) as client:
                if client.request("status")["daemon"]["started"]:
                    return
        except DaemonNotRunning:
            pass
        time.sleep(POLL_INTERVAL)
    raise RuntimeError("the responder daemon did not come up")


BYTECODE_CACHE = Path(tempfile.gettempdir()) / "rbipsec-bench-pycache"


def daemon_environment() -> dict[str, str]:
    """The daemons run from bytecode compiled beforehand, as from an installed package
    (pip compiles at install): this tree is run from source, and with
    PYTHONDONTWRITEBYTECODE set in the environment each start would compile ~100 modules
    (~0.1 s) that no installed daemon compiles.  The cache lives outside the tree."""
    environment = dict(os.environ, PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=str(BYTECODE_CACHE))
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def source_environment() -> dict[str, str]:
    """The environment as it is (here: PYTHONDONTWRITEBYTECODE, so no bytecode is cached)."""
    return dict(os.environ, PYTHONPATH=str(REPO))


def compile_bytecode() -> None:
    """Fill the cache: with a prefix, Python keeps the standard library's and the
    packages' bytecode there too, so a daemon's imports are made once beforehand."""
    imports = ("import asyncio, concurrent.futures, compileall, core.cli, core.daemon.main, "
               "core.dataplane.userspace.backend, core.daemon.control.client; "
               f"compileall.compile_dir({str(REPO / 'core')!r}, quiet=1)")  # fmt: skip
    subprocess.run([sys.executable, "-c", imports], cwd=REPO, env=daemon_environment(),
                   check=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--no-strongswan", action="store_true")
    parser.add_argument("--both-initiate", action="store_true")
    parser.add_argument("--dataplane", choices=["userspace", "kernel", "auto"],
                        default="userspace")  # fmt: skip
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="daemons compile their modules at start")  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="daemons under cProfile: DIR/a.prof, DIR/b.prof")  # fmt: skip
    args = parser.parse_args()
    runners: list[object] = []
    if (
        not args.no_strongswan
        and shutil.which("swanctl")
        and Path("/usr/lib/ipsec/charon").exists()
    ):
        runners.append(StrongswanSetup())
    runners.append(RbipsecSetup(both_initiate=args.both_initiate, dataplane=args.dataplane,
                                profile_dir=args.profile,
                                bytecode_cache=not args.no_bytecode_cache))  # fmt: skip
    compile_bytecode()
    print("load average: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    results: list[SetupResult] = []
    for _ in range(args.runs):
        for runner in runners:
            results.append(measure_cold_start(runner, args.peers, args.timeout))  # type: ignore[arg-type]
    print_results(results, len(runners))


if __name__ == "__main__":
    main()
