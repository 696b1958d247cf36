"""Capture and replay frames on an interface (root, AF_PACKET; run inside a namespace).

    python -m tests.robustness.replay_tool capture IFACE   # until SIGTERM; hex lines out
    python -m tests.robustness.replay_tool send IFACE N    # hex frames on stdin, each N times

`capture` keeps the frames the namespace sends out of IFACE that carry ESP (IP protocol
50) or IKE (UDP port 500 or 4500), one hex line each, printed when it is stopped.  Their
UDP checksum is set to zero ("none"): frames seen on the way out of a veth carry a
checksum left for offloading, which the receiver would refuse when they are replayed.
"""

from __future__ import annotations

import signal
import socket
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def interesting(frame: bytes) -> bool:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return False
    protocol = frame[23]
    if protocol == 50:
        return True
    offset = 14 + (frame[14] & 0x0F) * 4
    if protocol != 17 or len(frame) < offset + 4:
        return False
    ports = {
        int.from_bytes(frame[offset : offset + 2], "big"),
        int.from_bytes(frame[offset + 2 : offset + 4], "big"),
    }
    return bool(ports & {500, 4500})


def _without_udp_checksum(frame: bytes) -> bytes:
    if frame[23] != 17:
        return frame
    offset = 14 + (frame[14] & 0x0F) * 4 + 6
    return frame[:offset] + b"\x00\x00" + frame[offset + 2 :]


def capture(interface: str) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.settimeout(0.2)
    frames: list[bytes] = []
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while running:
        try:
            frame, address = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if address[2] == PACKET_OUTGOING and interesting(frame):
            frames.append(_without_udp_checksum(frame))
    for frame in frames:
        print(frame.hex())


def send(interface: str, copies: int) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    for line in sys.stdin:
        frame = bytes.fromhex(line.strip())
        for _ in range(copies):
            sock.send(frame)


def main() -> int:
    command, interface, *rest = sys.argv[1:]
    if command == "capture":
        capture(interface)
    else:
        send(interface, int(rest[0]) if rest else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
