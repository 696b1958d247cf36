"""Two IKEv2 endpoints wired together in memory, with a fixed clock and fixed randomness.

`Pair` moves datagrams between the two, optionally through a NAT, dropping or
duplicating what a test asks for, and advances time from timer to timer.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from core.crypto.proposals import parse_esp_proposal, parse_ike_proposal
from core.crypto.random import SeededRandomSource
from core.ike.constants import NAT_KEEPALIVE, NON_ESP_MARKER
from core.ike.events import Address, IkeEvent
from core.ike.policy import Identity, PeerPolicy
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.sa import Datagram

A_ADDR = "198.51.100.1"
B_ADDR = "198.51.100.2"
NAT_ADDR = "203.0.113.1"


def policy(
    name: str = "peer",
    *,
    local: str = A_ADDR,
    remote: str | None = B_ADDR,
    psk: bytes = b"a secret of some length",
    ike: str = "aes256gcm16-prfsha256-x25519",
    esp: str = "aes256gcm16",
    **changes: object,
) -> PeerPolicy:
    base = PeerPolicy(
        name=name,
        ike_version=2,
        local_id=Identity.parse(local),
        remote_id=Identity.parse(remote) if remote else None,
        psk=psk,
        ike_proposals=tuple(parse_ike_proposal(p) for p in ike.split(",")),
        esp_proposals=tuple(parse_esp_proposal(p) for p in esp.split(",")),
        local_address=local,
        remote_address=remote,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def mirror(p: PeerPolicy, name: str = "peer", **changes: object) -> PeerPolicy:
    """The other side's policy for `p`."""
    values: dict[str, object] = {
        "name": name,
        "local_id": p.remote_id or Identity.parse(B_ADDR),
        "remote_id": p.local_id,
        "local_address": p.remote_address or B_ADDR,
        "remote_address": p.local_address,
    }
    values.update(changes)
    return replace(p, **values)  # type: ignore[arg-type]


@dataclass
class Side:
    name: str
    endpoint: Ikev2Endpoint
    address: str
    events: list[IkeEvent] = field(default_factory=list)
    sent: list[Datagram] = field(default_factory=list)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


class Pair:
    def __init__(
        self,
        policy_a: PeerPolicy,
        policy_b: PeerPolicy,
        *,
        seed: int = 7,
        nat_a: bool = False,
        **endpoint_args: int,
    ) -> None:
        self.now = 1000.0
        self.a = Side("a", Ikev2Endpoint([policy_a], SeededRandomSource(seed)), A_ADDR)
        self.b = Side(
            "b", Ikev2Endpoint([policy_b], SeededRandomSource(seed + 1), **endpoint_args), B_ADDR
        )
        self.nat_a = nat_a  # A sits behind a NAT that maps it to NAT_ADDR:port+1000
        self.drop: Callable[[Side, bytes], bool] = lambda side, data: False
        self.duplicate = False
        self.delivered = 0

    # -- plumbing -------------------------------------------------------------------
    def _translate(self, sender: Side, datagram: Datagram) -> tuple[Address, Address]:
        src, dst = datagram.local, datagram.remote
        if self.nat_a and sender is self.a:
            src = Address(NAT_ADDR, src.port + 1000)
        if self.nat_a and sender is self.b:
            dst = Address(A_ADDR, dst.port - 1000) if dst.host == NAT_ADDR else dst
        return src, dst

    def deliver(self, rounds: int = 100) -> None:
        for _ in range(rounds):
            moved = False
            for sender, receiver in ((self.a, self.b), (self.b, self.a)):
                sender.events += sender.endpoint.pop_events()
                for datagram in sender.endpoint.pop_datagrams():
                    sender.sent.append(datagram)
                    moved = True
                    if self.drop(sender, datagram.data):
                        continue
                    src, dst = self._translate(sender, datagram)
                    data = datagram.data
                    if data == NAT_KEEPALIVE:
                        continue
                    if dst.port == 4500:
                        assert data.startswith(NON_ESP_MARKER), "IKE on 4500 needs the marker"
                        data = data[4:]
                    for _copy in range(2 if self.duplicate else 1):
                        self.delivered += 1
                        receiver.endpoint.receive(data, dst, src, self.now)
            if not moved:
                break
        self.a.events += self.a.endpoint.pop_events()
        self.b.events += self.b.endpoint.pop_events()

    def deliver_shuffled(self, rng: random.Random, steps: int = 500) -> None:
        """Deliver pending datagrams one at a time in a random order (reordering)."""
        pool: list[tuple[Side, Side, Datagram]] = []
        for _ in range(steps):
            for sender, receiver in ((self.a, self.b), (self.b, self.a)):
                sender.events += sender.endpoint.pop_events()
                for datagram in sender.endpoint.pop_datagrams():
                    sender.sent.append(datagram)
                    pool.append((sender, receiver, datagram))
            if not pool:
                break
            sender, receiver, datagram = pool.pop(rng.randrange(len(pool)))
            src, dst = self._translate(sender, datagram)
            data = datagram.data
            if data == NAT_KEEPALIVE or self.drop(sender, data):
                continue
            if dst.port == 4500:
                data = data[4:]
            receiver.endpoint.receive(data, dst, src, self.now)
        self.deliver()

    def advance(self, seconds: float) -> None:
        """Run both endpoints' timers until `seconds` have passed."""
        end = self.now + seconds
        while True:
            deadlines = [
                t
                for t in (self.a.endpoint.next_timer(), self.b.endpoint.next_timer())
                if t is not None
            ]
            upcoming = min(deadlines) if deadlines else None
            if upcoming is None or upcoming > end:
                break
            self.now = max(self.now, upcoming)
            self.a.endpoint.handle_timer(self.now)
            self.b.endpoint.handle_timer(self.now)
            self.deliver()
        self.now = end

    def connect(self) -> None:
        self.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), self.now)
        self.deliver()
