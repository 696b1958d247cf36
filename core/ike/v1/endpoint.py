"""The IKEv1 endpoint: every ISAKMP SA of this node and what no single SA decides (sans-IO).

It shares the peer bookkeeping, timers and re-establish backoff with the IKEv2 endpoint
(`core.ike.endpoint.PeerEndpoint`), so the daemon drives both versions alike.  It routes
messages to SAs by cookie pair, creates responder SAs for main and aggressive mode
requests (picking the configured peer by address, and in aggressive mode by identity),
starts the first quick mode once phase 1 is up, replaces an ISAKMP SA by a new phase 1
before it expires (IKEv1 has no rekey exchange: the IPsec SAs move to the new ISAKMP SA,
the old one is deleted), sorts out phase 1 collisions and INITIAL-CONTACT, and
re-establishes peers that went down (with backoff; never for passive peers).
"""

from __future__ import annotations

from dataclasses import replace

from core.errors import DecodeError
from core.ike.endpoint import MAX_HALF_OPEN, PeerEndpoint, PeerState
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
from core.ike.rekey import rekey_retry_time
from core.ike.v1 import informational
from core.ike.v1.child import ChildSa, ChildState
from core.ike.v1.constants import ExchangeType, NotifyType
from core.ike.v1.errors import IsakmpError
from core.ike.v1.message import Header, peek_header
from core.ike.v1.sa import ZERO_COOKIE, Datagram, IsakmpSa, SaState
from core.ike.v1.stray import opens_phase1, refusal

REPLACED_SA_GRACE = 10.0  # seconds before a replaced ISAKMP SA is deleted (as strongSwan)
_Peer = PeerState[IsakmpSa]

__all__ = ["MAX_HALF_OPEN", "REPLACED_SA_GRACE", "Datagram", "Ikev1Endpoint"]


def uses_aggressive_mode(policy: PeerPolicy) -> bool:
    """Aggressive mode when configured, or when either address is not fixed (main mode
    identifies PSK peers by address, which a NAT or a dynamic address breaks)."""
    return policy.exchange_mode == "aggressive" or policy.local_address is None or \
        policy.remote_address is None


class Ikev1Endpoint(PeerEndpoint[IsakmpSa]):
    """`_sas` is keyed by our cookie, `_half_open` by (the initiator's cookie, source)."""

    # ------------------------------------------------------------------ peers -------
    def _close(self, sa: IsakmpSa, now: float) -> None:
        """DELETE the IPsec SAs and the ISAKMP SA (IKEv1 deletes are not acknowledged)."""
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

    def _initiate(self, peer: _Peer, now: float, replaces: IsakmpSa | None = None) -> None:
        local = replaces.local if replaces else peer.local
        remote = replaces.remote if replaces else peer.remote
        assert local is not None and remote is not None
        sa = IsakmpSa(peer.policy, initiator=True, cky_i=self._new_spi(),
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
        if opens_phase1(header):
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
            self.datagrams.append(refusal(header, NotifyType.NO_PROPOSAL_CHOSEN, local, remote,
                                          self.rng))
            return
        sa = IsakmpSa(candidates[0], initiator=False, cky_i=header.cky_i,
                      cky_r=self._new_spi(), local=local, remote=remote, rng=self.rng,
                      now=now, aggressive=header.exchange == ExchangeType.AGGRESSIVE)
        sa.candidates = candidates
        sa.receive(data, local, remote, now)
        if sa.gone:
            # Refused at once: pass on the answer and the reason, not an SA that never was.
            self.datagrams.extend(sa.pop_datagrams())
            self._report_refusal(sa, candidates, sa.pop_events(), remote)
            return
        self._register(sa, self._peers[sa.policy.name])
        self._half_open[(header.cky_i, remote)] = sa
        self._collect(sa, now)

    def _report_refusal(self, sa: IsakmpSa, candidates: tuple[PeerPolicy, ...],
                        events: list[IkeEvent], remote: Address) -> None:
        """Pass on why a first phase 1 message was refused: as the `last_error` of the
        peers it can be pinned on (`_refused_peers`), else only as a log line.  Any host
        may send one, and a scanner must not overwrite the status of a dynamic peer."""
        attributed = self._refused_peers(sa, candidates, remote)
        for event in events:
            if isinstance(event, LogMessage):
                self.events.append(event if event.peer in attributed else
                                   replace(event, peer=""))
            elif isinstance(event, ExchangeFailed) and attributed:
                self.events += [replace(event, peer=name) for name in attributed]
            elif isinstance(event, ExchangeFailed):
                notify = f" [{event.notify}]" if event.notify else ""
                dynamic = ", ".join(p.name for p in candidates)
                self._log("", "info", f"refused the {sa.exchange_mode} mode request from "
                          f"{remote}: {event.message}{notify} (may have been meant for "
                          f"dynamic peer(s) {dynamic})")

    def _refused_peers(self, sa: IsakmpSa, candidates: tuple[PeerPolicy, ...],
                       remote: Address) -> list[str]:
        """The peers a refused first message is about: in aggressive mode the one peer
        configured with the identity it carries (a dynamic one only while it is not up
        from another address), else the peers configured with its source address."""
        if sa.aggressive and sa.peer_id is not None:
            by_id = [p for p in candidates if p.remote_id == sa.peer_id]
            if len(by_id) == 1:
                return [] if self._up_elsewhere(by_id[0], remote) else [by_id[0].name]
        return [p.name for p in candidates if p.remote_address is not None]

    def _up_elsewhere(self, policy: PeerPolicy, remote: Address) -> bool:
        """Whether the dynamic peer `policy` holds an ISAKMP SA with another address."""
        peer = self._peers.get(policy.name)
        current = peer.current if peer is not None else None
        return policy.remote_address is None and current is not None and \
            current.is_established and current.remote.host != remote.host

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
            self._forget_half_open(sa)
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
            self._forget_half_open(sa)
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
                if old is not None and old.is_established and old.expire_at is not None \
                        and not old.policy.passive:
                    # The replacement failed: try again after a growing backoff, before the
                    # old one expires (then the endpoint re-establishes the peer).
                    old.rekey_failures += 1
                    old.rekey_at = rekey_retry_time(self.rng, old.rekey_failures - 1,
                                                    old.expire_at, now)
            else:
                peer.current = None
                self._schedule_retry(peer, event.reason, now)
        self.events.append(event)

    def _on_up(self, sa: IsakmpSa, peer: _Peer, now: float) -> None:
        self._peer_up(peer)
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
        for pending in [s for s in peer.sas if s is not sa and s.state == SaState.CONNECTING]:
            pending.send_initial_contact = False  # no longer our first contact
        if sa.initial_contact_received:
            # The peer restarted: what we hold from before is stale.  An SA negotiated at
            # the same time as this one is not (the peer began both before either was
            # up): the collision rule below settles it the same way on both sides.
            for other in [o for o in others if o not in sa.concurrent]:
                other.destroy(DownReason.REPLACED, now, detail="peer sent INITIAL-CONTACT")
                self._collect(other, now, peer)
            others = [o for o in others if o in sa.concurrent]
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
