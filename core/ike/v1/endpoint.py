"""The IKEv1 endpoint: every ISAKMP SA of this node and what no single SA decides (sans-IO).

Same surface as `core.ike.v2.endpoint.Ikev2Endpoint`, so the daemon drives both versions
alike.  It routes messages to SAs by cookie pair, creates responder SAs for main and
aggressive mode requests (picking the configured peer by address, and in aggressive mode
by identity), starts the first quick mode once phase 1 is up, replaces an ISAKMP SA by a
new phase 1 before it expires (IKEv1 has no rekey exchange: the IPsec SAs move to the new
ISAKMP SA, the old one is deleted), sorts out phase 1 collisions and INITIAL-CONTACT, and
re-establishes peers that went down (with backoff; never for passive peers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from core.crypto.random import RandomSource
from core.errors import DecodeError
from core.ike.datagram import Outputs, on_wire
from core.ike.events import (
    Address,
    DownReason,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    LogMessage,
)
from core.ike.policy import PeerPolicy
from core.ike.v1 import informational
from core.ike.v1.child import ChildSa, ChildState
from core.ike.v1.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.v1.errors import IsakmpError
from core.ike.v1.message import Header, Message, encode_message, peek_header
from core.ike.v1.payloads import NotifyPayload
from core.ike.v1.sa import ZERO_COOKIE, Datagram, IsakmpSa, SaState

MAX_HALF_OPEN = 512
REPLACED_SA_GRACE = 10.0  # seconds before a replaced ISAKMP SA is deleted (as strongSwan)
_RETRY_REASONS = frozenset({
    DownReason.TIMEOUT, DownReason.PEER_DEAD, DownReason.DELETED_BY_PEER,
    DownReason.NO_PROPOSAL, DownReason.AUTH_FAILED, DownReason.PROTOCOL_ERROR,
    DownReason.EXPIRED,
})

__all__ = ["Datagram", "Ikev1Endpoint"]


@dataclass
class _Peer:
    policy: PeerPolicy
    current: IsakmpSa | None = None
    wanted_up: bool = False
    local: Address | None = None
    remote: Address | None = None
    failures: int = 0
    retry_at: float | None = None
    sas: list[IsakmpSa] = field(default_factory=list)


def uses_aggressive_mode(policy: PeerPolicy) -> bool:
    """Aggressive mode when configured, or when either address is not fixed (main mode
    identifies PSK peers by address, which a NAT or a dynamic address breaks)."""
    return policy.exchange_mode == "aggressive" or policy.local_address is None or \
        policy.remote_address is None


class Ikev1Endpoint(Outputs):
    def __init__(self, policies: Iterable[PeerPolicy], rng: RandomSource, *,
                 max_half_open: int = MAX_HALF_OPEN) -> None:
        self.rng = rng
        self.max_half_open = max_half_open
        self._peers: dict[str, _Peer] = {p.name: _Peer(p) for p in policies}
        self._sas: dict[bytes, IsakmpSa] = {}  # our cookie -> SA
        self._half_open: dict[tuple[bytes, Address], IsakmpSa] = {}
        self.datagrams: list[Datagram] = []
        self.events: list[IkeEvent] = []

    # ------------------------------------------------------------------ peers -------
    def add_peer(self, policy: PeerPolicy) -> None:
        self._peers[policy.name] = _Peer(policy)

    def remove_peer(self, name: str, now: float) -> None:
        self.disconnect(name, now)
        peer = self._peers.pop(name, None)
        if peer is not None:
            for sa in list(peer.sas):
                sa.destroy(DownReason.DELETED_BY_US, now)
                self._collect(sa, now, peer)

    def peer_names(self) -> list[str]:
        return list(self._peers)

    def current_sa(self, name: str) -> IsakmpSa | None:
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
            return
        if peer.current is not None and not peer.current.gone:
            return
        self._initiate(peer, now)

    def disconnect(self, name: str, now: float) -> None:
        """Delete the peer's IPsec and ISAKMP SAs and stop re-establishing them."""
        peer = self._peers.get(name)
        if peer is None:
            return
        peer.wanted_up = False
        peer.retry_at = None
        for sa in list(peer.sas):
            if sa.gone:
                continue
            informational.send_delete_all(sa, now)
            sa.destroy(DownReason.DELETED_BY_US, now)
            self._collect(sa, now)

    def rekey(self, name: str, now: float, *, ike: bool = False) -> bool:
        """Rekey the peer's IPsec SAs (quick mode) or its ISAKMP SA (a new phase 1).
        False: nothing to rekey."""
        peer = self._peers.get(name)
        sa = peer.current if peer else None
        if peer is None or sa is None or not sa.is_established:
            return False
        if ike:
            if not any(s.replaces is sa and not s.gone for s in peer.sas):
                self._initiate(peer, now, replaces=sa)
            return True
        children = [c for c in sa.children if c.state == ChildState.INSTALLED]
        if not children:
            return False
        for child in children:
            child.rekey_at = None
            sa.start_quick_mode(now, rekey_of=child)
        self._collect(sa, now)
        return True

    def note_inbound_traffic(self, name: str, now: float) -> None:
        sa = self.current_sa(name)
        if sa is not None:
            sa.note_inbound_traffic(now)

    def _initiate(self, peer: _Peer, now: float, replaces: IsakmpSa | None = None) -> None:
        local = replaces.local if replaces else peer.local
        remote = replaces.remote if replaces else peer.remote
        assert local is not None and remote is not None
        sa = IsakmpSa(peer.policy, initiator=True, cky_i=self._new_cookie(),
                      cky_r=ZERO_COOKIE, local=local, remote=remote, rng=self.rng, now=now,
                      aggressive=uses_aggressive_mode(peer.policy))
        sa.replaces = replaces
        sa.send_initial_contact = replaces is None and not any(
            s.state in (SaState.ESTABLISHED, SaState.REKEYED) for s in peer.sas)
        self._register(sa, peer)
        if replaces is None:
            peer.current = sa
        sa.phase1.start(now)
        self._collect(sa, now)

    def _new_cookie(self) -> bytes:
        while True:
            cookie = self.rng.bytes(8)
            if cookie != ZERO_COOKIE and cookie not in self._sas:
                return cookie

    def _register(self, sa: IsakmpSa, peer: _Peer) -> None:
        self._sas[sa.our_cookie] = sa
        for other in peer.sas:
            if other.state == SaState.CONNECTING and other is not sa:
                other.concurrent.append(sa)
                sa.concurrent.append(other)
        if sa not in peer.sas:
            peer.sas.append(sa)
        sa.find_child_elsewhere = lambda spi: self._find_child(sa, spi)

    def _find_child(self, asking: IsakmpSa, spi_out: int) -> tuple[IsakmpSa, ChildSa] | None:
        for peer in self._peers.values():
            if asking in peer.sas:
                for sa in peer.sas:
                    child = sa.find_child_by_out(spi_out)
                    if child is not None:
                        return sa, child
        return None

    # ------------------------------------------------------------------ receiving ---
    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        """An ISAKMP message (non-ESP marker already removed) from `remote` to `local`."""
        try:
            header = peek_header(data)
        except (IsakmpError, DecodeError) as error:
            self._log("", "debug", f"dropped a malformed ISAKMP message from {remote}: {error}")
            return
        if header.cky_r == ZERO_COOKIE and header.exchange in (
                ExchangeType.MAIN, ExchangeType.AGGRESSIVE):
            self._receive_first(header, data, local, remote, now)
            return
        sa = self._lookup(header)
        if sa is None:
            self._log("", "debug", f"dropped a message for unknown cookies "
                      f"{header.cky_i.hex()}/{header.cky_r.hex()} from {remote}")
            return
        sa.receive(data, local, remote, now)
        self._collect(sa, now)

    def _lookup(self, header: Header) -> IsakmpSa | None:
        sa = self._sas.get(header.cky_r)
        if sa is not None and not sa.initiator and sa.cky_i == header.cky_i:
            return sa
        sa = self._sas.get(header.cky_i)
        if sa is not None and sa.initiator and sa.cky_r in (header.cky_r, ZERO_COOKIE):
            return sa
        return None

    def _receive_first(self, header: Header, data: bytes, local: Address, remote: Address,
                       now: float) -> None:
        existing = self._half_open.get((header.cky_i, remote))
        if existing is not None:
            existing.receive(data, local, remote, now)  # a retransmission
            self._collect(existing, now)
            return
        if header.encrypted or header.message_id != 0:
            self._log("", "debug", f"dropped a malformed phase 1 request from {remote}")
            return
        if len(self._half_open) >= self.max_half_open:
            self._log("", "warning", f"dropped a phase 1 request from {remote}: "
                      f"{len(self._half_open)} half-open SAs")
            return
        candidates = self._candidates(local, remote)
        if not candidates:
            self._log("", "info", f"phase 1 request from {remote}: no peer configured for it")
            self._refuse(header, NotifyType.NO_PROPOSAL_CHOSEN, local, remote)
            return
        sa = IsakmpSa(candidates[0], initiator=False, cky_i=header.cky_i,
                      cky_r=self._new_cookie(), local=local, remote=remote, rng=self.rng,
                      now=now, aggressive=header.exchange == ExchangeType.AGGRESSIVE)
        sa.candidates = candidates
        sa.receive(data, local, remote, now)
        if sa.gone:
            # Refused at once: pass on the answer and the reason, not an SA that never was.
            self.datagrams.extend(sa.pop_datagrams())
            self.events.extend(e for e in sa.pop_events()
                               if isinstance(e, LogMessage | ExchangeFailed))
            return
        self._register(sa, self._peers[sa.policy.name])
        self._half_open[(header.cky_i, remote)] = sa
        self._collect(sa, now)

    def _candidates(self, local: Address, remote: Address) -> tuple[PeerPolicy, ...]:
        fixed = [p.policy for p in self._peers.values()
                 if p.policy.remote_address == remote.host
                 and p.policy.local_address in (None, local.host)]
        if fixed:
            return tuple(fixed)
        return tuple(p.policy for p in self._peers.values()
                     if p.policy.remote_address is None
                     and p.policy.local_address in (None, local.host))

    def _refuse(self, header: Header, kind: NotifyType, local: Address,
                remote: Address) -> None:

        message = Message(header.cky_i, ZERO_COOKIE, ExchangeType.INFORMATIONAL,
                          int.from_bytes(self.rng.bytes(4), "big"),
                          [(PayloadType.NOTIFY, NotifyPayload(kind, ProtocolId.ISAKMP))])
        self.datagrams.append(Datagram(on_wire(encode_message(message), local), local, remote))

    # ------------------------------------------------------------------ timers ------
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

    # ------------------------------------------------------------------ bookkeeping -
    def _peer_of(self, sa: IsakmpSa) -> _Peer | None:
        """The peer an SA belongs to; a responder may have switched to another policy
        once it learned the peer's identity."""
        peer = self._peers.get(sa.policy.name)
        if peer is not None and sa not in peer.sas:
            for other in self._peers.values():
                if sa in other.sas:
                    other.sas.remove(sa)
                    if other.current is sa:
                        other.current = None
            peer.sas.append(sa)
        return peer

    def _collect(self, sa: IsakmpSa, now: float, peer: _Peer | None = None) -> None:
        """Take an SA's outputs and apply what concerns the whole endpoint."""
        self.datagrams.extend(sa.pop_datagrams())
        if sa.state != SaState.CONNECTING:
            self._half_open = {k: v for k, v in self._half_open.items() if v is not sa}
        peer = peer or self._peer_of(sa)
        for event in sa.pop_events():
            self._apply(sa, peer, event, now)
        if sa.rekey_requested:
            sa.rekey_requested = False
            if peer is not None and peer.current is sa and not sa.gone and \
                    not any(s.replaces is sa and not s.gone for s in peer.sas):
                self._log(sa.name, "info", "replacing the ISAKMP SA before it expires")
                self._initiate(peer, now, replaces=sa)
        if sa.gone:
            self._sas.pop(sa.our_cookie, None)
            self._half_open = {k: v for k, v in self._half_open.items() if v is not sa}
            if peer is not None and sa in peer.sas:
                peer.sas.remove(sa)

    def _apply(self, sa: IsakmpSa, peer: _Peer | None, event: IkeEvent, now: float) -> None:
        if isinstance(event, IkeSaUp) and peer is not None:
            self._on_up(sa, peer, now)
            return
        if isinstance(event, IkeSaDown):
            if peer is None or peer.current is not sa:
                if event.reason == DownReason.REPLACED:
                    return  # a superseded SA closing: not news
                old = sa.replaces
                if old is not None and old.is_established and old.expire_at is not None:
                    # The replacement failed: try again later, before the old one expires.
                    old.rekey_at = min(old.expire_at, now + self._backoff(peer))
            else:
                peer.current = None
                self._schedule_retry(peer, event.reason, now)
        self.events.append(event)

    def _on_up(self, sa: IsakmpSa, peer: _Peer, now: float) -> None:
        peer.failures = 0
        peer.retry_at = None
        for pending in [s for s in peer.sas if s is not sa and s.initiator and s.replaces is None
                        and s.state == SaState.CONNECTING and s.cky_r == ZERO_COOKIE]:
            # Our own phase 1 never got an answer (its first packet was lost, or the peer
            # was not listening yet) and the peer's came through: drop ours rather than
            # let its retransmission build a duplicate ISAKMP SA, whose INITIAL-CONTACT
            # would make the peer throw away the SA that just came up.
            pending.destroy(DownReason.REPLACED, now, detail="the peer's ISAKMP SA came up")
            self._collect(pending, now, peer)
        if peer.local is None:
            peer.local, peer.remote = sa.local, sa.remote
        others = [s for s in peer.sas if s is not sa and not s.gone and
                  s.state in (SaState.ESTABLISHED, SaState.REKEYED)]
        if sa.initial_contact_received:
            for other in others:
                other.destroy(DownReason.REPLACED, now, detail="peer sent INITIAL-CONTACT")
                self._collect(other, now, peer)
            others = []
        active = [s for s in others if s.state == SaState.ESTABLISHED]
        if not active:
            self.events.append(IkeSaUp(sa.info()))
            self._take_over(sa, others, peer, now)
            return
        collision = [s for s in active if s in sa.concurrent]
        if collision and min(collision, key=lambda s: s.cky_i).cky_i < sa.cky_i:
            # Both sides started phase 1 at once; the SA with the lowest initiator cookie
            # wins on both.  This one lost: its initiator deletes it.
            winner = min(collision, key=lambda s: s.cky_i)
            self._log(sa.name, "info", "phase 1 collision: keeping the other ISAKMP SA")
            self._retire(sa, winner, delete=sa.initiator, now=now, peer=peer)
            return
        predecessor = sa.replaces if sa.replaces in active else max(
            active, key=lambda s: s.established_at or 0.0)
        self.events.append(IkeSaRekeyed(predecessor.info(), sa.info()))
        self._take_over(sa, others, peer, now)

    def _take_over(self, sa: IsakmpSa, others: list[IsakmpSa], peer: _Peer,
                   now: float) -> None:
        """`sa` becomes the peer's ISAKMP SA; the others hand over their IPsec SAs."""
        peer.current = sa
        for other in others:
            # We delete the loser of a collision if we started it, and what we replace by
            # main mode at once (the peer's message came last: it has the new SA).  What
            # we replace by aggressive mode waits: our message comes last, and a DELETE
            # sent with it may be handled first, making the peer drop the IPsec SAs it is
            # about to adopt.  What the peer replaces is ours to delete too: strongSwan
            # leaves that to the responder, 10 s later.  Whichever side is first wins.
            collision = other in sa.concurrent
            at_once = (other is sa.replaces and not sa.aggressive) or \
                (collision and other.initiator)
            self._retire(other, sa, delete=at_once, now=now, peer=peer)
            if not at_once and not collision and other.expire_at is not None:
                other.expire_at = min(other.expire_at, now + REPLACED_SA_GRACE)
        wanted = not sa.policy.passive and sa.initiator
        if wanted and not any(c.state != ChildState.REKEYED for c in sa.children):
            sa.start_quick_mode(now)
            self._collect(sa, now, peer)

    def _retire(self, old: IsakmpSa, successor: IsakmpSa, *, delete: bool, now: float,
                peer: _Peer) -> None:
        """Move `old`'s IPsec SAs to `successor`; delete `old` now, or let it wait for the
        peer's DELETE (or its expiry) in state REKEYED."""
        successor.children += old.children
        successor.retire_children += old.retire_children
        old.children, old.retire_children = [], []
        old.successor = successor
        old.rekey_at = None
        if old.state != SaState.DESTROYED:
            old.state = SaState.REKEYED
        if delete:
            informational.send_ike_delete(old, now)
            old.destroy(DownReason.REPLACED, now, keep_children=True)
        self._collect(old, now, peer)
        if peer.current is old:
            peer.current = successor

    def _backoff(self, peer: _Peer | None) -> float:
        if peer is None:
            return 30.0
        backoff = peer.policy.timing.reestablish_backoff
        return backoff[min(peer.failures, len(backoff) - 1)] * self.rng.uniform(0.8, 1.2)

    def _schedule_retry(self, peer: _Peer, reason: DownReason, now: float) -> None:
        if not peer.wanted_up or peer.policy.passive or reason not in _RETRY_REASONS:
            return
        peer.retry_at = now + self._backoff(peer)
        peer.failures += 1

    def _log(self, peer: str, level: str, message: str) -> None:
        self.events.append(LogMessage(peer, level, message))


    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

