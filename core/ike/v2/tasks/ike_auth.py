"""IKE_AUTH with a pre-shared key, creating the first Child SA (RFC 7296 1.2, 2.15)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.ike.constants import AuthMethod, ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.errors import AuthenticationFailed, IkeError, InvalidSyntax, NoProposalChosen
from core.ike.events import ChildSaInstalled, DownReason, ExchangeFailed, IkeSaUp
from core.ike.policy import Identity, PeerPolicy
from core.ike.v2 import proposals
from core.ike.v2 import ts as ts_mod
from core.ike.v2.auth import auth_matches, id_payload_body, psk_auth, signed_octets
from core.ike.v2.message import Message
from core.ike.v2.payloads import AuthPayload, IdPayload, Payload, SaPayload, TsPayload
from core.ike.v2.tasks.base import Task
from core.ike.v2.tasks.common import (
    Payloads,
    error_notify,
    make_child,
    negotiate_ts,
    notify,
    proposed_ts,
    spi_bytes,
    spi_int,
    ts_pair,
    wants_transport,
)

if TYPE_CHECKING:
    from core.ike.v2.sa import IkeSa

# Errors about the Child SA that leave the IKE SA itself established (RFC 7296 1.2).
CHILD_ERRORS = frozenset({
    NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.TS_UNACCEPTABLE, NotifyType.SINGLE_PAIR_REQUIRED,
    NotifyType.INTERNAL_ADDRESS_FAILURE, NotifyType.FAILED_CP_REQUIRED,
    NotifyType.NO_ADDITIONAL_SAS,
})


def _auth_data(sa: IkeSa, psk: bytes, *, of_initiator: bool, identity: Identity) -> bytes:
    assert sa.prf is not None and sa.keys is not None
    body = id_payload_body(identity.id_type, identity.data)
    if of_initiator:
        octets = signed_octets(sa.prf, sa.init_request, sa.nonce_r, sa.keys.sk_pi, body)
    else:
        octets = signed_octets(sa.prf, sa.init_response, sa.nonce_i, sa.keys.sk_pr, body)
    return psk_auth(sa.prf, psk, octets)


def _identity_of(message: Message, payload_type: PayloadType) -> Identity | None:
    payload = message.get(payload_type)
    if payload is None:
        return None
    if not isinstance(payload, IdPayload):
        raise InvalidSyntax("bad identification payload")
    from core.ike.constants import IdType

    try:
        return Identity(IdType(payload.id_type), payload.data)
    except ValueError as error:
        raise AuthenticationFailed(f"unsupported ID type {payload.id_type}") from error


def _verify_auth(sa: IkeSa, message: Message, psk: bytes, identity: Identity,
                 *, of_initiator: bool) -> None:
    auth = message.get(PayloadType.AUTH)
    if not isinstance(auth, AuthPayload):
        raise AuthenticationFailed("no AUTH payload")
    if auth.method != AuthMethod.SHARED_KEY_MIC:
        raise AuthenticationFailed(f"peer uses auth method {auth.method}, we use a PSK")
    expected = _auth_data(sa, psk, of_initiator=of_initiator, identity=identity)
    if not auth_matches(expected, auth.data):
        raise AuthenticationFailed("AUTH payload did not verify: pre-shared keys differ")


def _identity_acceptable(policy: PeerPolicy, identity: Identity) -> bool:
    return policy.remote_id is None or policy.remote_id == identity


class IkeAuth(Task):
    """The initiator's half; follows IKE_SA_INIT."""

    exchange = ExchangeType.IKE_AUTH

    def __init__(self, initial_contact: bool = True) -> None:
        self.initial_contact = initial_contact
        self.child_spi = 0
        self.local_ts: TsPayload | None = None
        self.remote_ts: TsPayload | None = None

    def build(self, sa: IkeSa, now: float) -> list[tuple[int, Payload]]:
        policy = sa.policy
        self.child_spi = sa.new_child_spi()
        self.local_ts, self.remote_ts = proposed_ts(sa)
        payloads: Payloads = [(PayloadType.IDI, IdPayload(policy.local_id.id_type,
                                                          policy.local_id.data))]
        if self.initial_contact and not sa.peer_has_other_sa():
            payloads.append(notify(NotifyType.INITIAL_CONTACT))
        if policy.remote_id is not None:
            payloads.append((PayloadType.IDR, IdPayload(policy.remote_id.id_type,
                                                        policy.remote_id.data)))
        auth = _auth_data(sa, policy.psk, of_initiator=True, identity=policy.local_id)
        payloads.append((PayloadType.AUTH, AuthPayload(AuthMethod.SHARED_KEY_MIC, auth)))
        if policy.mode == "transport":
            payloads.append(notify(NotifyType.USE_TRANSPORT_MODE))
        payloads += [
            (PayloadType.SA, SaPayload(proposals.offer(
                policy.esp_proposals, ProtocolId.ESP, spi_bytes(self.child_spi),
                with_dh=False))),
            (PayloadType.TSI, self.local_ts),
            (PayloadType.TSR, self.remote_ts),
        ]
        return payloads

    def process(self, sa: IkeSa, message: Message, raw: bytes, now: float) -> bool:
        error = error_notify(message)
        if error is not None and error.notify_type not in CHILD_ERRORS:
            raise IkeError("peer refused IKE_AUTH",
                           notify=NotifyType(error.notify_type)
                           if error.notify_type in NotifyType._value2member_map_ else None)
        identity = _identity_of(message, PayloadType.IDR)
        if identity is None:
            raise AuthenticationFailed("response has no IDr payload")
        if not _identity_acceptable(sa.policy, identity):
            raise AuthenticationFailed(f"peer identified as '{identity}', expected "
                                       f"'{sa.policy.remote_id}'")
        _verify_auth(sa, message, sa.policy.psk, identity, of_initiator=False)
        sa.peer_id_text = str(identity)
        sa.mark_established(now)
        sa.events.append(IkeSaUp(sa.info()))
        if error is not None:
            raise IkeError(f"Child SA refused: {NotifyType(error.notify_type).name}",
                           notify=NotifyType(error.notify_type))
        self._install_child(sa, message, now)
        return False

    def _install_child(self, sa: IkeSa, message: Message, now: float) -> None:
        sa_payload = message.get(PayloadType.SA)
        if not isinstance(sa_payload, SaPayload) or len(sa_payload.proposals) != 1:
            raise NoProposalChosen("IKE_AUTH response lacks a single ESP proposal")
        proposal = sa_payload.proposals[0]
        chosen = proposals.accept_response(sa.policy.esp_proposals, proposal, ProtocolId.ESP,
                                           need_dh=False)
        tsi, tsr = ts_pair(message)
        assert self.local_ts is not None and self.remote_ts is not None
        ts_mod.check_subset(tuple(tsi.selectors), tuple(self.local_ts.selectors))
        ts_mod.check_subset(tuple(tsr.selectors), tuple(self.remote_ts.selectors))
        mode = "transport" if wants_transport(message) else "tunnel"
        if mode != sa.policy.mode:
            raise NoProposalChosen(f"peer agreed to {mode} mode, we want {sa.policy.mode}")
        child = make_child(sa, we_initiated=True, spi_in=self.child_spi,
                           spi_out=spi_int(proposal.spi), chosen=chosen, mode=mode,
                           local_ts=tsi, remote_ts=tsr, nonce_i=sa.nonce_i,
                           nonce_r=sa.nonce_r, shared_secret=None, now=now)
        sa.children.append(child)
        sa.events.append(ChildSaInstalled(child.info(sa.name, sa.local, sa.remote)))

    def failed(self, sa: IkeSa, error: IkeError, now: float) -> None:
        if sa.is_established:
            # The IKE SA stands but has no Child SA: a route-based tunnel without one is
            # useless, so close it; the endpoint re-establishes with backoff.
            from core.ike.v2.tasks.ike_delete import IkeDelete

            sa.queue(IkeDelete(DownReason.NO_PROPOSAL, detail=str(error)), first=True)
            return
        reason = (DownReason.AUTH_FAILED if error.notify == NotifyType.AUTHENTICATION_FAILED
                  else DownReason.PROTOCOL_ERROR)
        sa.destroy(reason, now, detail=str(error))


