"""Two IKEv1 endpoints wired together in memory, with a fixed clock and fixed randomness.

`Pair` moves datagrams between them, optionally through a NAT in front of A (which maps
A's ports p to p + 1000 on NAT_ADDR), drops or duplicates what a test asks for, and
advances time from timer to timer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from core.crypto.proposals import parse_esp_proposal, parse_ike_proposal
from core.crypto.random import SeededRandomSource
from core.ike.constants import NAT_KEEPALIVE, NON_ESP_MARKER
from core.ike.events import Address, IkeEvent
from core.ike.policy import Identity, PeerPolicy
from core.ike.v1.endpoint import Ikev1Endpoint
from core.ike.v1.sa import Datagram

A_ADDR = "198.51.100.1"
B_ADDR = "198.51.100.2"
NAT_ADDR = "203.0.113.1"


def policy(
    name: str = "peer",
    *,
    local: str | None = A_ADDR,
    remote: str | None = B_ADDR,
    local_id: str | None = None,
    remote_id: str | None = None,
    psk: bytes = b"a secret of some length",
    ike: str = "aes256-sha256-x25519",
    esp: str = "aes256-sha256",
    **changes: Any,
) -> PeerPolicy:
    remote_text = remote_id or remote
    base = PeerPolicy(
        name=name,
        ike_version=1,
        local_id=Identity.parse(local_id or local or A_ADDR),
        remote_id=Identity.parse(remote_text) if remote_text else None,
        psk=psk,
        ike_proposals=tuple(parse_ike_proposal(p) for p in ike.split(",")),
        esp_proposals=tuple(parse_esp_proposal(p) for p in esp.split(",")),
        local_address=local,
        remote_address=remote,
    )
    return replace(base, **changes)


def mirror(p: PeerPolicy, name: str = "peer", **changes: Any) -> PeerPolicy:
    """The other side's policy for `p`."""
    values: dict[str, Any] = {
        "name": name,
        "local_id": p.remote_id or Identity.parse(B_ADDR),
        "remote_id": p.local_id,
        "local_address": p.remote_address or B_ADDR,
        "remote_address": p.local_address,
    }
    values.update(changes)
    return replace(p, **values)


@dataclass
class Side:
    name: str
    endpoint: Ikev1Endpoint
    address: str
    events: list[IkeEvent] = field(default_factory=list)
    sent: list[Datagram] = field(default_factory=list)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class Pair:
    def __init__(self, policy_a: PeerPolicy, policy_b: PeerPolicy, *, seed: int = 7,
                 nat_a: bool = False) -> None:
        self.now = 1000.0
        self.a = Side("a", Ikev1Endpoint([policy_a], SeededRandomSource(seed)), A_ADDR)
        self.b = Side("b", Ikev1Endpoint([policy_b], SeededRandomSource(seed + 1)), B_ADDR)
        self.nat_a = nat_a
        self.drop: Callable[[Side, bytes], bool] = lambda side, data: False
        self.tamper: Callable[[Side, bytes], bytes] | None = None
        self.duplicate = False
        self.delivered = 0
        self.keepalives = 0
        self.wire: list[tuple[str, Datagram]] = []  # every datagram sent, in order

    def _translate(self, sender: Side, datagram: Datagram) -> tuple[Address, Address]:
        src, dst = datagram.local, datagram.remote
        if self.nat_a and sender is self.a:
            src = Address(NAT_ADDR, src.port + 1000)
        if self.nat_a and sender is self.b and dst.host == NAT_ADDR:
            dst = Address(A_ADDR, dst.port - 1000)
        return src, dst

    def deliver(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            moved = False
            for sender, receiver in ((self.a, self.b), (self.b, self.a)):
                sender.events += sender.endpoint.pop_events()
                for datagram in sender.endpoint.pop_datagrams():
                    sender.sent.append(datagram)
                    self.wire.append((sender.name, datagram))
                    moved = True
                    if self.drop(sender, datagram.data):
                        continue
                    src, dst = self._translate(sender, datagram)
                    data = datagram.data
                    if data == NAT_KEEPALIVE:
                        self.keepalives += 1
                        continue
                    if dst.port == 4500:
                        assert data.startswith(NON_ESP_MARKER), "IKE on 4500 needs the marker"
                        data = data[4:]
                    if self.tamper is not None:
                        data = self.tamper(sender, data)
                    for _copy in range(2 if self.duplicate else 1):
                        self.delivered += 1
                        receiver.endpoint.receive(data, dst, src, self.now)
            if not moved:
                break
        self.a.events += self.a.endpoint.pop_events()
        self.b.events += self.b.endpoint.pop_events()

    def advance(self, seconds: float) -> None:
        """Run both endpoints' timers until `seconds` have passed."""
        end = self.now + seconds
        while True:
            deadlines = [t for t in (self.a.endpoint.next_timer(), self.b.endpoint.next_timer())
                         if t is not None]
            upcoming = min(deadlines) if deadlines else None
            if upcoming is None or upcoming > end:
                break
            self.now = max(self.now, upcoming)
            self.a.endpoint.handle_timer(self.now)
            self.b.endpoint.handle_timer(self.now)
            self.deliver()
        self.now = end

    def connect(self, local_port: int = 500) -> None:
        self.a.endpoint.connect("peer", Address(A_ADDR, local_port), Address(B_ADDR, 500),
                                self.now)
        self.deliver()
