"""Current traffic rates from successive counter snapshots, and a short history per peer."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tui.model import Snapshot, Traffic

HISTORY = 120  # samples kept per peer for sparklines (two minutes at one poll a second)


@dataclass(frozen=True)
class Rates:
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    packets_in: float = 0.0
    packets_out: float = 0.0


class _Peer:
    def __init__(self, taken_at: float, traffic: Traffic) -> None:
        self.taken_at = taken_at
        self.traffic = traffic
        self.rates: Rates | None = None
        self.history_in: deque[float] = deque(maxlen=HISTORY)
        self.history_out: deque[float] = deque(maxlen=HISTORY)


class TrafficMeter:
    """Feed it every snapshot; it keeps each peer's rate over the last interval."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}

    def update(self, snapshot: Snapshot) -> None:
        names = set()
        for tunnel in snapshot.tunnels:
            names.add(tunnel.name)
            peer = self._peers.get(tunnel.name)
            if peer is None:
                self._peers[tunnel.name] = _Peer(snapshot.taken_at, tunnel.traffic)
                continue
            elapsed = snapshot.taken_at - peer.taken_at
            if elapsed <= 0:
                continue
            peer.rates = _rates(peer.traffic, tunnel.traffic, elapsed)
            peer.history_in.append(peer.rates.bytes_in)
            peer.history_out.append(peer.rates.bytes_out)
            peer.taken_at = snapshot.taken_at
            peer.traffic = tunnel.traffic
        for gone in set(self._peers) - names:
            del self._peers[gone]

    def rates(self, name: str) -> Rates | None:
        peer = self._peers.get(name)
        return peer.rates if peer else None

    def history(self, name: str) -> tuple[list[float], list[float]]:
        peer = self._peers.get(name)
        if peer is None:
            return [], []
        return list(peer.history_in), list(peer.history_out)


def _per_second(old: int, new: int, elapsed: float) -> float:
    # A counter that went backwards was reset (interface re-created): no rate this time.
    return (new - old) / elapsed if new >= old else 0.0


def _rates(old: Traffic, new: Traffic, elapsed: float) -> Rates:
    return Rates(
        bytes_in=_per_second(old.bytes_in, new.bytes_in, elapsed),
        bytes_out=_per_second(old.bytes_out, new.bytes_out, elapsed),
        packets_in=_per_second(old.packets_in, new.packets_in, elapsed),
        packets_out=_per_second(old.packets_out, new.packets_out, elapsed),
    )
