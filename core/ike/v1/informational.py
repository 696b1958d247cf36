"""Informational exchanges (RFC 2408 4.8, RFC 2409 5.7) and DPD (RFC 3706).

Once phase 1 is up, every informational message is encrypted under its own IV chain and
starts with HASH(1) = prf(SKEYID_a, M-ID | N/D ...).  Before that, only unprotected error
notifies travel (a refused proposal, a failed authentication); they end the negotiation.
Informational exchanges are one-way: nothing is retransmitted or acknowledged, apart from
DPD, whose R-U-THERE is answered by an R-U-THERE-ACK carrying the same sequence number.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from core.errors import DecodeError
from core.ike.events import Address, DownReason, DpdAnswered, DpdProbeSent, PeerDead
from core.ike.v1.constants import (
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    is_error_notify,
    name_of,
)
from core.ike.v1.errors import PeerRefused
from core.ike.v1.message import Header, Message, decode_message
from core.ike.v1.payloads import (
    DeletePayload,
    HashPayload,
    NotifyPayload,
    PayloadList,
    encode_chain,
)

if TYPE_CHECKING:
    from core.ike.v1.child import ChildSa
    from core.ike.v1.sa import IsakmpSa

MAX_SEEN = 64  # message IDs remembered to drop duplicated informational messages


def _protected(sa: IsakmpSa) -> bool:
    from core.ike.v1.sa import SaState

    return sa.cipher is not None and sa.state in (SaState.ESTABLISHED, SaState.REKEYED)


def send(sa: IsakmpSa, payloads: PayloadList, now: float) -> None:
    """One informational message: protected once phase 1 is up, plain before."""
    message_id = sa.new_message_id()
    if _protected(sa):
        digest = sa.auth_hash(message_id.to_bytes(4, "big"), encode_chain(payloads))
        data, _iv = sa.build(ExchangeType.INFORMATIONAL, message_id,
                             [(PayloadType.HASH, HashPayload(digest)), *payloads],
                             sa.exchange_iv(message_id))
    else:
        data, _iv = sa.build(ExchangeType.INFORMATIONAL, message_id, payloads)
    sa.emit(data, now)


def send_notify(sa: IsakmpSa, kind: NotifyType, now: float, *,
                protocol: ProtocolId = ProtocolId.ISAKMP, spi: bytes | None = None,
                data: bytes = b"") -> None:
    if spi is None:
        spi = sa.cookies if protocol == ProtocolId.ISAKMP else b""
    send(sa, [(PayloadType.NOTIFY, NotifyPayload(kind, protocol, spi, data))], now)


def send_child_delete(sa: IsakmpSa, children: list[ChildSa], now: float) -> None:
    spis = tuple(child.spi_in.to_bytes(4, "big") for child in children)
    send(sa, [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP, spis))], now)


def send_ike_delete(sa: IsakmpSa, now: float) -> None:
    if _protected(sa):
        send(sa, [(PayloadType.DELETE, DeletePayload(ProtocolId.ISAKMP, (sa.cookies,)))], now)


def send_delete_all(sa: IsakmpSa, now: float) -> None:
    """DELETE for every IPsec SA, then for the ISAKMP SA itself."""
    if not _protected(sa):
        return
    if sa.children:
        send_child_delete(sa, list(sa.children), now)
    send_ike_delete(sa, now)


# -- receiving ---------------------------------------------------------------------------------
def receive(sa: IsakmpSa, header: Header, data: bytes, local: Address, remote: Address,
            now: float) -> None:
    from core.ike.v1.sa import SaState

    if not header.encrypted:
        if sa.state == SaState.CONNECTING:
            _unprotected(sa, decode_message(data), now)
        else:
            sa.log("debug", f"ignored an unprotected informational message from {remote}")
        return
    if not _protected(sa):
        sa.log("debug", "dropped an encrypted informational message before phase 1 completed")
        return
    if header.message_id in sa.seen_informational:
        sa.log("debug", f"dropped a duplicated informational message {header.message_id:#x}")
        return
    message = sa.open(data, sa.exchange_iv(header.message_id))
    if not _hash_ok(sa, message):
        sa.log("warning", f"dropped an informational message from {remote} whose HASH(1) "
               "does not verify")
        return
    sa.seen_informational = [*sa.seen_informational[-MAX_SEEN + 1:], header.message_id]
    probing = sa.dpd_probes > 0
    sa.heard(local, remote, now)
    for kind, payload in message.payloads[1:]:
        if sa.gone:
            return
        if kind == PayloadType.DELETE and isinstance(payload, DeletePayload):
            _on_delete(sa, payload, now)
        elif kind == PayloadType.NOTIFY and isinstance(payload, NotifyPayload):
            _on_notify(sa, payload, probing, now)


def _hash_ok(sa: IsakmpSa, message: Message) -> bool:
    if not message.payloads or message.payloads[0][0] != PayloadType.HASH:
        return False
    payload = message.payloads[0][1]
    assert isinstance(payload, HashPayload)
    expected = sa.auth_hash(message.message_id.to_bytes(4, "big"), b"".join(message.raw[1:]))
    return hmac.compare_digest(payload.data, expected)


def _unprotected(sa: IsakmpSa, message: Message, now: float) -> None:
    """An error notify while phase 1 negotiates ends it (nothing else is trusted)."""
    for note in message.notifies():
        if is_error_notify(note.notify_type):
            sa.phase1.fail(PeerRefused(note.notify_type), now, answer=False)
            return
    sa.log("debug", "ignored an unprotected informational message without an error")


def _on_delete(sa: IsakmpSa, payload: DeletePayload, now: float) -> None:
    from core.ike.v1.child import ChildState
    from core.ike.v1.quick import has_usable_child
    from core.ike.v1.sa import SaState

    if payload.protocol == ProtocolId.ISAKMP:
        if sa.cookies in payload.spis:
            if sa.state == SaState.REKEYED:
                sa.destroy(DownReason.REPLACED, now, keep_children=True)
            else:
                sa.destroy(DownReason.DELETED_BY_PEER, now, detail="peer sent DELETE")
        return
    if payload.protocol not in (ProtocolId.ESP, ProtocolId.AH):
        return
    for spi in payload.spis:
        if len(spi) != 4:
            continue
        value = int.from_bytes(spi, "big")
        found = sa.find_child_by_out(value)
        owner = sa
        if found is None and sa.find_child_elsewhere is not None:
            match = sa.find_child_elsewhere(value)
            if match is not None:
                owner, found = match
        if found is None:
            sa.log("debug", f"peer deleted unknown IPsec SA {value:08x}")
            continue
        current = found.state in (ChildState.INSTALLED, ChildState.REKEYING)
        owner.remove_child(found, "deleted by peer")
        if current and not has_usable_child(owner):
            # The peer deleted the SA that carried the traffic (not one being replaced:
            # those we delete ourselves, and remove at once).  E.g. a passive responder
            # that never got our HASH(3) drops the SA that replaced the one we retired.
            # A route-based interface keeps its tunnel, so with nothing left we negotiate
            # a new one even when the peer meant it (strongSwan does so only with
            # close_action=restart; a peer closing for good deletes the ISAKMP SA too).
            # An active peer usually negotiates one itself right after its DELETE: wait a
            # little for it, so that two crossing quick modes do not leave two pairs.
            owner.replace_later(now, f"the peer deleted IPsec SA {found.spi_in:08x}, the "
                                "last one")


def _on_notify(sa: IsakmpSa, note: NotifyPayload, probing: bool, now: float) -> None:
    kind = note.notify_type
    if kind == NotifyType.R_U_THERE:
        if note.spi in (b"", sa.cookies) and len(note.data) == 4:
            send_notify(sa, NotifyType.R_U_THERE_ACK, now, data=note.data)
        return
    if kind == NotifyType.R_U_THERE_ACK:
        sequence = int.from_bytes(note.data[:4], "big") if len(note.data) == 4 else -1
        if probing and sa.dpd_first_seq <= sequence <= sa.dpd_seq:
            sa.events.append(DpdAnswered(sa.name))
        return
    if kind == NotifyType.INITIAL_CONTACT:
        sa.initial_contact_received = True
        return
    if kind == NotifyType.RESPONDER_LIFETIME:
        _responder_lifetime(sa, note)
        return
    if is_error_notify(kind):
        _error(sa, note, now)


def _responder_lifetime(sa: IsakmpSa, note: NotifyPayload) -> None:
    from core.buffer import Buffer
    from core.ike.v1.constants import LifeType, Phase1Attr
    from core.ike.v1.payloads import decode_attributes

    if note.protocol != ProtocolId.ISAKMP or sa.established_at is None:
        return
    try:
        attrs = decode_attributes(Buffer(note.data))
    except DecodeError:
        return
    life_type = None
    for attr in attrs:
        if attr.type == Phase1Attr.LIFE_TYPE:
            life_type = attr.as_int()
        elif attr.type == Phase1Attr.LIFE_DURATION and life_type == LifeType.SECONDS:
            expire = sa.established_at + attr.as_int()
            if sa.expire_at is not None and expire < sa.expire_at:
                sa.expire_at = expire
                if sa.rekey_at is not None:
                    sa.rekey_at = min(sa.rekey_at, sa.rekey_time(sa.established_at,
                                                                 float(attr.as_int())))


def _error(sa: IsakmpSa, note: NotifyPayload, now: float) -> None:
    """An error about one of our quick modes fails it; others are logged."""
    pending = [q for q in sa.quick.values() if q.initiator and not q.finished]
    spi = int.from_bytes(note.spi, "big") if len(note.spi) == 4 else None
    matching = [q for q in pending if spi is not None and q.spi_in == spi]
    if not matching and len(pending) == 1 and not note.spi:
        matching = pending
    if matching:
        matching[0].fail(PeerRefused(note.notify_type), now)
        return
    sa.log("warning", f"peer reported {name_of(NotifyType, note.notify_type)}")


# -- DPD (RFC 3706) ----------------------------------------------------------------------------
def dpd_due(sa: IsakmpSa) -> float | None:
    """When the next R-U-THERE (or the verdict) is due: after `dpd_interval` of silence
    from the peer, then every `dpd_interval` while probes go unanswered."""
    from core.ike.v1.sa import SaState

    policy = sa.policy
    if policy.dpd_interval <= 0 or policy.passive or not sa.peer_dpd or \
            sa.state != SaState.ESTABLISHED:
        return None
    if sa.dpd_probes and sa.dpd_next_at is not None:
        return sa.dpd_next_at
    return sa.last_heard + policy.dpd_interval


def handle_dpd(sa: IsakmpSa, now: float) -> None:
    due = dpd_due(sa)
    if due is None or now < due:
        return
    policy = sa.policy
    if sa.dpd_probes >= policy.dpd_retries + 1:
        sa.events.append(PeerDead(sa.name, now - sa.last_heard))
        sa.destroy(DownReason.PEER_DEAD, now, detail="no answer to R-U-THERE")
        return
    sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF
    if sa.dpd_probes == 0:
        sa.dpd_first_seq = sa.dpd_seq
    sa.dpd_probes += 1
    sa.dpd_next_at = now + max(policy.dpd_interval, 1.0)
    sa.events.append(DpdProbeSent(sa.name, sa.dpd_probes, policy.dpd_retries + 1))
    send_notify(sa, NotifyType.R_U_THERE, now, data=sa.dpd_seq.to_bytes(4, "big"))

