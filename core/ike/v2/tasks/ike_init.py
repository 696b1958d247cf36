"""IKE_SA_INIT (RFC 7296 1.2, 2.6 cookies, 2.7 proposals, 2.23 NAT detection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.crypto.dh import KeyExchange, create_key_exchange
from core.crypto.keymat import derive_ike_keys
from core.ike.constants import DhGroup, ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.errors import IkeError, InvalidKePayload, InvalidSyntax, NoProposalChosen
from core.ike.events import DownReason
from core.ike.v2 import proposals
from core.ike.v2.message import Message
from core.ike.v2.payloads import KePayload, NoncePayload, Payload, SaPayload
from core.ike.v2.tasks.base import Task
from core.ike.v2.tasks.common import (
    NONCE_SIZE,
    Payloads,
    error_notify,
    nat_detection_payloads,
    nonce_of,
    notify,
    process_nat_detection,
)

if TYPE_CHECKING:
    from core.crypto.proposals import ProposalSpec
    from core.ike.v2.sa import IkeSa

MAX_INIT_RETRIES = 3


def ke_of(message: Message) -> KePayload:
    payload = message.get(PayloadType.KE)
    if not isinstance(payload, KePayload):
        raise InvalidSyntax("the message has no KE payload")
    return payload


def sa_of(message: Message) -> SaPayload:
    payload = message.get(PayloadType.SA)
    if not isinstance(payload, SaPayload):
        raise InvalidSyntax("the message has no SA payload")
    return payload


def install_ike_keys(sa: IkeSa, chosen: proposals.Negotiated, shared: bytes) -> None:
    assert chosen.prf is not None
    keys = derive_ike_keys(chosen.prf, chosen.encr_choice, chosen.integ, shared,
                           sa.nonce_i, sa.nonce_r, sa.spi_i, sa.spi_r)
    sa.install_keys(chosen, keys)


class IkeInit(Task):
    """The initiator's half; on success it queues IKE_AUTH."""

    exchange = ExchangeType.IKE_SA_INIT

    def __init__(self, sa: IkeSa) -> None:
        first = sa.policy.ike_proposals[0]
        self.group: DhGroup = first.dh[0]
        self.cookie: bytes | None = None
        self.key_exchange: KeyExchange | None = None
        self.retries = 0

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        if not sa.nonce_i:
            sa.nonce_i = sa.rng.bytes(NONCE_SIZE)
        if self.key_exchange is None or self.key_exchange.group != self.group:
            self.key_exchange = create_key_exchange(self.group, sa.rng)
        offer = _offer_with_group_first(sa.policy.ike_proposals, self.group)
        payloads: Payloads = []
        if self.cookie is not None:
            payloads.append(notify(NotifyType.COOKIE, self.cookie))
        payloads += [
            (PayloadType.SA, SaPayload(proposals.offer(offer, ProtocolId.IKE, b""))),
            (PayloadType.KE, KePayload(self.group, self.key_exchange.public_value)),
            (PayloadType.NONCE, NoncePayload(sa.nonce_i)),
        ]
        payloads += nat_detection_payloads(sa, bytes(8))
        return payloads

    def sent(self, sa: IkeSa, message: bytes) -> None:
        sa.init_request = message

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        cookie = message.notify(NotifyType.COOKIE)
        if cookie is not None and not message.get(PayloadType.SA):
            self._count_retry()
            self.cookie = cookie.data
            return True
        error = error_notify(message)
        if error is not None and error.notify_type == NotifyType.INVALID_KE_PAYLOAD:
            self._count_retry()
            if len(error.data) != 2:
                raise InvalidSyntax("INVALID_KE_PAYLOAD without a 2-octet group")
            wanted = int.from_bytes(error.data, "big")
            if not any(wanted in spec.dh for spec in sa.policy.ike_proposals):
                raise NoProposalChosen(f"peer wants DH group {wanted}, which we do not allow")
            sa.log("info", f"peer asked for DH group {DhGroup(wanted).name}; retrying")
            self.group = DhGroup(wanted)
            return True
        if error is not None:
            raise IkeError(f"peer answered IKE_SA_INIT with {_notify_name(error.notify_type)}",
                           notify=None if error.notify_type not in NotifyType._value2member_map_
                           else NotifyType(error.notify_type))
        if message.spi_r == bytes(8):
            raise InvalidSyntax("IKE_SA_INIT response with a zero responder SPI")
        sa_payload = sa_of(message)
        if len(sa_payload.proposals) != 1:
            raise NoProposalChosen("responder returned more than one proposal")
        offer = _offer_with_group_first(sa.policy.ike_proposals, self.group)
        chosen = proposals.accept_response(offer, sa_payload.proposals[0], ProtocolId.IKE,
                                           need_dh=True)
        ke = ke_of(message)
        if ke.group != chosen.dh or self.key_exchange is None or ke.group != self.group:
            raise InvalidSyntax("responder's KE group differs from the chosen group")
        shared = self.key_exchange.shared_secret(ke.data)
        sa.spi_r = message.spi_r
        sa.nonce_r = nonce_of(message)
        sa.init_response = raw
        install_ike_keys(sa, chosen, shared)
        process_nat_detection(sa, message)
        if sa.uses_nat_t:
            sa.float_to_nat_t()
        from core.ike.v2.tasks.ike_auth import IkeAuth

        sa.queue(IkeAuth(), first=True)
        return False

    def _count_retry(self) -> None:
        self.retries += 1
        if self.retries > MAX_INIT_RETRIES:
            raise IkeError("too many IKE_SA_INIT retries (COOKIE / INVALID_KE_PAYLOAD)")

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        reason = (DownReason.NO_PROPOSAL if error.notify == NotifyType.NO_PROPOSAL_CHOSEN
                  or isinstance(error, NoProposalChosen) else DownReason.PROTOCOL_ERROR)
        sa.destroy(reason, now, detail=str(error))


