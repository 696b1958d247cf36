"""Phase 1 with pre-shared keys: main mode (6 messages) and aggressive mode (3 messages),
RFC 2409 sections 5 and 5.4, with NAT-T (RFC 3947) and DPD (RFC 3706) vendor IDs.

    Main mode                                Aggressive mode
    I: HDR, SA, VID                          I: HDR, SA, KE, Ni, IDii, VID
    R: HDR, SA, VID                          R: HDR, SA, KE, Nr, IDir, HASH_R, VID, NAT-D
    I: HDR, KE, Ni, NAT-D                    I: HDR*, HASH_I, NAT-D
    R: HDR, KE, Nr, NAT-D
    I: HDR*, IDii, HASH_I [, N(INITIAL-CONTACT)]
    R: HDR*, IDir, HASH_R

    HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
    HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)

NAT-D = HASH(CKY-I | CKY-R | IP | Port): the first names the receiver as the sender sees
it, the second the sender itself.  The initiator moves to port 4500 for message 5 (main)
or 3 (aggressive) when a NAT is seen or encapsulation is forced.  Like strongSwan, the
third aggressive mode message is sent encrypted; both forms are accepted.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from core.crypto.dh import InvalidKeyExchange, KeyExchange, create_key_exchange
from core.crypto.ikev1 import (
    CbcCipher,
    Ikev1Prf,
    derive_phase1_keys,
    encryption_key,
    initial_iv,
    skeyid_psk,
)
from core.errors import DecodeError
from core.ike.events import Address, DownReason
from core.ike.policy import Identity
from core.ike.v1 import natt
from core.ike.v1.constants import (
    ExchangeType,
    LifeType,
    NotifyType,
    PayloadType,
    Phase1Attr,
    Phase1Encr,
    ProtocolId,
)
from core.ike.v1.errors import (
    AuthenticationFailed,
    InvalidIdInformation,
    InvalidKeyInformation,
    IsakmpError,
    MalformedMessage,
    NoProposalChosen,
    PeerRefused,
    UnexpectedMessage,
)
from core.ike.v1.exchange import Exchange
from core.ike.v1.ids import identity_of, identity_payload
from core.ike.v1.message import Header, Message, decode_message
from core.ike.v1.payloads import (
    Attribute,
    HashPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    PayloadList,
    SaPayload,
    VendorIdPayload,
    encode_attributes,
)
from core.ike.v1.proposals import (
    Phase1Choice,
    accept_phase1,
    min_lifetime,
    phase1_choices,
    phase1_offer,
    select_phase1,
)

if TYPE_CHECKING:
    from core.ike.v1.sa import IsakmpSa

NONCE_SIZE = 32
_Handler = Callable[[bytes, Address, Address, float], None]


class Step(enum.Enum):
    IDLE = "idle"
    I_MM1 = "sent MM1"
    I_MM3 = "sent MM3"
    I_MM5 = "sent MM5"
    R_MM2 = "sent MM2"
    R_MM4 = "sent MM4"
    I_AM1 = "sent AM1"
    R_AM2 = "sent AM2"
    DONE = "done"


class Phase1(Exchange):
    """The phase 1 exchange of one ISAKMP SA, for either role and either mode."""

    def __init__(self, sa: IsakmpSa) -> None:
        super().__init__(sa)
        self.step = Step.IDLE
        self.offered: list[Phase1Choice] = []
        self.sa_body = b""  # SAi_b: the initiator's SA payload body
        self.key_exchange: KeyExchange | None = None
        self.peer_public = b""
        self.nonce_i = b""
        self.nonce_r = b""
        self.id_body_i = b""
        self.id_body_r = b""
        self.peer_vids: set[bytes] = set()
        self.peer_lifetime: float | None = None  # responder: what the initiator proposed

    @property
    def exchange(self) -> ExchangeType:
        return ExchangeType.AGGRESSIVE if self.sa.aggressive else ExchangeType.MAIN

    # ------------------------------------------------------------------ initiator ---
    def start(self, now: float) -> None:
        sa, policy = self.sa, self.sa.policy
        choices = phase1_choices(policy.ike_proposals, policy.ike_lifetime)
        if sa.aggressive and choices:
            choices = [c for c in choices if c.group == choices[0].group]
        if not choices:
            self.fail(NoProposalChosen("no IKE proposal usable with IKEv1 (AES-CBC with "
                                       "SHA-1/SHA-2) is configured"), now, answer=False)
            return
        self.offered = choices
        offer = phase1_offer(choices)
        self.sa_body = offer.encode()
        payloads: PayloadList = [(PayloadType.SA, offer)]
        if sa.aggressive:
            self.key_exchange = create_key_exchange(choices[0].group, sa.rng)
            self.nonce_i = sa.rng.bytes(NONCE_SIZE)
            our_id = identity_payload(policy.local_id)
            self.id_body_i = our_id.encode()
            payloads += [(PayloadType.KE, KePayload(self.key_exchange.public_value)),
                         (PayloadType.NONCE, NoncePayload(self.nonce_i)),
                         (PayloadType.ID, our_id)]
        payloads += natt.our_vendor_ids(policy.nat_traversal)
        self._send(payloads, now, track=True)
        self.step = Step.I_AM1 if sa.aggressive else Step.I_MM1

    # ------------------------------------------------------------------ receiving ---
    def receive(self, header: Header, data: bytes, local: Address, remote: Address,
                now: float) -> None:
        if data == self.last_in:
            self.sa.replay(self, "phase 1", now)
            return
        if header.exchange != self.exchange:
            raise UnexpectedMessage(f"{ExchangeType(header.exchange).name} message on a "
                                    f"{self.exchange.name} mode SA")
        handler = self._handlers().get(self.step)
        if handler is None:
            raise UnexpectedMessage(f"phase 1 message after {self.step.value}")
        if self.sa.cky_r == bytes(8):
            self.sa.cky_r = header.cky_r
        try:
            handler(data, local, remote, now)
        except IsakmpError as error:
            self.fail(error, now)
            return
        except DecodeError as error:
            self.fail(MalformedMessage(str(error)), now)
            return
        self.last_in = data

    def _handlers(self) -> dict[Step, _Handler]:
        sa = self.sa
        if sa.initiator:
            return {Step.I_MM1: self._on_mm2, Step.I_MM3: self._on_mm4,
                    Step.I_MM5: self._on_mm6, Step.I_AM1: self._on_am2}
        if sa.aggressive:
            return {Step.IDLE: self._on_am1, Step.R_AM2: self._on_am3}
        return {Step.IDLE: self._on_mm1, Step.R_MM2: self._on_mm3, Step.R_MM4: self._on_mm5}

    def handle_timer(self, now: float) -> None:
        if not self._retransmit_if_due(f"{self.exchange.name} mode message", now):
            self.sa.report(IsakmpError("no answer to phase 1"), self.exchange.name)
            self.sa.destroy(DownReason.TIMEOUT, now,
                            detail=f"{self.exchange.name} mode got no answer")

    def fail(self, error: IsakmpError, now: float, *, answer: bool = True) -> None:
        from core.ike.v1 import informational
        from core.ike.v1.sa import reason_of

        sa = self.sa
        sa.report(error, self.exchange.name)
        if answer and error.notify is not None and not isinstance(error, PeerRefused):
            informational.send_notify(sa, error.notify, now)
        sa.destroy(reason_of(error), now, detail=str(error))

    # ------------------------------------------------------------------ main mode ---
    def _on_mm1(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = decode_message(data)
        offer = self._first_sa(message)
        self._note_vendor_ids(message)
        self._choose(offer)
        answer = self._answer_sa
        self._send([(PayloadType.SA, answer), *self._reply_vendor_ids()], now, track=False)
        self.step = Step.R_MM2

    def _on_mm2(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = decode_message(data)
        self._accept(self._first_sa(message))
        self._note_vendor_ids(message)
        choice = self.sa.choice
        assert choice is not None
        self.key_exchange = create_key_exchange(choice.group, self.sa.rng)
        self.nonce_i = self.sa.rng.bytes(NONCE_SIZE)
        payloads: PayloadList = [(PayloadType.KE, KePayload(self.key_exchange.public_value)),
                                 (PayloadType.NONCE, NoncePayload(self.nonce_i))]
        self._send(payloads + self._natd_payloads(), now, track=True)
        self.step = Step.I_MM3

    def _on_mm3(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = decode_message(data)
        self.peer_public = message.require(PayloadType.KE, KePayload).data
        self.nonce_i = message.require(PayloadType.NONCE, NoncePayload).data
        choice = self.sa.choice
        assert choice is not None
        self.key_exchange = create_key_exchange(choice.group, self.sa.rng)
        self.nonce_r = self.sa.rng.bytes(NONCE_SIZE)
        self._derive_keys()
        self._process_natd(message, local, remote)
        payloads: PayloadList = [(PayloadType.KE, KePayload(self.key_exchange.public_value)),
                                 (PayloadType.NONCE, NoncePayload(self.nonce_r))]
        self._send(payloads + self._natd_payloads(), now, track=False)
        self.step = Step.R_MM4

    def _on_mm4(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = decode_message(data)
        self.peer_public = message.require(PayloadType.KE, KePayload).data
        self.nonce_r = message.require(PayloadType.NONCE, NoncePayload).data
        self._derive_keys()
        self._process_natd(message, local, remote)
        self.sa.float_to_nat_t()
        our_id = identity_payload(self.sa.policy.local_id)
        self.id_body_i = our_id.encode()
        payloads: PayloadList = [(PayloadType.ID, our_id),
                                 (PayloadType.HASH, HashPayload(self._hash(initiator=True)))]
        self._send(payloads + self._initial_contact(), now, track=True, encrypt=True)
        self.step = Step.I_MM5

    def _on_mm5(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        sa = self.sa
        message = self._open(data)
        id_payload = message.require(PayloadType.ID, IdPayload)
        self.id_body_i = message.raw_body(PayloadType.ID)
        self._pick_policy(identity_of(id_payload), switch_keys=False)
        self._verify(message, self._hash(initiator=True), "HASH_I")
        sa.heard(local, remote, now)
        self._note_initial_contact(message)
        our_id = identity_payload(sa.policy.local_id)
        self.id_body_r = our_id.encode()
        self._send([(PayloadType.ID, our_id),
                    (PayloadType.HASH, HashPayload(self._hash(initiator=False)))],
                   now, track=False, encrypt=True)
        self._established(now)

    def _on_mm6(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = self._open(data)
        id_payload = message.require(PayloadType.ID, IdPayload)
        self.id_body_r = message.raw_body(PayloadType.ID)
        self._check_peer_id(identity_of(id_payload))
        self._verify(message, self._hash(initiator=False), "HASH_R")
        self.sa.heard(local, remote, now)
        self._established(now)

    # ------------------------------------------------------------------ aggressive --
    def _on_am1(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        sa = self.sa
        message = decode_message(data)
        offer = self._first_sa(message)
        self.peer_public = message.require(PayloadType.KE, KePayload).data
        self.nonce_i = message.require(PayloadType.NONCE, NoncePayload).data
        id_payload = message.require(PayloadType.ID, IdPayload)
        self.id_body_i = message.raw_body(PayloadType.ID)
        self._pick_policy(identity_of(id_payload), switch_keys=True)
        self._note_vendor_ids(message)
        self._choose(offer)
        choice = sa.choice
        assert choice is not None
        self.key_exchange = create_key_exchange(choice.group, sa.rng)
        self.nonce_r = sa.rng.bytes(NONCE_SIZE)
        self._derive_keys()
        our_id = identity_payload(sa.policy.local_id)
        self.id_body_r = our_id.encode()
        payloads: PayloadList = [
            (PayloadType.SA, self._answer_sa),
            (PayloadType.KE, KePayload(self.key_exchange.public_value)),
            (PayloadType.NONCE, NoncePayload(self.nonce_r)),
            (PayloadType.ID, our_id),
            (PayloadType.HASH, HashPayload(self._hash(initiator=False))),
            *self._reply_vendor_ids(), *self._natd_payloads()]
        self._send(payloads, now, track=True)
        self.step = Step.R_AM2

    def _on_am2(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = decode_message(data)
        self._accept(self._first_sa(message))
        self._note_vendor_ids(message)
        self.peer_public = message.require(PayloadType.KE, KePayload).data
        self.nonce_r = message.require(PayloadType.NONCE, NoncePayload).data
        id_payload = message.require(PayloadType.ID, IdPayload)
        self.id_body_r = message.raw_body(PayloadType.ID)
        self._check_peer_id(identity_of(id_payload))
        self._derive_keys()
        self._verify(message, self._hash(initiator=False), "HASH_R")
        self._process_natd(message, local, remote)
        self.sa.heard(local, remote, now)
        self.sa.float_to_nat_t()
        payloads: PayloadList = [(PayloadType.HASH, HashPayload(self._hash(initiator=True)))]
        payloads += self._natd_payloads() + self._initial_contact()
        self._send(payloads, now, track=False, encrypt=True)
        self._established(now)

    def _on_am3(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        message = self._open(data) if data[19] & 1 else decode_message(data)
        if not message.payloads or message.payloads[0][0] != PayloadType.HASH:
            raise AuthenticationFailed("aggressive mode message 3 does not start with HASH_I")
        self._verify(message, self._hash(initiator=True), "HASH_I")
        self._process_natd(message, local, remote)
        self._note_initial_contact(message)
        self.sa.heard(local, remote, now)
        self.last_out = None  # message 3 ends the exchange: copies of it need no answer
        self._established(now)

    # ------------------------------------------------------------------ pieces ------
    def _send(self, payloads: PayloadList, now: float, *, track: bool,
              encrypt: bool = False) -> None:
        sa = self.sa
        data, next_iv = sa.build(self.exchange, 0, payloads, sa.phase1_iv if encrypt else None)
        if encrypt:
            sa.phase1_iv = next_iv
        self._transmit(data, now, track=track)

    def _established(self, now: float) -> None:
        sa = self.sa
        self.step = Step.DONE
        self.retransmit_record = None
        self.key_exchange = None
        choice = sa.choice
        assert choice is not None
        lifetime = min_lifetime(choice.lifetime, sa.policy.ike_lifetime)
        sa.mark_established(now, lifetime)
        if not sa.initiator and (self.peer_lifetime is None or self.peer_lifetime > lifetime):
            self._send_responder_lifetime(lifetime, now)

    def _send_responder_lifetime(self, lifetime: float, now: float) -> None:
        """Tell the initiator our shorter ISAKMP SA lifetime (RFC 2407 4.6.3.1)."""
        from core.ike.v1 import informational

        attrs = (Attribute(Phase1Attr.LIFE_TYPE, LifeType.SECONDS),
                 Attribute.number(Phase1Attr.LIFE_DURATION, int(lifetime)))
        informational.send_notify(self.sa, NotifyType.RESPONDER_LIFETIME, now,
                                  data=encode_attributes(attrs))

    def _first_sa(self, message: Message) -> SaPayload:
        """RFC 2409 5: the SA payload precedes all others in phase 1."""
        if not message.payloads or message.payloads[0][0] != PayloadType.SA:
            raise MalformedMessage("phase 1 message does not start with an SA payload")
        payload = message.payloads[0][1]
        assert isinstance(payload, SaPayload)
        if not self.sa.initiator:
            self.sa_body = message.raw[0][4:]
        return payload

    def _choose(self, offer: SaPayload) -> None:
        sa = self.sa
        ours: list[Phase1Choice] = []
        for policy in sa.candidates:
            ours += [c for c in phase1_choices(policy.ike_proposals, policy.ike_lifetime)
                     if c not in ours]
        self._answer_sa, choice = select_phase1(ours, offer)
        self.peer_lifetime = choice.lifetime
        sa.choice = replace(choice, lifetime=min_lifetime(choice.lifetime,
                                                          sa.policy.ike_lifetime))

    def _accept(self, answer: SaPayload) -> None:
        choice = accept_phase1(self.offered, answer)
        self.sa.choice = replace(choice, lifetime=min_lifetime(choice.lifetime,
                                                               self.sa.policy.ike_lifetime))

    def _derive_keys(self) -> None:
        sa, choice, exchange = self.sa, self.sa.choice, self.key_exchange
        assert choice is not None and exchange is not None
        try:
            shared = exchange.shared_secret(self.peer_public)
        except InvalidKeyExchange as error:
            raise InvalidKeyInformation(str(error)) from None
        prf = Ikev1Prf(choice.hash_alg)
        skeyid = skeyid_psk(prf, sa.policy.psk, self.nonce_i, self.nonce_r)
        sa.keys = derive_phase1_keys(prf, skeyid, shared, sa.cky_i, sa.cky_r)
        sa.prf = prf
        sa.cipher = CbcCipher(Phase1Encr.AES_CBC,
                              encryption_key(prf, sa.keys.skeyid_e, choice.key_bits // 8))
        gxi, gxr = self._publics()
        sa.phase1_iv = initial_iv(prf, gxi, gxr, sa.cipher.block_size)

    def _publics(self) -> tuple[bytes, bytes]:
        assert self.key_exchange is not None
        ours = self.key_exchange.public_value
        return (ours, self.peer_public) if self.sa.initiator else (self.peer_public, ours)

    def _hash(self, *, initiator: bool) -> bytes:
        sa = self.sa
        assert sa.prf is not None and sa.keys is not None
        gxi, gxr = self._publics()
        if initiator:
            return sa.prf.prf(sa.keys.skeyid, gxi, gxr, sa.cky_i, sa.cky_r, self.sa_body,
                              self.id_body_i)
        return sa.prf.prf(sa.keys.skeyid, gxr, gxi, sa.cky_r, sa.cky_i, self.sa_body,
                          self.id_body_r)

    def _verify(self, message: Message, expected: bytes, what: str) -> None:
        received = message.require(PayloadType.HASH, HashPayload).data
        if not hmac.compare_digest(received, expected):
            raise AuthenticationFailed(f"{what} does not verify: the pre-shared keys differ")

    def _open(self, data: bytes) -> Message:
        """Decrypts a phase 1 message; garbage means the keys (the PSKs) differ."""
        sa = self.sa
        if not data[19] & 1:
            raise AuthenticationFailed("phase 1 identity message is not encrypted")
        try:
            message = sa.open(data, sa.phase1_iv)
        except (IsakmpError, DecodeError) as error:
            raise AuthenticationFailed(f"cannot decrypt the peer's identity ({error}): the "
                                       "pre-shared keys probably differ") from None
        sa.phase1_iv = message.next_iv
        return message

    def _pick_policy(self, identity: Identity, *, switch_keys: bool) -> None:
        """Responder: the configured peer this identity belongs to.  Before keys exist
        (aggressive mode) any candidate may be picked; afterwards only those sharing the
        pre-shared key already used."""
        sa = self.sa
        sa.peer_id = identity
        usable = [p for p in sa.candidates if switch_keys or p.psk == sa.policy.psk]
        exact = [p for p in usable if p.remote_id == identity]
        anyone = [p for p in usable if p.remote_id is None]
        if exact or anyone:
            sa.policy = (exact or anyone)[0]
            return
        raise InvalidIdInformation(f"no peer is configured with identity {identity}")

    def _check_peer_id(self, identity: Identity) -> None:
        self.sa.peer_id = identity
        wanted = self.sa.policy.remote_id
        if wanted is not None and identity != wanted:
            raise InvalidIdInformation(f"peer identified as {identity}, expected {wanted}")

    def _note_vendor_ids(self, message: Message) -> None:
        self.peer_vids |= {v.data for v in message.get_all(PayloadType.VENDOR_ID,
                                                            VendorIdPayload)}
        natt.note_vendor_ids(self.sa, self.peer_vids)

    def _reply_vendor_ids(self) -> PayloadList:
        return natt.reply_vendor_ids(self.sa, self.peer_vids)

    def _natd_payloads(self) -> PayloadList:
        return natt.natd_payloads(self.sa)

    def _process_natd(self, message: Message, local: Address, remote: Address) -> None:
        natt.process_natd(self.sa, message, local, remote)

    def _initial_contact(self) -> PayloadList:
        if not self.sa.send_initial_contact:
            return []
        return [(PayloadType.NOTIFY, NotifyPayload(NotifyType.INITIAL_CONTACT,
                                                   ProtocolId.ISAKMP, self.sa.cookies))]

    def _note_initial_contact(self, message: Message) -> None:
        if any(n.notify_type == NotifyType.INITIAL_CONTACT for n in message.notifies()):
            self.sa.initial_contact_received = True

    _answer_sa: SaPayload

