"""Answering the peer's requests on an existing IKE SA (after IKE_SA_INIT)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from core.ike.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.errors import IkeError, InvalidSyntax
from core.ike.events import DownReason
from core.ike.v2.message import Message
from core.ike.v2.payloads import DeletePayload, SaPayload
from core.ike.v2.state import IkeState
from core.ike.v2.tasks.common import Payloads

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa


def respond(sa: IkeSa, message: Message, raw: bytes, now: float) -> Payloads:
    exchange = message.exchange_type
    if exchange == ExchangeType.IKE_AUTH:
        if sa.state != IkeState.CONNECTING or sa.initiator:
            raise InvalidSyntax("IKE_AUTH on an established IKE SA")
        from core.ike.v2.tasks.ike_auth import respond_ike_auth

        return respond_ike_auth(sa, message, now)
    if sa.state == IkeState.CONNECTING:
        raise IkeError("request before the IKE SA was authenticated")
    if exchange == ExchangeType.CREATE_CHILD_SA:
        sa_payload = message.get(PayloadType.SA)
        if isinstance(sa_payload, SaPayload) and sa_payload.proposals and \
                sa_payload.proposals[0].protocol == ProtocolId.IKE:
            from core.ike.v2.tasks.ike_rekey import respond_ike_rekey

            return respond_ike_rekey(sa, message, now)
        from core.ike.v2.tasks.child_create import respond_create_child

        return respond_create_child(sa, message, now)
    if exchange == ExchangeType.INFORMATIONAL:
        return _respond_informational(sa, message, now)
    if exchange == ExchangeType.IKE_SA_INIT:
        raise InvalidSyntax("IKE_SA_INIT on an existing IKE SA")
    return []  # unknown exchange types get an empty answer


def _respond_informational(sa: IkeSa, message: Message, now: float) -> Payloads:
    from core.ike.v2.tasks.child_delete import respond_child_delete

    payloads: Payloads = []
    for payload in message.get_all(PayloadType.DELETE):
        if not isinstance(payload, DeletePayload):
            continue
        if payload.protocol == ProtocolId.IKE:
            # Close after our (empty) answer has gone out.  Child SAs that already moved
            # to a successor (rekey, or our side of a rekey collision) survive.
            theirs = sa.peer_ike_rekey
            if sa.state == IkeState.REKEYING and theirs is not None and not theirs.gone:
                # Rekey collision, and the peer deletes the old SA: the peer won.
                from core.ike.v2.tasks.ike_rekey import adopt

                adopt(sa, theirs)
            keep = sa.state == IkeState.REKEYED
            reason = DownReason.REPLACED if keep else DownReason.DELETED_BY_PEER
            sa.on_after_response(partial(_close, sa, reason, keep))
            return []
        if payload.protocol == ProtocolId.ESP:
            payloads += respond_child_delete(sa, payload, now)
    for note in message.notifies():
        if note.notify_type < 16384:
            name = NotifyType(note.notify_type).name if note.notify_type in \
                NotifyType._value2member_map_ else str(note.notify_type)
            sa.log("warning", f"peer reported {name}")
    return payloads


def _close(sa: IkeSa, reason: DownReason, keep_children: bool, now: float) -> None:
    sa.destroy(reason, now, keep_children=keep_children)