def _offer_with_group_first(specs: tuple[ProposalSpec, ...],
                            group: DhGroup) -> tuple[ProposalSpec, ...]:
    """Our proposals with `group` moved to the front of each DH list that has it, so the
    KE payload's group is the preferred one."""
    from dataclasses import replace

    result = []
    for spec in specs:
        if group in spec.dh:
            spec = replace(spec, dh=(group, *(g for g in spec.dh if g != group)))
        result.append(spec)
    return tuple(result)


def _notify_name(value: int) -> str:
    try:
        return NotifyType(value).name
    except ValueError:
        return f"notify {value}"


def respond_ike_sa_init(sa: IkeSa, message: Message, raw: bytes,
                        offers: tuple[ProposalSpec, ...], now: float) -> Payloads:
    """The responder's half: choose, derive keys, answer.  Raises IkeError to refuse
    (the endpoint answers it without keeping state)."""
    sa_payload = sa_of(message)
    proposal, chosen = proposals.select(offers, sa_payload.proposals, ProtocolId.IKE,
                                        need_dh=True)
    ke = ke_of(message)
    assert chosen.dh is not None
    if ke.group != chosen.dh:
        raise InvalidKePayload(chosen.dh)
    key_exchange = create_key_exchange(chosen.dh, sa.rng)
    shared = key_exchange.shared_secret(ke.data)
    sa.nonce_i = nonce_of(message)
    sa.nonce_r = sa.rng.bytes(NONCE_SIZE)
    sa.init_request = raw
    install_ike_keys(sa, chosen, shared)
    process_nat_detection(sa, message)
    payloads: Payloads = [
        (PayloadType.SA, SaPayload((proposals.negotiated_to_proposal(
            chosen, proposal.number, ProtocolId.IKE, b""),))),
        (PayloadType.KE, KePayload(chosen.dh, key_exchange.public_value)),
        (PayloadType.NONCE, NoncePayload(sa.nonce_r)),
    ]
    if any(n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP for n in message.notifies()):
        payloads += nat_detection_payloads(sa, sa.spi_r)
    return payloads
