"""What the IKEv1 and the IKEv2 endpoint do alike (sans-IO).

An endpoint holds every IKE SA of this node.  Per configured peer it keeps the policy, the
SA that currently carries the peer, whether the operator wants it up and where, and the
re-establish backoff; it finds the peer for a request from an address, drives the SAs'
timers, and counts half-open responder SAs.  How SAs are created, negotiated, replaced
and closed differs between the versions and stays in `core.ike.v1.endpoint` and
`core.ike.v2.endpoint`, which fill in `_initiate`, `_collect` and `_close`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from core.crypto.random import RandomSource
from core.ike.datagram import Datagram, Outputs
from core.ike.events import Address, DownReason, IkeEvent, LogMessage
from core.ike.policy import PeerPolicy

MAX_HALF_OPEN = 512  # beyond this many half-open responder SAs, new requests are dropped
SPI_SIZE = 8  # IKEv2 SPIs and ISAKMP cookies alike
# Why an SA went down that makes us try again (after a backoff) while the peer is wanted.
RETRY_REASONS = frozenset({
    DownReason.TIMEOUT, DownReason.PEER_DEAD, DownReason.DELETED_BY_PEER,
    DownReason.NO_PROPOSAL, DownReason.AUTH_FAILED, DownReason.PROTOCOL_ERROR,
    DownReason.EXPIRED,
})


class EndpointSa(Protocol):
    """What the shared bookkeeping needs of an IKE SA (`IkeSa`, `IsakmpSa`)."""

    @property
    def policy(self) -> PeerPolicy: ...

    @property
    def gone(self) -> bool: ...

    def next_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def note_inbound_traffic(self, now: float) -> None: ...

    def destroy(self, reason: DownReason, now: float, *, detail: str = "",
                keep_children: bool = False) -> None: ...


SaT = TypeVar("SaT", bound=EndpointSa)


@dataclass
class PeerState(Generic[SaT]):
    """One configured peer as the endpoint sees it."""

    policy: PeerPolicy
    current: SaT | None = None  # the SA that carries the peer now
    wanted_up: bool = False  # connect()ed and not disconnect()ed: re-establish when down
    local: Address | None = None
    remote: Address | None = None
    failures: int = 0  # re-establish attempts since the peer was last up
    retry_at: float | None = None
    sas: list[SaT] = field(default_factory=list)  # every SA of the peer, current or not


class PeerEndpoint(Outputs, Generic[SaT]):
    def __init__(self, policies: Iterable[PeerPolicy], rng: RandomSource, *,
                 max_half_open: int = MAX_HALF_OPEN) -> None:
        self.rng = rng
        self.max_half_open = max_half_open
        self._peers: dict[str, PeerState[SaT]] = {p.name: PeerState(p) for p in policies}
        self._sas: dict[bytes, SaT] = {}  # our SPI (cookie) -> SA
        self._half_open: dict[tuple[bytes, Address], SaT] = {}  # responder SAs negotiating
        self.datagrams: list[Datagram] = []
        self.events: list[IkeEvent] = []

    # -- what each version does its own way ---------------------------------------------
    def _initiate(self, peer: PeerState[SaT], now: float) -> None:
        """Start a new SA with the peer, as initiator."""
        raise NotImplementedError

    def _collect(self, sa: SaT, now: float) -> None:
        """Take an SA's outputs and apply what concerns the whole endpoint."""
        raise NotImplementedError

    def _close(self, sa: SaT, now: float) -> None:
        """Close one of a disconnected peer's SAs (DELETE where there is one to send)."""
        raise NotImplementedError

    # -- peers ----------------------------------------------------------------------------
    def add_peer(self, policy: PeerPolicy) -> None:
        self._peers[policy.name] = PeerState(policy)

    def remove_peer(self, name: str, now: float) -> None:
        self.disconnect(name, now)
        peer = self._peers.pop(name, None)
        if peer is not None:
            for sa in list(peer.sas):
                # Anything still negotiating or deleting goes without further ado.
                if not sa.gone:
                    sa.destroy(DownReason.DELETED_BY_US, now)
                    self._collect(sa, now)

    def peer_names(self) -> list[str]:
        return list(self._peers)

    def current_sa(self, name: str) -> SaT | None:
        peer = self._peers.get(name)
        return peer.current if peer else None

    def connect(self, name: str, local: Address, remote: Address, now: float) -> None:
        """Bring the peer up (initiate) and keep it up: re-establish when it goes down."""
        peer = self._peers[name]
        peer.wanted_up = True
        peer.local, peer.remote = local, remote
        peer.failures = 0
        peer.retry_at = None
        if peer.policy.passive:
            return  # a passive peer waits for the other side
        if peer.current is not None and not peer.current.gone:
            return
        self._initiate(peer, now)

    def disconnect(self, name: str, now: float) -> None:
        """Close the peer's SAs and stop re-establishing them."""
        peer = self._peers.get(name)
        if peer is None:
            return
        peer.wanted_up = False
        peer.retry_at = None
        for sa in list(peer.sas):
            if not sa.gone:
                self._close(sa, now)

    def note_inbound_traffic(self, name: str, now: float) -> None:
        sa = self.current_sa(name)
        if sa is not None:
            sa.note_inbound_traffic(now)

    def _candidates(self, local: Address, remote: Address) -> tuple[PeerPolicy, ...]:
        """The peers a request from `remote` to `local` may be from: those configured with
        that address, else those with none (dynamic peers)."""
        fixed = [p.policy for p in self._peers.values()
                 if p.policy.remote_address == remote.host
                 and p.policy.local_address in (None, local.host)]
        if fixed:
            return tuple(fixed)
        return tuple(p.policy for p in self._peers.values()
                     if p.policy.remote_address is None
                     and p.policy.local_address in (None, local.host))

    def _new_spi(self) -> bytes:
        """A fresh SPI (ISAKMP: cookie) of ours: never zero, never one in use."""
        while True:
            spi = self.rng.bytes(SPI_SIZE)
            if spi != bytes(SPI_SIZE) and spi not in self._sas:
                return spi

    # -- time -----------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        deadlines = [t for sa in self._sas.values() if (t := sa.next_timer()) is not None]
        deadlines += [p.retry_at for p in self._peers.values() if p.retry_at is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for sa in list(self._sas.values()):
            deadline = sa.next_timer()
            if deadline is not None and deadline <= now:
                sa.handle_timer(now)
                self._collect(sa, now)
        for peer in list(self._peers.values()):
            if peer.retry_at is not None and peer.retry_at <= now:
                peer.retry_at = None
                if peer.wanted_up and not peer.policy.passive and (
                        peer.current is None or peer.current.gone):
                    self._log(peer.policy.name, "info",
                              f"re-establishing (attempt {peer.failures + 1})")
                    self._initiate(peer, now)

    # -- re-establishing --------------------------------------------------------------------
    def _backoff(self, peer: PeerState[SaT] | None) -> float:
        """Seconds before the next attempt: the peer's backoff step for its failures so far,
        ±20 % so that many peers do not retry in step."""
        if peer is None:
            return 30.0
        backoff = peer.policy.timing.reestablish_backoff
        return backoff[min(peer.failures, len(backoff) - 1)] * self.rng.uniform(0.8, 1.2)

    def _schedule_retry(self, peer: PeerState[SaT], reason: DownReason, now: float) -> None:
        if not peer.wanted_up or peer.policy.passive or reason not in RETRY_REASONS:
            return
        peer.retry_at = now + self._backoff(peer)
        peer.failures += 1

    def _peer_up(self, peer: PeerState[SaT]) -> None:
        peer.failures = 0
        peer.retry_at = None

    # -- half-open SAs ----------------------------------------------------------------------
    def _forget_half_open(self, sa: SaT) -> None:
        self._half_open = {k: v for k, v in self._half_open.items() if v is not sa}

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

    def _log(self, peer: str, level: str, message: str) -> None:
        self.events.append(LogMessage(peer, level, message))
