"""CREATE_CHILD_SA for Child SAs: new, and rekey with collisions (RFC 7296 1.3, 2.8, 2.25).

Make-before-break: the rekey initiator installs the new SA both ways when the response
arrives, then deletes the old one.  The responder installs the new SA inbound at once and
outbound only when the old SA is deleted, so nothing is sent on an SA the initiator has
not installed yet.

Simultaneous rekey (2.8.1): both sides rekey the same SA.  Each answers the other's
request, so two new SAs exist.  The one created by the exchange that holds the lowest of
the four nonces is redundant: its creator (the initiator of that exchange) deletes it, and
the winner deletes the old SA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.crypto.dh import KeyExchange, create_key_exchange
from core.ike.constants import DhGroup, ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.errors import (
    ChildSaNotFound,
    IkeError,
    InvalidKePayload,
    InvalidSyntax,
    NoProposalChosen,
    TemporaryFailure,
)
from core.ike.events import ChildSaInstalled, DownReason
from core.ike.rekey import REKEY_RETRY_STEPS, next_try_after_failure
from core.ike.v2 import proposals
from core.ike.v2 import ts as ts_mod
from core.ike.v2.child import ChildSa, ChildState
from core.ike.v2.message import Message
from core.ike.v2.payloads import KePayload, NoncePayload, Payload, SaPayload, TsPayload
from core.ike.v2.state import IkeState
from core.ike.v2.tasks.base import Task
from core.ike.v2.tasks.common import (
    NONCE_SIZE,
    Payloads,
    error_notify,
    make_child,
    negotiate_ts,
    nonce_of,
    notify,
    notify_name,
    proposed_ts,
    spi_bytes,
    spi_int,
    ts_pair,
    wants_transport,
)

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa

# A new Child SA answered TEMPORARY_FAILURE is tried again after the rekey backoff steps;
# after this many such answers in a row the peer is taken to refuse it.
MAX_TEMPORARY_FAILURES = 5


def retry_rekey_later(sa: IkeSa, child: ChildSa, now: float) -> None:
    """Our rekey of `child` failed: try again after a backoff, before its hard expiry
    (which replaces it with a new Child SA if every try fails)."""
    if sa.policy.passive or child not in sa.children or child.expired or \
            child.state != ChildState.INSTALLED:
        return
    child.rekey_failures += 1
    child.rekey_at = next_try_after_failure(sa.rng, child.rekey_failures, child.expire_at, now,
                                            sa.log, f"Child SA {child.spi_in:08x}")


def _has_usable_child(sa: IkeSa) -> bool:
    return any(c.usable for c in sa.children)


def _pfs_group(sa: IkeSa) -> DhGroup | None:
    for spec in sa.policy.esp_proposals:
        if spec.dh:
            return spec.dh[0]
    return None


class ChildCreate(Task):
    """Create a Child SA, or rekey `rekey_of`.  A `replacement` stands in for a Child SA
    that went without a successor (it expired, or the peer lost it): it is not started
    while another usable Child SA exists, and if it fails the IKE SA is closed so that
    the endpoint re-establishes the whole tunnel."""

    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self, rekey_of: ChildSa | None = None, group: DhGroup | None = None, *,
                 replacement: bool = False, temporary_failures: int = 0,
                 groups_named: tuple[DhGroup, ...] = ()) -> None:
        self.rekey_of = rekey_of
        self.group = group
        self.replacement = replacement
        # TEMPORARY_FAILURE answers to this new Child SA so far (its earlier tries).
        self.temporary_failures = temporary_failures
        # DH groups the peer asked for (INVALID_KE_PAYLOAD) in earlier tries: a peer
        # naming one again goes round in circles, which is taken as a refusal.
        self.groups_named = groups_named
        self.spi_in = 0
        self.nonce_i = b""
        self.key_exchange: KeyExchange | None = None
        self.local_ts: TsPayload | None = None
        self.remote_ts: TsPayload | None = None
        # Set when we answered the peer's rekey of the same SA while ours was in flight.
        self.sibling: ChildSa | None = None
        # Set once a response without an error notify came: the peer holds a new SA.
        self.peer_created = False
        self.refused_with: int | None = None  # the error notify the peer answered with

    def can_start(self, sa: IkeSa) -> bool:
        if sa.state != IkeState.ESTABLISHED:
            return False
        old = self.rekey_of
        if old is None:
            return not (self.replacement and _has_usable_child(sa))
        return old in sa.children and old.state == ChildState.INSTALLED and not old.expired

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        self.spi_in = sa.new_child_spi()
        self.nonce_i = sa.rng.bytes(NONCE_SIZE)
        group = self.group or _pfs_group(sa)
        self.key_exchange = create_key_exchange(group, sa.rng) if group else None
        old = self.rekey_of
        if old is not None:
            old.state = ChildState.REKEYING
            self.local_ts = TsPayload(old.local_ts)
            self.remote_ts = TsPayload(old.remote_ts)
        else:
            self.local_ts, self.remote_ts = proposed_ts(sa)
        payloads: Payloads = []
        if old is not None:
            payloads.append(notify(NotifyType.REKEY_SA, protocol=ProtocolId.ESP,
                                   spi=spi_bytes(old.spi_in)))
        if sa.policy.mode == "transport":
            payloads.append(notify(NotifyType.USE_TRANSPORT_MODE))
        offer = proposals.offer(sa.policy.esp_proposals, ProtocolId.ESP,
                                spi_bytes(self.spi_in), with_dh=self.key_exchange is not None)
        payloads += [(PayloadType.SA, SaPayload(offer)),
                     (PayloadType.NONCE, NoncePayload(self.nonce_i))]
        if self.key_exchange is not None:
            payloads.append((PayloadType.KE, KePayload(self.key_exchange.group,
                                                       self.key_exchange.public_value)))
        payloads += [(PayloadType.TSI, self.local_ts), (PayloadType.TSR, self.remote_ts)]
        return payloads

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        old = self.rekey_of
        error = error_notify(message)
        if error is not None:
            self._handle_error(sa, error.notify_type, error.data, now)
            return False
        self.peer_created = True
        sa_payload = message.get(PayloadType.SA)
        if not isinstance(sa_payload, SaPayload) or len(sa_payload.proposals) != 1:
            raise NoProposalChosen("CREATE_CHILD_SA response lacks a single ESP proposal")
        proposal = sa_payload.proposals[0]
        chosen = proposals.accept_response(sa.policy.esp_proposals, proposal, ProtocolId.ESP,
                                           need_dh=self.key_exchange is not None)
        shared = None
        if self.key_exchange is not None:
            ke = message.get(PayloadType.KE)
            if not isinstance(ke, KePayload) or ke.group != self.key_exchange.group:
                raise InvalidSyntax("CREATE_CHILD_SA response lacks the KE payload for PFS")
            shared = self.key_exchange.shared_secret(ke.data)
        tsi, tsr = ts_pair(message)
        assert self.local_ts is not None and self.remote_ts is not None
        ts_mod.check_subset(tuple(tsi.selectors), tuple(self.local_ts.selectors))
        ts_mod.check_subset(tuple(tsr.selectors), tuple(self.remote_ts.selectors))
        mode = "transport" if wants_transport(message) else "tunnel"
        nonce_r = nonce_of(message)
        child = make_child(sa, we_initiated=True, spi_in=self.spi_in,
                           spi_out=spi_int(proposal.spi), chosen=chosen, mode=mode,
                           local_ts=tsi, remote_ts=tsr, nonce_i=self.nonce_i,
                           nonce_r=nonce_r, shared_secret=shared, now=now)
        sa.children.append(child)
        if old is None:
            sa.events.append(ChildSaInstalled(child.info(sa.name, sa.local, sa.remote)))
            return False
        self._finish_rekey(sa, old, child, now)
        return False

    def _finish_rekey(self, sa: IkeSa, old: ChildSa, child: ChildSa, now: float) -> None:
        from core.ike.v2.tasks.child_delete import ChildDelete

        info = child.info(sa.name, sa.local, sa.remote)
        if old not in sa.children:
            # The peer deleted the old SA while we rekeyed it: it does not want the pair.
            sa.events.append(ChildSaInstalled(info, outbound=False))
            child.redundant = True
            sa.queue(ChildDelete(child, "peer deleted the SA being rekeyed"), first=True)
            return
        sibling = self.sibling
        if sibling is not None and sibling in sa.children and \
                child.lowest_nonce() < sibling.lowest_nonce():
            # We lost the collision: our new SA is redundant, the peer deletes the old one.
            child.redundant = True
            child.outbound_installed = False
            old.state = ChildState.REKEYED
            sa.events.append(ChildSaInstalled(info, outbound=False, replaces_spi_in=None))
            sa.log("info", f"rekey collision on SPI {old.spi_in:08x} lost: deleting our "
                   f"redundant SA {child.spi_in:08x}")
            sa.queue(ChildDelete(child, "redundant after a rekey collision"), first=True)
            return
        if sibling is not None:
            sibling.redundant = True
            sa.log("info", f"rekey collision on SPI {old.spi_in:08x} won: the peer deletes "
                   f"its redundant SA {sibling.spi_in:08x}")
        old.state = ChildState.REKEYED
        child.replaces = old
        sa.events.append(ChildSaInstalled(info, outbound=True, replaces_spi_in=old.spi_in))
        sa.queue(ChildDelete(old, "rekeyed", keep_if_refused=True), first=True)

    def _handle_error(self, sa: IkeSa, kind: int, data: bytes, now: float) -> None:
        old = self.rekey_of
        self.refused_with = kind
        if old is not None and old.state == ChildState.REKEYING:
            old.state = ChildState.INSTALLED
        if kind == NotifyType.TEMPORARY_FAILURE:
            if self.sibling is not None and old is not None:
                old.state = ChildState.REKEYED  # the peer's rekey of it went through
                return
            # RFC 7296 2.25: the peer is busy (a crossing exchange); try again shortly.
            if old is not None:
                sa.log("info", "peer answered TEMPORARY_FAILURE; retrying the rekey later")
                retry_rekey_later(sa, old, now)
                return
            if self.temporary_failures + 1 < MAX_TEMPORARY_FAILURES:
                self._retry_new_later(sa, now)
                return
            # Busy that often: the peer does not want it (the failure path below).
        if kind == NotifyType.INVALID_KE_PAYLOAD and len(data) == 2:
            wanted = int.from_bytes(data, "big")
            if any(wanted in spec.dh for spec in sa.policy.esp_proposals) and \
                    wanted != (self.group or _pfs_group(sa)) and \
                    wanted not in self.groups_named:
                sa.queue(ChildCreate(old, DhGroup(wanted), replacement=self.replacement,
                                     temporary_failures=self.temporary_failures,
                                     groups_named=(*self.groups_named, DhGroup(wanted))),
                         first=True)
                return
        if kind == NotifyType.CHILD_SA_NOT_FOUND and old is not None:
            if old not in sa.children or self.sibling is not None:
                return  # already replaced by the peer's rekey of it, and then deleted
            # RFC 7296 2.25: the peer lost it; a new Child SA takes its place.
            sa.log("warning", f"peer does not know Child SA {old.spi_in:08x}: creating anew")
            sa.remove_child(old, "unknown to the peer", now)
            sa.queue(ChildCreate(replacement=True), first=True)
            return
        raise IkeError(f"peer refused CREATE_CHILD_SA: {notify_name(kind)}")

    def _retry_new_later(self, sa: IkeSa, now: float) -> None:
        """RFC 7296 2.25: the peer is busy (a crossing exchange); try the new Child SA
        again after a growing, jittered delay."""
        failures = self.temporary_failures + 1
        step = REKEY_RETRY_STEPS[min(failures - 1, len(REKEY_RETRY_STEPS) - 1)]
        delay = step * sa.rng.uniform(0.8, 1.2)
        sa.log("info", f"peer answered TEMPORARY_FAILURE ({failures} in a row); retrying "
               f"the new Child SA in {delay:.1f} s")
        sa.defer(ChildCreate(None, self.group, replacement=self.replacement,
                             temporary_failures=failures, groups_named=self.groups_named),
                 now + delay)

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        from core.ike.v2.tasks.child_delete import UnusedChildDelete

        old = self.rekey_of
        if old is not None and old.state == ChildState.REKEYING:
            old.state = ChildState.INSTALLED
        if old is not None:
            retry_rekey_later(sa, old, now)  # the old SA carries on meanwhile
        elif self.replacement and not _has_usable_child(sa):
            self._give_up(sa, str(error))
        if self.peer_created and not any(c.spi_in == self.spi_in for c in sa.children):
            # We could not use the peer's answer, but the peer installed its SA: delete it.
            sa.queue(UnusedChildDelete(self.spi_in), first=True)

    def _give_up(self, sa: IkeSa, error: str) -> None:
        """No Child SA is left and the peer refused a new one: close the IKE SA, so the
        endpoint re-establishes the tunnel from scratch (with its backoff)."""
        from core.ike.v2.tasks.ike_delete import IkeDelete

        reason = DownReason.NO_PROPOSAL if self.refused_with == \
            NotifyType.NO_PROPOSAL_CHOSEN else DownReason.PROTOCOL_ERROR
        sa.log("warning", f"no Child SA left and the peer refused a new one ({error}): "
               "closing the IKE SA to re-establish")
        sa.queue(IkeDelete(reason, detail=f"no Child SA: {error}"), first=True)


def respond_create_child(sa: IkeSa, message: Message, now: float) -> Payloads:
    if sa.state != IkeState.ESTABLISHED:
        raise TemporaryFailure("the IKE SA is being rekeyed or closed")
    old = _rekeyed_child(sa, message)
    if old is not None and old.state in (ChildState.REKEYED, ChildState.DELETING):
        raise TemporaryFailure(f"Child SA {old.spi_in:08x} is being closed")
    if old is None and _own_new_child_wins(sa):
        raise TemporaryFailure("our own new Child SA is under way")
    sa_payload = message.get(PayloadType.SA)
    if not isinstance(sa_payload, SaPayload):
        raise InvalidSyntax("CREATE_CHILD_SA request without an SA payload")
    ke = message.get(PayloadType.KE)
    if ke is not None and not isinstance(ke, KePayload):
        raise InvalidSyntax("bad KE payload")
    proposal, chosen = proposals.select(sa.policy.esp_proposals, sa_payload.proposals,
                                        ProtocolId.ESP, need_dh=ke is not None)
    shared = None
    response_ke: KePayload | None = None
    if ke is not None:
        assert chosen.dh is not None
        if ke.group != chosen.dh:
            raise InvalidKePayload(chosen.dh)
        key_exchange = create_key_exchange(chosen.dh, sa.rng)
        shared = key_exchange.shared_secret(ke.data)
        response_ke = KePayload(chosen.dh, key_exchange.public_value)
    mode = "transport" if wants_transport(message) else "tunnel"
    if mode != sa.policy.mode:
        raise NoProposalChosen(f"peer wants {mode} mode, we are configured for "
                               f"{sa.policy.mode}")
    tsi, tsr = negotiate_ts(sa, message)
    nonce_i, nonce_r = nonce_of(message), sa.rng.bytes(NONCE_SIZE)
    spi_in = sa.new_child_spi()
    child = make_child(sa, we_initiated=False, spi_in=spi_in, spi_out=spi_int(proposal.spi),
                       chosen=chosen, mode=mode, local_ts=tsr, remote_ts=tsi,
                       nonce_i=nonce_i, nonce_r=nonce_r, shared_secret=shared, now=now)
    sa.children.append(child)
    info = child.info(sa.name, sa.local, sa.remote)
    if old is None:
        sa.events.append(ChildSaInstalled(info))
    else:
        _note_collision(sa, old, child)
        child.replaces = old
        child.outbound_installed = False
        sa.events.append(ChildSaInstalled(info, outbound=False, replaces_spi_in=old.spi_in))
    payloads: Payloads = []
    if mode == "transport":
        payloads.append(notify(NotifyType.USE_TRANSPORT_MODE))
    payloads += [
        (PayloadType.SA, SaPayload((proposals.negotiated_to_proposal(
            chosen, proposal.number, ProtocolId.ESP, spi_bytes(spi_in)),))),
        (PayloadType.NONCE, NoncePayload(nonce_r)),
    ]
    if response_ke is not None:
        payloads.append((PayloadType.KE, response_ke))
    payloads += [(PayloadType.TSI, tsi), (PayloadType.TSR, tsr)]
    return payloads


def _own_new_child_wins(sa: IkeSa) -> bool:
    """Whether the peer's request for a new Child SA crosses ours and ours goes first.

    When a Child SA expires at the same time on both sides (equal lifetimes, every rekey
    refused), both create a replacement; installing both would leave two SA pairs for the
    same selectors for good.  Only one side keeps its request: the original initiator of
    the IKE SA (both sides agree on it) answers the crossing request TEMPORARY_FAILURE, the
    other side accepts the initiator's.  The refused side's retry then finds a usable Child
    SA and is dropped (see `ChildCreate.can_start`).  This is simpler to get right than
    settling two installed pairs afterwards, and costs no wait in the usual case."""
    active = sa.active_task()
    return sa.initiator and isinstance(active, ChildCreate) and active.rekey_of is None


def _rekeyed_child(sa: IkeSa, message: Message) -> ChildSa | None:
    rekey = message.notify(NotifyType.REKEY_SA)
    if rekey is None:
        return None
    if rekey.protocol != ProtocolId.ESP:
        raise ChildSaNotFound(f"REKEY_SA for protocol {rekey.protocol}")
    old = sa.find_child_by_out(spi_int(rekey.spi))
    if old is None:
        raise ChildSaNotFound(f"no Child SA with SPI {rekey.spi.hex()}",
                              data=b"")
    return old


def _note_collision(sa: IkeSa, old: ChildSa, child: ChildSa) -> None:
    """The peer rekeys `old`: if we are rekeying it too, remember the SA its exchange
    created; if our rekey of it is only queued, drop ours (the peer's will do)."""
    active = sa.active_task()
    if isinstance(active, ChildCreate) and active.rekey_of is old:
        active.sibling = child
        sa.log("info", f"rekey collision on Child SA {old.spi_in:08x}")
        return
    sa.drop_queued(lambda t: isinstance(t, ChildCreate) and t.rekey_of is old)
    old.state = ChildState.REKEYED
