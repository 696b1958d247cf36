"""`python -m tests.robustness.wire LEFT RIGHT REORDER_PERCENT MAX_DELAY`: a userspace
wire between two interfaces of the namespace it runs in (root, AF_PACKET).

Every frame received on one side is sent out of the other; REORDER_PERCENT % of them are
held back for a random time up to MAX_DELAY seconds, so frames behind them overtake them.
Prints "ready" once both sockets are bound, and its counters on SIGTERM.

Frames sent by a local stack over veth carry UDP checksums left for the "hardware" to
fill in (checksum offload); a frame copied through AF_PACKET never gets them filled, so
the wire sets IPv4 UDP checksums to zero ("none", RFC 768) on the way through.
"""

from __future__ import annotations

import heapq
import random
import selectors
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _open(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.setblocking(False)
    return sock


def _without_udp_checksum(frame: bytes) -> bytes:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return frame
    offset = 14 + (frame[14] & 0x0F) * 4 + 6
    if len(frame) < offset + 2:
        return frame
    return frame[:offset] + b"\x00\x00" + frame[offset + 2 :]


def main() -> int:
    left_name, right_name, reorder, max_delay = sys.argv[1:5]
    share, delay = int(reorder), float(max_delay)
    left, right = _open(left_name), _open(right_name)
    other = {left: right, right: left}
    selector = selectors.DefaultSelector()
    for sock in (left, right):
        selector.register(sock, selectors.EVENT_READ, sock)
    held: list[tuple[float, int, socket.socket, bytes]] = []
    counters = {"forwarded": 0, "held": 0}
    rng = random.Random(5)
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    sequence = 0
    while running:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.2
        for key, _events in selector.select(timeout):
            sock = key.data
            while True:
                try:
                    frame, address = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue  # our own transmissions seen on the way out
                frame = _without_udp_checksum(frame)
                if rng.randrange(100) < share:
                    sequence += 1
                    heapq.heappush(
                        held,
                        (time.monotonic() + rng.uniform(0, delay), sequence, other[sock], frame),
                    )
                    counters["held"] += 1
                    continue
                other[sock].send(frame)
                counters["forwarded"] += 1
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, out, frame = heapq.heappop(held)
            out.send(frame)
            counters["forwarded"] += 1
    print(" ".join(f"{k}={v}" for k, v in counters.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