def respond_ike_auth(sa: IkeSa, message: Message, now: float) -> Payloads:
    """The responder's half.  Authentication failures are fatal to the IKE SA; Child SA
    problems are answered with their notify and leave the IKE SA up."""
    identity = _identity_of(message, PayloadType.IDI)
    if identity is None:
        raise AuthenticationFailed("request has no IDi payload")
    policy = _select_policy(sa, identity)
    if policy is None:
        raise AuthenticationFailed(f"no peer configured for identity '{identity}'")
    sa.policy = policy
    _verify_auth(sa, message, policy.psk, identity, of_initiator=True)
    sa.peer_id_text = str(identity)
    if message.notify(NotifyType.INITIAL_CONTACT) is not None:
        sa.initial_contact_received = True
    auth = _auth_data(sa, policy.psk, of_initiator=False, identity=policy.local_id)
    payloads: Payloads = [
        (PayloadType.IDR, IdPayload(policy.local_id.id_type, policy.local_id.data)),
        (PayloadType.AUTH, AuthPayload(AuthMethod.SHARED_KEY_MIC, auth)),
    ]
    sa.mark_established(now)
    sa.events.append(IkeSaUp(sa.info()))
    try:
        payloads += _respond_child(sa, message, now)
    except IkeError as error:
        sa.events.append(_child_refused(sa, error))
        if error.notify is not None:
            payloads.append(notify(error.notify, error.data))
    return payloads


