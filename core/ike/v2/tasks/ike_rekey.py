"""Rekeying the IKE SA with CREATE_CHILD_SA (RFC 7296 1.3.2, 2.18, 2.8.2, 2.25.2).

The rekey creates a successor `IkeSa` with new SPIs and keys derived from the old SK_d;
the Child SAs move to it and the rekey initiator deletes the old IKE SA.  The initiator
of the rekey is the original initiator of the successor.

Simultaneous rekey (2.8.2): each side answers the other's request, so two successors
exist.  The one created by the exchange with the lowest of the four nonces is redundant:
its creator deletes it, the Child SAs live on the other one, and the winner deletes the
old IKE SA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.crypto.dh import KeyExchange, create_key_exchange
from core.crypto.keymat import derive_rekeyed_ike_keys
from core.ike.constants import DhGroup, ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.errors import (
    IkeError,
    InvalidKePayload,
    InvalidSyntax,
    NoProposalChosen,
    TemporaryFailure,
)
from core.ike.events import DownReason, IkeSaRekeyed
from core.ike.rekey import next_try_after_failure
from core.ike.v2 import proposals
from core.ike.v2.message import Message
from core.ike.v2.payloads import KePayload, NoncePayload, Payload, SaPayload
from core.ike.v2.state import IkeState
from core.ike.v2.tasks.base import Task
from core.ike.v2.tasks.common import NONCE_SIZE, Payloads, error_notify, nonce_of, notify_name
from core.ike.v2.tasks.ike_init import _offer_with_group_first, ke_of, sa_of

if TYPE_CHECKING:
    from core.ike.v2.child import ChildSa
    from core.ike.v2.sa import IkeSa



def retry_ike_rekey_later(sa: IkeSa, now: float) -> None:
    """Our rekey of the IKE SA failed: try again after a backoff, before its hard expiry
    (which closes it; the endpoint then re-establishes the peer)."""
    if sa.policy.passive or sa.expire_at is None or sa.state != IkeState.ESTABLISHED:
        return
    sa.rekey_failures += 1
    sa.rekey_at = next_try_after_failure(sa.rng, sa.rekey_failures, sa.expire_at, now, sa.log,
                                         "the IKE SA")


def _successor(sa: IkeSa, *, initiator: bool, spi_i: bytes, spi_r: bytes, nonce_i: bytes,
               nonce_r: bytes, chosen: proposals.Negotiated, shared: bytes,
               now: float) -> IkeSa:
    from core.ike.v2.sa import IkeSa

    assert sa.keys is not None and sa.negotiated is not None and sa.negotiated.prf
    assert chosen.prf is not None
    new = IkeSa(sa.policy, initiator=initiator, spi_i=spi_i, spi_r=spi_r, local=sa.local,
                remote=sa.remote, rng=sa.rng, now=now)
    new.candidates = sa.candidates
    new.nonce_i, new.nonce_r = nonce_i, nonce_r
    keys = derive_rekeyed_ike_keys(sa.negotiated.prf, sa.keys.sk_d, chosen.prf,
                                   chosen.encr_choice, chosen.integ, shared,
                                   nonce_i, nonce_r, spi_i, spi_r)
    new.install_keys(chosen, keys)
    new.nat_local, new.nat_remote, new.nat_forced = sa.nat_local, sa.nat_remote, sa.nat_forced
    new.peer_id_text = sa.peer_id_text
    new.mark_established(now)
    return new


def _rekey_queued(sa: IkeSa, child: ChildSa) -> bool:
    from core.ike.v2.tasks.child_create import ChildCreate

    return sa.has_task(lambda t: isinstance(t, ChildCreate) and t.rekey_of is child)


def adopt(old: IkeSa, successor: IkeSa) -> None:
    """`successor` replaces `old`: the Child SAs move over and `old` waits for its DELETE.
    A Child SA rekey still queued on `old` would be dropped there: the successor does it.
    The other Child SA work (a DELETE of an expired SA, its replacement, an unused SA's
    DELETE) moves with the children; a DELETE already in flight on `old` is sent again on
    the successor, since the peer may have moved the pair away before it arrived."""
    from core.ike.v2.tasks.child_create import ChildCreate
    from core.ike.v2.tasks.child_delete import ChildDelete, UnusedChildDelete

    for child in old.children:
        if _rekey_queued(old, child):
            child.rekey_at = successor.created_at
    successor.children.extend(old.children)
    moved = list(old.children)
    old.children = []
    old.hand_over(successor, lambda t: isinstance(t, (ChildDelete, UnusedChildDelete)) or
                  (isinstance(t, ChildCreate) and t.rekey_of is None))
    active = old.active_task()
    if isinstance(active, ChildDelete) and active.child in moved:
        successor.queue(ChildDelete(active.child, active.reason,
                                    keep_if_refused=active.keep_if_refused), first=True)
    old.state = IkeState.REKEYED
    old.drop_queued(lambda t: isinstance(t, IkeRekey))
    old.events.append(IkeSaRekeyed(old.info(), successor.info()))


class IkeRekey(Task):
    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self, group: DhGroup | None = None,
                 groups_named: tuple[DhGroup, ...] = ()) -> None:
        self.group = group
        # DH groups the peer asked for (INVALID_KE_PAYLOAD) in earlier tries: a peer
        # naming one again goes round in circles, which is taken as a refusal.
        self.groups_named = groups_named
        self.spi = b""
        self.nonce = b""
        self.key_exchange: KeyExchange | None = None
        self.unusable_response = False

    def can_start(self, sa: IkeSa) -> bool:
        return sa.state == IkeState.ESTABLISHED

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        assert sa.negotiated is not None and sa.negotiated.dh is not None
        sa.state = IkeState.REKEYING
        sa.peer_ike_rekey = None
        group = self.group or sa.negotiated.dh
        self.spi = sa.rng.bytes(8)
        self.nonce = sa.rng.bytes(NONCE_SIZE)
        self.key_exchange = create_key_exchange(group, sa.rng)
        offer = proposals.offer(_offer_with_group_first(sa.policy.ike_proposals, group),
                                ProtocolId.IKE, self.spi)
        return [(PayloadType.SA, SaPayload(offer)),
                (PayloadType.NONCE, NoncePayload(self.nonce)),
                (PayloadType.KE, KePayload(group, self.key_exchange.public_value))]

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        error = error_notify(message)
        if error is not None:
            self._handle_error(sa, error.notify_type, error.data, now)
            return False
        try:
            return self._complete(sa, message, now)
        except IkeError:
            # The peer answered with a successor we cannot use: it has moved its Child SAs
            # there already, so this SA cannot simply carry on (see `failed`).
            self.unusable_response = True
            raise

    def _complete(self, sa: IkeSa, message: Message, now: float) -> bool:
        assert self.key_exchange is not None
        sa_payload = sa_of(message)
        if len(sa_payload.proposals) != 1 or len(sa_payload.proposals[0].spi) != 8:
            raise NoProposalChosen("IKE rekey response lacks a single proposal with an SPI")
        proposal = sa_payload.proposals[0]
        offer = _offer_with_group_first(sa.policy.ike_proposals, self.key_exchange.group)
        chosen = proposals.accept_response(offer, proposal, ProtocolId.IKE, need_dh=True)
        ke = ke_of(message)
        if ke.group != self.key_exchange.group:
            raise InvalidSyntax("IKE rekey response with a different KE group")
        shared = self.key_exchange.shared_secret(ke.data)
        nonce_r = nonce_of(message)
        new = _successor(sa, initiator=True, spi_i=self.spi, spi_r=proposal.spi,
                         nonce_i=self.nonce, nonce_r=nonce_r, chosen=chosen, shared=shared,
                         now=now)
        sa.spawned.append(new)
        from core.ike.v2.tasks.ike_delete import IkeDelete

        theirs = sa.peer_ike_rekey
        if theirs is not None and not theirs.gone and \
                min(self.nonce, nonce_r) < min(theirs.nonce_i, theirs.nonce_r):
            # Lost the collision: ours is redundant, the children go to theirs and the
            # peer deletes the old SA.
            sa.log("info", "IKE rekey collision lost: deleting our redundant IKE SA")
            adopt(sa, theirs)
            new.state = IkeState.REKEYED  # closes without reporting the peer down
            new.queue(IkeDelete(DownReason.REPLACED, detail="redundant after a collision"))
            return False
        if theirs is not None:
            sa.log("info", "IKE rekey collision won: the peer deletes its redundant IKE SA")
            theirs.state = IkeState.REKEYED
        adopt(sa, new)
        sa.queue(IkeDelete(DownReason.REPLACED), first=True)
        return False

    def _handle_error(self, sa: IkeSa, kind: int, data: bytes, now: float) -> None:
        sa.state = IkeState.ESTABLISHED if sa.state == IkeState.REKEYING else sa.state
        theirs = sa.peer_ike_rekey
        if theirs is not None and not theirs.gone:
            adopt(sa, theirs)  # the peer's rekey went through; it deletes the old SA
            return
        if kind == NotifyType.TEMPORARY_FAILURE:
            # RFC 7296 2.25: a crossing exchange; try again shortly.
            retry_ike_rekey_later(sa, now)
            return
        if kind == NotifyType.INVALID_KE_PAYLOAD and len(data) == 2:
            wanted = int.from_bytes(data, "big")
            if any(wanted in spec.dh for spec in sa.policy.ike_proposals) and \
                    wanted != self.group and wanted not in self.groups_named:
                sa.queue(IkeRekey(DhGroup(wanted), (*self.groups_named, DhGroup(wanted))),
                         first=True)
                return
        raise IkeError(f"peer refused the IKE SA rekey: {notify_name(kind)}")

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        if sa.state == IkeState.REKEYING:
            sa.state = IkeState.ESTABLISHED
        if self.unusable_response:
            # The peer now holds a successor we could not process: close this IKE SA so
            # both ends start afresh (the endpoint re-establishes with INITIAL_CONTACT).
            from core.ike.v2.tasks.ike_delete import IkeDelete

            sa.queue(IkeDelete(DownReason.PROTOCOL_ERROR, detail=str(error)), first=True)
            return
        # The peer refused: try again later; the hard lifetime still closes the SA.
        retry_ike_rekey_later(sa, now)


def respond_ike_rekey(sa: IkeSa, message: Message, now: float) -> Payloads:
    from core.ike.v2.tasks.child_create import ChildCreate
    from core.ike.v2.tasks.child_delete import ChildDelete

    if sa.state not in (IkeState.ESTABLISHED, IkeState.REKEYING):
        raise TemporaryFailure("the IKE SA is being closed")
    if isinstance(sa.active_task(), (ChildCreate, ChildDelete)):
        raise TemporaryFailure("a Child SA exchange is in progress")
    sa_payload = sa_of(message)
    proposal, chosen = proposals.select(sa.policy.ike_proposals, sa_payload.proposals,
                                        ProtocolId.IKE, need_dh=True)
    if len(proposal.spi) != 8:
        raise InvalidSyntax("IKE rekey proposal without an 8-octet SPI")
    ke = ke_of(message)
    assert chosen.dh is not None
    if ke.group != chosen.dh:
        raise InvalidKePayload(chosen.dh)
    key_exchange = create_key_exchange(chosen.dh, sa.rng)
    shared = key_exchange.shared_secret(ke.data)
    nonce_i, nonce_r = nonce_of(message), sa.rng.bytes(NONCE_SIZE)
    our_spi = sa.rng.bytes(8)
    new = _successor(sa, initiator=False, spi_i=proposal.spi, spi_r=our_spi, nonce_i=nonce_i,
                     nonce_r=nonce_r, chosen=chosen, shared=shared, now=now)
    sa.spawned.append(new)
    if sa.state == IkeState.REKEYING:
        # Collision: the Child SAs stay here until our own rekey settles who won.
        sa.peer_ike_rekey = new
        sa.log("info", "IKE rekey collision")
    else:
        adopt(sa, new)
    return [
        (PayloadType.SA, SaPayload((proposals.negotiated_to_proposal(
            chosen, proposal.number, ProtocolId.IKE, our_spi),))),
        (PayloadType.NONCE, NoncePayload(nonce_r)),
        (PayloadType.KE, KePayload(chosen.dh, key_exchange.public_value)),
    ]
