"""A wire that can make two IKE requests cross (root only; runs inside a namespace).

Two requests "at the same moment" (an RFC 7296 2.8.1 collision) only cross when each
reaches the other side after that side sent its own.  Triggering both through vici and
the control socket leaves that to scheduling luck (here about one time in three), and
dropping them to wait for retransmissions does not work either: one side's retransmission
arrives first and is answered before the other's.  This kernel has no NFQUEUE target for
nftables, so the lab puts a namespace between the two hosts whose only link between its
two veth ends is this process: it copies Ethernet frames from one end to the other
(AF_PACKET, so any kernel with veth will do) and, when armed, holds IKE messages
(UDP 500, or 4500 with the non-ESP marker of RFC 3948 2.2) until it holds one from each
side, then sends them all at once.  Everything else passes straight through.

UDP checksums are zeroed on the way (RFC 768 allows 0 for IPv4): veth leaves them to an
offload that a copied frame no longer has.

Every IKE message it sees is traced on stderr: unix time, direction (`>` towards the
right end), `describe()`, frame length, held or passed.

Driven over stdin/stdout, one line each:
    arm SECONDS   -> "armed"; later "released N MESSAGES both" (or "... timeout"), the
                     messages as `>` (towards the right end) or `<` and `describe()`
    swap SECONDS SKIP -> "armed"; after SKIP IKE messages towards the right end passed,
                     the next one waits until the one after it passed (or SECONDS):
                     "swapped FIRST,SECOND|timeout"
    quit          -> the process exits
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IKE_PORTS = (500, 4500)
NON_ESP_MARKER = b"\0\0\0\0"
REPO = Path(__file__).resolve().parents[2]


def is_ike(frame: bytes) -> bool:
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
        return False
    header = (frame[14] & 0x0F) * 4
    udp = 14 + header
    if len(frame) < udp + 8:
        return False
    sport, dport = struct.unpack_from("!HH", frame, udp)
    if 500 in (sport, dport):
        return True
    return 4500 in (sport, dport) and frame[udp + 8 : udp + 12] == NON_ESP_MARKER


EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}


def describe(frame: bytes) -> str:
    """`EXCHANGE request|response #ID` of an IKE message (its header is in clear)."""
    udp = 14 + (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", frame, udp)
    ike = udp + 8 + (4 if 4500 in (sport, dport) else 0)
    if len(frame) < ike + 28:
        return "short"
    exchange, flags, message_id = struct.unpack_from("!BBI", frame, ike + 18)
    kind = "response" if flags & 0x20 else "request"
    return f"{EXCHANGES.get(exchange, exchange)}-{kind}-{message_id}"


def without_udp_checksum(frame: bytes) -> bytes:
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
        return frame
    checksum = 14 + (frame[14] & 0x0F) * 4 + 6
    if len(frame) < checksum + 2:
        return frame
    return frame[:checksum] + b"\0\0" + frame[checksum + 2 :]


@dataclass
class Swap:
    """The next IKE message towards the right end is held until the one after it passed."""

    deadline: float
    skip: int = 0  # IKE messages towards the right end that pass first
    held: bytes | None = None


@dataclass
class Hold:
    deadline: float
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (out side, frame)

    def complete(self) -> bool:
        return {side for side, _ in self.frames} == {0, 1}


def run_wire(left: str, right: str) -> int:
    ends = []
    for name in (left, right):
        end = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        end.bind((name, 0))
        ends.append(end)
    print("ready", flush=True)
    hold: Hold | None = None
    swap: Swap | None = None
    while True:
        readable, _, _ = select.select([*ends, sys.stdin], [], [], 0.02)
        for index, end in enumerate(ends):
            if end not in readable:
                continue
            frame, address = end.recvfrom(65536)
            if address[2] == PACKET_OUTGOING:  # our own copy going out
                continue
            frame = without_udp_checksum(frame)
            out = 1 - index
            ike = is_ike(frame)
            if ike:  # the trace: one line per IKE message on stderr
                state = "held" if hold is not None else "passed"
                arrow = ">" if out else "<"
                print(f"{time.time():.6f} {arrow}{describe(frame)} {len(frame)} {state}",
                      file=sys.stderr, flush=True)  # fmt: skip
            if hold is not None and ike:
                hold.frames.append((out, frame))
            elif swap is not None and ike and out == 1 and swap.skip:
                swap.skip -= 1
                ends[out].send(frame)
            elif swap is not None and ike and out == 1:
                if swap.held is None:
                    swap.held = frame
                    continue
                ends[out].send(frame)
                ends[out].send(swap.held)
                print(f"swapped {describe(swap.held)},{describe(frame)}", flush=True)
                swap = None
            else:
                ends[out].send(frame)
        if hold is not None and (hold.complete() or time.monotonic() > hold.deadline):
            for out, frame in hold.frames:
                ends[out].send(frame)
            outcome = "both" if hold.complete() else "timeout"
            held = ",".join(f"{'>' if out else '<'}{describe(f)}" for out, f in hold.frames)
            print(f"released {len(hold.frames)} {held} {outcome}", flush=True)
            hold = None
        if swap is not None and time.monotonic() > swap.deadline:
            if swap.held is not None:
                ends[1].send(swap.held)
            print(f"swapped {describe(swap.held) if swap.held else 'nothing'},timeout",
                  flush=True)  # fmt: skip
            swap = None
        if sys.stdin in readable:
            command = sys.stdin.readline().split()
            if not command or command[0] == "quit":
                return 0
            if command[0] == "arm":
                hold = Hold(time.monotonic() + float(command[1]))
                print("armed", flush=True)
            elif command[0] == "swap":
                swap = Swap(time.monotonic() + float(command[1]), int(command[2]))
                print("armed", flush=True)


@dataclass
class Wire:
    """The running wire process (see the module docstring)."""

    process: subprocess.Popen[str]
    trace: Path

    def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        return self.process.stdout.readline().strip() if readable else ""

    def _say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    @contextlib.contextmanager
    def crossing(self, timeout: float = 5.0) -> Iterator[list[str]]:
        """Holds the IKE messages sent in the block (and up to `timeout` seconds after it)
        until both sides sent one; asserts that they did and were released together.
        The list it yields receives the released messages (see `describe`)."""
        self._say(f"arm {timeout}")
        assert self._line(5) == "armed", "the wire did not arm"
        released: list[str] = []
        yield released
        line = self._line(timeout + 5)
        assert line.startswith("released") and line.endswith("both"), (
            f"the IKE messages did not cross: {line or 'no answer from the wire'}"
        )
        released.extend(line.split()[2].split(","))

    @contextlib.contextmanager
    def swapping(self, skip: int = 0, timeout: float = 5.0) -> Iterator[list[str]]:
        """After `skip` IKE messages towards the right end (charon), the next two arrive
        in reverse order; the list it yields receives "FIRST,SECOND" as they were sent
        (or "FIRST,timeout")."""
        self._say(f"swap {timeout} {skip}")
        assert self._line(5) == "armed", "the wire did not arm"
        swapped: list[str] = []
        yield swapped
        line = self._line(timeout + 5)
        assert line.startswith("swapped"), f"the wire did not swap: {line or 'no answer'}"
        swapped.extend(line.split()[1].split(","))

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._say("quit")
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_wire(namespace: str, left: str, right: str, trace: Path) -> Wire:
    """Starts the wire between two interfaces of `namespace` (`ip netns` name); the IKE
    messages it sees are traced to the file `trace`."""
    with trace.open("a") as trace_file:
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.interop.wire",
             left, right],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=trace_file,
            text=True,
        )  # fmt: skip
    wire = Wire(process, trace)
    if wire._line(10) != "ready":
        wire.close()
        raise AssertionError("the wire did not start")
    return wire


if __name__ == "__main__":
    sys.exit(run_wire(sys.argv[1], sys.argv[2]))