def _child_refused(sa: IkeSa, error: IkeError) -> ExchangeFailed:
    return ExchangeFailed(sa.name, "IKE_AUTH", f"Child SA refused: {error}",
                          error.notify.name if error.notify else None)


def _respond_child(sa: IkeSa, message: Message, now: float) -> Payloads:
    sa_payload = message.get(PayloadType.SA)
    if not isinstance(sa_payload, SaPayload):
        raise NoProposalChosen("IKE_AUTH request without an SA payload")
    proposal, chosen = proposals.select(sa.policy.esp_proposals, sa_payload.proposals,
                                        ProtocolId.ESP, need_dh=False)
    mode = "transport" if wants_transport(message) else "tunnel"
    if mode != sa.policy.mode:
        raise NoProposalChosen(f"peer wants {mode} mode, we are configured for "
                               f"{sa.policy.mode}")
    tsi, tsr = negotiate_ts(sa, message)
    spi_in = sa.new_child_spi()
    child = make_child(sa, we_initiated=False, spi_in=spi_in, spi_out=spi_int(proposal.spi),
                       chosen=chosen, mode=mode, local_ts=tsr, remote_ts=tsi,
                       nonce_i=sa.nonce_i, nonce_r=sa.nonce_r, shared_secret=None, now=now)
    sa.children.append(child)
    sa.events.append(ChildSaInstalled(child.info(sa.name, sa.local, sa.remote)))
    payloads: Payloads = []
    if mode == "transport":
        payloads.append(notify(NotifyType.USE_TRANSPORT_MODE))
    payloads += [
        (PayloadType.SA, SaPayload((proposals.negotiated_to_proposal(
            chosen, proposal.number, ProtocolId.ESP, spi_bytes(spi_in)),))),
        (PayloadType.TSI, tsi),
        (PayloadType.TSR, tsr),
    ]
    return payloads


def _select_policy(sa: IkeSa, identity: Identity) -> PeerPolicy | None:
    return next((p for p in sa.candidates if _identity_acceptable(p, identity)), None)
