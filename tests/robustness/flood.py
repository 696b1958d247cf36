"""`python -m tests.robustness.flood TARGET COUNT RATE SOURCE...`: a burst of IKE_SA_INIT
requests (run inside the flooder's namespace).

COUNT requests go to TARGET:500 at RATE per second, round robin from the SOURCE addresses
(local addresses of the flooder's namespace: "spoofed" sources that still get the
answers).  Each request is a valid IKE_SA_INIT (built by the engine for an FQDN identity)
with a fresh initiator SPI.  Answers are read as they come and classified: COOKIE
requests, real IKE_SA_INIT responses (each one a half-open SA at the target), other
notifies.  A sample of the COOKIEs is sent back with the request, as a real initiator
would, to check that a returned cookie is honoured.  Prints one JSON line of figures.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from collections import Counter

from core.crypto.random import SeededRandomSource
from core.ike.constants import NotifyType, PayloadType
from core.ike.events import Address
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.message import decode_message, encode_message
from core.ike.v2.payloads import NotifyPayload
from tests.ike.v2.pair import policy

COOKIE_SAMPLE = 20  # cookies returned to the target
DRAIN_SECONDS = 1.0


def template(target: str, source: str) -> bytes:
    """A real IKE_SA_INIT request from an initiator that knows the target."""
    p = policy("rw", local=source, remote=target, local_id=_fqdn(), remote_id=None)
    endpoint = Ikev2Endpoint([p], SeededRandomSource(1))
    endpoint.connect("rw", Address(source, 500), Address(target, 500), 0.0)
    (datagram,) = endpoint.pop_datagrams()
    return datagram.data


def _fqdn() -> object:
    from core.ike.policy import Identity

    return Identity.parse("fqdn:rw.example")


def with_cookie(request: bytes, cookie: bytes) -> bytes:
    """The request again with N(COOKIE) first (RFC 7296 2.6)."""
    message = decode_message(request)
    notify = NotifyPayload(0, b"", NotifyType.COOKIE, cookie)
    message.payloads.insert(0, (PayloadType.NOTIFY, notify))
    return encode_message(message)


def classify(answer: bytes) -> tuple[str, bytes]:
    try:
        message = decode_message(answer)
    except Exception:  # anything unparsable is counted, not fatal
        return "unparsable", b""
    cookie = message.notify(NotifyType.COOKIE)
    if cookie is not None:
        return "cookie", cookie.data
    if message.get(PayloadType.SA) is not None:
        return "init_response", b""
    notifies = message.notifies()
    return (f"notify_{notifies[0].notify_type}" if notifies else "other"), b""


def main() -> int:
    target, count, rate, *sources = sys.argv[1:]
    total, per_second = int(count), float(rate)
    base = template(target, sources[0])
    sockets = []
    selector = selectors.DefaultSelector()
    for source in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((source, 500))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
        sockets.append(sock)
    kinds: Counter[str] = Counter()
    sent_by_spi: dict[bytes, tuple[socket.socket, bytes]] = {}
    first_cookie_after = -1  # real responses before the first COOKIE
    cookies_returned = 0
    started = time.monotonic()
    sent = 0

    def drain(deadline: float) -> None:
        nonlocal first_cookie_after, cookies_returned
        while True:
            remaining = deadline - time.monotonic()
            events = selector.select(max(0.0, remaining))
            if not events and remaining <= 0:
                return
            for key, _ in events:
                sock = key.data
                while True:
                    try:
                        answer = sock.recv(65535)
                    except BlockingIOError:
                        break
                    kind, cookie = classify(answer)
                    kinds[kind] += 1
                    if kind == "cookie" and first_cookie_after < 0:
                        first_cookie_after = kinds["init_response"]
                    spi = answer[:8]
                    if kind == "cookie" and cookies_returned < COOKIE_SAMPLE and spi in sent_by_spi:
                        owner, request = sent_by_spi.pop(spi)
                        owner.sendto(with_cookie(request, cookie), (target, 500))
                        cookies_returned += 1
            if remaining <= 0:
                return

    for index in range(total):
        due = started + index / per_second
        if due > time.monotonic():
            drain(due)
        spi = index.to_bytes(4, "big") + b"\xf1\x00\xd0\x01"
        request = spi + base[8:]
        sock = sockets[index % len(sockets)]
        try:
            sock.sendto(request, (target, 500))
        except BlockingIOError:
            kinds["send_blocked"] += 1
            continue
        if len(sent_by_spi) < 5000:
            sent_by_spi[spi] = (sock, request)
        sent += 1
    elapsed = time.monotonic() - started
    drain(time.monotonic() + DRAIN_SECONDS)
    figures = {
        "sent": sent,
        "seconds": round(elapsed, 2),
        "rate": round(sent / elapsed) if elapsed else 0,
        "sources": len(sources),
        "real_responses_before_first_cookie": first_cookie_after,
        "cookies_returned": cookies_returned,
        **kinds,
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
