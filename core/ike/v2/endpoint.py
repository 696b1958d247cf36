"""The IKEv2 endpoint: every IKE SA of this node, and what no single SA decides (sans-IO).

It routes received messages to SAs by SPI, creates responder SAs for IKE_SA_INIT
requests (with COOKIEs once half-open SAs pass a threshold, RFC 7296 2.6), registers the
successors of rekeyed SAs, handles INITIAL_CONTACT and duplicate IKE SAs, and
re-establishes peers that went down (with backoff; never for passive peers; the peer
bookkeeping is `core.ike.endpoint.PeerEndpoint`'s, shared with IKEv1).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from functools import partial

from core.crypto.proposals import ProposalSpec
from core.crypto.random import RandomSource
from core.errors import DecodeError
from core.ike.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.datagram import Datagram, on_wire
from core.ike.endpoint import MAX_HALF_OPEN, PeerEndpoint, PeerState
from core.ike.errors import IkeError, InvalidKePayload, UnsupportedCriticalPayload
from core.ike.events import (
    Address,
    DownReason,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
)
from core.ike.policy import PeerPolicy
from core.ike.v2.header import peek_header
from core.ike.v2.message import Message, decode_message, encode_message
from core.ike.v2.payloads import NotifyPayload
from core.ike.v2.sa import IkeSa
from core.ike.v2.state import IkeState
from core.ike.v2.tasks.ike_delete import IkeDelete
from core.ike.v2.tasks.ike_init import IkeInit, respond_ike_sa_init

COOKIE_THRESHOLD = 16  # half-open SAs before we ask for cookies
_Peer = PeerState[IkeSa]

__all__ = ["COOKIE_THRESHOLD", "MAX_HALF_OPEN", "Ikev2Endpoint"]


def _has_other_established(peer: _Peer, sa: IkeSa) -> bool:
    return any(s is not sa and s.is_established for s in peer.sas)


class Ikev2Endpoint(PeerEndpoint[IkeSa]):
    def __init__(self, policies: Iterable[PeerPolicy], rng: RandomSource, *,
                 cookie_threshold: int = COOKIE_THRESHOLD,
                 max_half_open: int = MAX_HALF_OPEN) -> None:
        super().__init__(policies, rng, max_half_open=max_half_open)
        self.cookie_threshold = cookie_threshold
        self._cookie_secret = rng.bytes(32)
        self.cookies_sent = 0
        # `_half_open` is keyed by (hash of the IKE_SA_INIT request, its source).  Past
        # IKE_SA_INIT the SA leaves it but stays here while it lives, so that a late copy
        # of its request is recognised (RFC 7296 2.1) rather than taken for a new one.
        self._answered_inits: dict[tuple[bytes, Address], IkeSa] = {}

    # ------------------------------------------------------------------ peers -------
    def _close(self, sa: IkeSa, now: float) -> None:
        """DELETE an established IKE SA; drop one still negotiating."""
        if sa.state == IkeState.DELETING:
            return
        if sa.is_established:
            sa.drop_queued(lambda t: True)
            sa.queue(IkeDelete(DownReason.DELETED_BY_US), first=True)
            sa.handle_timer(now)
        else:
            sa.destroy(DownReason.DELETED_BY_US, now)
        self._collect(sa, now)

    def rekey(self, name: str, now: float, *, ike: bool = False) -> bool:
        """Rekey the peer's Child SAs (or its IKE SA).  False: nothing to rekey."""
        from core.ike.v2.child import ChildState
        from core.ike.v2.tasks.child_create import ChildCreate
        from core.ike.v2.tasks.ike_rekey import IkeRekey

        sa = self.current_sa(name)
        if sa is None or sa.state != IkeState.ESTABLISHED:
            return False
        if ike:
            sa.queue(IkeRekey())
        else:
            children = [c for c in sa.children if c.state == ChildState.INSTALLED]
            if not children:
                return False
            for child in children:
                sa.queue(ChildCreate(rekey_of=child))
        sa.handle_timer(now)
        self._collect(sa, now)
        return True

    def _initiate(self, peer: _Peer, now: float) -> None:
        assert peer.local is not None and peer.remote is not None
        spi_i = self._new_spi()
        sa = IkeSa(peer.policy, initiator=True, spi_i=spi_i, spi_r=bytes(8), local=peer.local,
                   remote=peer.remote, rng=self.rng, now=now)
        self._register(sa, peer)
        peer.current = sa
        sa.queue(IkeInit(sa))
        sa.handle_timer(now)
        self._collect(sa, now)

    def _register(self, sa: IkeSa, peer: _Peer) -> None:
        self._sas[sa.our_spi] = sa
        peer.sas.append(sa)
        sa.peer_has_other_sa = partial(_has_other_established, peer, sa)

    # ------------------------------------------------------------------ receiving ---
    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        """An IKE message (non-ESP marker already removed) from `remote` to `local`."""
        try:
            header = peek_header(data)
        except IkeError as error:
            self._log("", "debug", f"dropped a malformed IKE message from {remote}: {error}")
            return
        except DecodeError as error:
            self._log("", "debug", f"dropped a malformed IKE message from {remote}: {error}")
            return
        if header.exchange_type == ExchangeType.IKE_SA_INIT and not header.is_response \
                and header.spi_r == bytes(8):
            if not header.is_initiator:  # RFC 7296 3.1: the initiator sets the I flag
                self._log("", "debug", f"dropped an IKE_SA_INIT request from {remote} "
                          "without the I flag")
                return
            if header.message_id != 0:  # RFC 7296 2.2: IKE_SA_INIT is message 0
                self._log("", "debug", f"dropped an IKE_SA_INIT request from {remote} with "
                          f"message ID {header.message_id}")
                return
            self._receive_init_request(data, header.spi_i, local, remote, now)
            return
        our_spi = header.spi_r if header.is_initiator else header.spi_i
        sa = self._sas.get(our_spi)
        if sa is None and header.exchange_type == ExchangeType.IKE_SA_INIT and \
                header.is_response:
            sa = self._sas.get(header.spi_i)
        if sa is None:
            self._log("", "debug", f"dropped a message for unknown IKE SPI {our_spi.hex()} "
                      f"from {remote}")
            return
        sa.receive(data, local, remote, now)
        self._collect(sa, now)

    def _receive_init_request(self, data: bytes, spi_i: bytes, local: Address,
                              remote: Address, now: float) -> None:
        # A retransmission is the same request again: the same SPI from the same address
        # may be a new request (a restarted initiator, two hosts behind one NAT), which
        # must not get the old answer (RFC 7296 2.1: look up by the whole packet).
        key = (hashlib.sha256(data).digest(), remote)
        existing = self._half_open.get(key)
        if existing is not None:
            existing.receive(data, local, remote, now)
            self._collect(existing, now)
            return
        answered = self._answered_inits.get(key)
        if answered is not None and not answered.gone:
            # The initiator had our answer (it went on to IKE_AUTH): a copy delayed in the
            # network, or replayed.  A new half-open SA would only time out.
            self._log(answered.name, "debug", f"ignored a late copy of the IKE_SA_INIT "
                      f"request from {remote}: its IKE SA has moved on")
            return
        try:
            message = decode_message(data)
        except IkeError as error:
            self._log("", "debug", f"refused a malformed IKE_SA_INIT from {remote}: {error}")
            if isinstance(error, UnsupportedCriticalPayload):
                self._refuse_unparsed(data, error, local, remote)
            return
        except DecodeError as error:
            self._log("", "debug", f"dropped a malformed IKE_SA_INIT from {remote}: {error}")
            return
        half_open = len(self._half_open)
        if half_open >= self.max_half_open:
            self._log("", "warning", f"dropped IKE_SA_INIT from {remote}: {half_open} "
                      "half-open SAs")
            return
        if half_open >= self.cookie_threshold and not self._cookie_valid(message, remote):
            self._send_cookie(message, local, remote)
            return
        candidates = self._candidates(local, remote)
        if not candidates:
            self._log("", "info", f"IKE_SA_INIT from {remote}: no peer configured for it")
            self._answer_stateless(message, NotifyType.NO_PROPOSAL_CHOSEN, b"", local, remote)
            return
        sa = IkeSa(candidates[0], initiator=False, spi_i=spi_i, spi_r=self._new_spi(),
                   local=local, remote=remote, rng=self.rng, now=now)
        sa.candidates = candidates
        offers: list[ProposalSpec] = []
        for policy in candidates:
            offers.extend(p for p in policy.ike_proposals if p not in offers)
        try:
            payloads = respond_ike_sa_init(sa, message, data, tuple(offers), now)
        except IkeError as error:
            self._report_refusal(candidates, error, remote)
            if error.notify is not None:
                self._answer_stateless(message, error.notify, error.data, local, remote)
            return
        except DecodeError as error:
            self._log(candidates[0].name, "debug", f"bad IKE_SA_INIT from {remote}: {error}")
            return
        response = sa.encode(ExchangeType.IKE_SA_INIT, 0, True, payloads)
        sa.init_response = response
        sa.respond_first(response, now)
        peer = self._peers[candidates[0].name]
        self._register(sa, peer)
        self._half_open[key] = sa
        self._answered_inits[key] = sa
        self._collect(sa, now)

    def _report_refusal(self, candidates: tuple[PeerPolicy, ...], error: IkeError,
                        remote: Address) -> None:
        """Each candidate peer's status says why we refused its IKE_SA_INIT (`last_error`),
        when the request can be pinned on it: a peer configured with that address, or a
        dynamic one the refusal is specific to (`_refusal_concerns`).  Anything else is
        only logged: any host may send IKE_SA_INIT, and a scanner must not overwrite the
        status of every dynamic peer.  INVALID_KE_PAYLOAD is no failure: the initiator
        retries with the group we name."""
        if isinstance(error, InvalidKePayload):
            self._log(candidates[0].name, "info", f"asked {remote} for DH group {error.group}")
            return
        notify = error.notify.name if error.notify is not None else None
        unattributed: list[str] = []
        for policy in candidates:
            if policy.remote_address is not None or \
                    self._refusal_concerns(policy, candidates, error, remote):
                self.events.append(ExchangeFailed(
                    policy.name, "IKE_SA_INIT", f"refused the request from {remote}: {error}",
                    notify))
            else:
                unattributed.append(policy.name)
        if unattributed:
            self._log("", "info", f"refused IKE_SA_INIT from {remote}: {error} (may have been "
                      f"meant for dynamic peer(s) {', '.join(unattributed)})")

    def _refusal_concerns(self, policy: PeerPolicy, candidates: tuple[PeerPolicy, ...],
                          error: IkeError, remote: Address) -> bool:
        """Whether a refused request from `remote` is about the dynamic peer `policy`: it
        is the only peer that could have sent it, our proposals for that peer are what the
        request failed on (not a malformed message anyone could send), and the peer is
        not up from another address at the moment."""
        if len(candidates) != 1 or error.notify != NotifyType.NO_PROPOSAL_CHOSEN:
            return False
        peer = self._peers.get(policy.name)
        current = peer.current if peer is not None else None
        return current is None or not current.is_established or \
            current.remote.host == remote.host

    # -- cookies (RFC 7296 2.6) --------------------------------------------------------
    def _cookie_for(self, nonce: bytes, remote: Address, spi_i: bytes) -> bytes:
        digest = hmac.new(self._cookie_secret, nonce + remote.host.encode() + spi_i,
                          hashlib.sha256).digest()
        return b"\x01" + digest[:16]

    def _cookie_valid(self, message: Message, remote: Address) -> bool:
        cookie = message.notify(NotifyType.COOKIE)
        nonce = message.get(PayloadType.NONCE)
        if cookie is None or nonce is None:
            return False
        expected = self._cookie_for(getattr(nonce, "data", b""), remote, message.spi_i)
        return hmac.compare_digest(cookie.data, expected)

    def _send_cookie(self, message: Message, local: Address, remote: Address) -> None:
        nonce = message.get(PayloadType.NONCE)
        cookie = self._cookie_for(getattr(nonce, "data", b""), remote, message.spi_i)
        self.cookies_sent += 1
        self._answer_stateless(message, NotifyType.COOKIE, cookie, local, remote)

    def _refuse_unparsed(self, data: bytes, error: IkeError, local: Address,
                         remote: Address) -> None:
        """Answer a request whose payloads we could not parse (RFC 7296 2.5)."""
        assert error.notify is not None
        header = peek_header(data)
        request = Message(spi_i=header.spi_i, spi_r=bytes(8),
                          exchange_type=ExchangeType.IKE_SA_INIT, is_initiator=True,
                          is_response=False, message_id=0, payloads=[])
        self._answer_stateless(request, error.notify, error.data, local, remote)

    def _answer_stateless(self, request: Message, kind: NotifyType, data: bytes,
                          local: Address, remote: Address) -> None:
        response = Message(spi_i=request.spi_i, spi_r=bytes(8),
                           exchange_type=ExchangeType.IKE_SA_INIT, is_initiator=False,
                           is_response=True, message_id=0,
                           payloads=[(PayloadType.NOTIFY,
                                      NotifyPayload(ProtocolId.NONE, b"", kind, data))])
        self.datagrams.append(Datagram(on_wire(encode_message(response), local), local, remote))

    # ------------------------------------------------------------------ bookkeeping -
    def _collect(self, sa: IkeSa, now: float) -> None:
        """Take an SA's outputs and apply what concerns the whole endpoint."""
        self.datagrams.extend(sa.pop_datagrams())
        peer = self._peers.get(sa.name)
        for new in sa.spawned:
            if peer is not None:
                self._register(new, peer)
            new.handle_timer(now)
        spawned, sa.spawned = sa.spawned, []
        if sa.state != IkeState.CONNECTING:
            self._forget_half_open(sa)
        if peer is not None and sa.policy.name != peer.policy.name:
            peer = self._peers.get(sa.policy.name)  # the responder picked another peer
        for event in sa.pop_events():
            self._apply(sa, peer, event, now)
        if sa.state == IkeState.DESTROYED:
            self._sas.pop(sa.our_spi, None)
            if not sa.initiator:
                self._answered_inits = {k: v for k, v in self._answered_inits.items()
                                        if v is not sa}
            for p in self._peers.values():
                if sa in p.sas:
                    p.sas.remove(sa)
        for new in spawned:
            self._collect(new, now)

    def _apply(self, sa: IkeSa, peer: _Peer | None, event: IkeEvent, now: float) -> None:
        if isinstance(event, IkeSaUp) and peer is not None:
            if sa not in peer.sas:
                for other in self._peers.values():
                    if sa in other.sas:
                        other.sas.remove(sa)
                peer.sas.append(sa)
            self._on_up(sa, peer, now)
        elif isinstance(event, IkeSaRekeyed) and peer is not None:
            successor = next((s for s in peer.sas if s.spi_i.hex() == event.new.spi_i
                              and s.spi_r.hex() == event.new.spi_r), None)
            if successor is not None:
                peer.current = successor
        elif isinstance(event, IkeSaDown):
            if peer is not None and peer.current is not None and peer.current is not sa:
                # Another SA carries this peer: one superseded or redundant SA closing
                # is not news for the operator.
                self._log(sa.name, "debug", f"IKE SA {event.spi_i}/{event.spi_r} closed "
                          f"({event.reason.value}); another SA is current")
                return
            if peer is not None and peer.current is sa:
                peer.current = None
                self._schedule_retry(peer, event.reason, now)
        self.events.append(event)

    def _on_up(self, sa: IkeSa, peer: _Peer, now: float) -> None:
        self._peer_up(peer)
        if sa.initiator is False and peer.local is None:
            peer.local, peer.remote = sa.local, sa.remote
        others = [s for s in peer.sas if s is not sa and s.state != IkeState.DESTROYED]
        for other in others:
            if other.initiator and other.state == IkeState.CONNECTING and other.keys is None:
                # Our own initiation has not got past IKE_SA_INIT (its first packet was
                # lost, say) and the peer's came through: drop ours rather than build a
                # duplicate.  Past IKE_SA_INIT both continue and the duplicate rule below
                # settles it the same way on both ends.
                other.destroy(DownReason.REPLACED, now, detail="the peer's IKE SA came up")
                self._collect(other, now)
                continue
            stale = other.established_at is not None and other.established_at < sa.created_at
            if sa.initial_contact_received and stale:
                # The peer restarted (INITIAL_CONTACT): its old SAs are gone there.
                other.destroy(DownReason.REPLACED, now, detail="peer sent INITIAL_CONTACT")
                self._collect(other, now)
        # Duplicates are SAs whose negotiations overlapped: both sides initiated at once.
        # An SA begun after another was up is a deliberate replacement (the peer's
        # make-before-break reauthentication, RFC 7296 2.8.3): the peer deletes the old
        # one itself, so both stay until then.
        duplicates = [sa] + [
            s for s in peer.sas
            if s is not sa and s.state == IkeState.ESTABLISHED
            and s.established_at is not None and s.established_at >= sa.created_at
        ]
        if len(duplicates) > 1:
            # Keep the SA with the lowest initiator SPI (both ends agree on that), close
            # the others.
            keep = min(duplicates, key=lambda s: s.spi_i)
            for other in duplicates:
                if other is keep:
                    continue
                if other.policy.passive:
                    other.destroy(DownReason.REPLACED, now, detail="duplicate IKE SA")
                else:
                    other.queue(IkeDelete(DownReason.REPLACED, detail="duplicate IKE SA"),
                                first=True)
                    other.handle_timer(now)
                self._collect(other, now)
            peer.current = keep
        else:
            peer.current = sa
