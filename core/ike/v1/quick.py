"""Quick mode (RFC 2409 5.5), commit-free, with PFS and the responder lifetime notify.

    I: HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]
    R: HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, N(RESPONDER-LIFETIME)]
    I: HDR*, HASH(3)

    HASH(1) = prf(SKEYID_a, M-ID | everything after HASH(1))
    HASH(2) = prf(SKEYID_a, M-ID | Ni_b | everything after HASH(2))
    HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)

Make-before-break: the responder installs the new SA inbound when it answers and outbound
once HASH(3) shows the initiator has it; the initiator installs it both ways on message 2.
A rekey's initiator then deletes the SA it replaced.  Each direction's KEYMAT uses the SPI
its receiver chose (`core.crypto.ikev1.quick_mode_keymat`), encryption key first.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from typing import TYPE_CHECKING

from core.crypto.dh import InvalidKeyExchange, KeyExchange, create_key_exchange
from core.crypto.ikev1 import quick_mode_keymat
from core.crypto.registry import encr_keymat_size, integ_keymat_size
from core.errors import DecodeError
from core.ike.events import Address, ChildSaInstalled, ChildSaOutboundReady, DownReason
from core.ike.v1.child import ChildSa, ChildState
from core.ike.v1.constants import ExchangeType, IpsecAttr, LifeType, NotifyType, PayloadType
from core.ike.v1.constants import ProtocolId as V1Protocol
from core.ike.v1.errors import (
    InvalidHashInformation,
    InvalidIdInformation,
    InvalidKeyInformation,
    IsakmpError,
    MalformedMessage,
    NoProposalChosen,
    PeerRefused,
    UnexpectedMessage,
)
from core.ike.v1.exchange import Exchange
from core.ike.v1.ids import Selector, host_selector, selector_of
from core.ike.v1.message import Message
from core.ike.v1.payloads import (
    Attribute,
    HashPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    PayloadList,
    SaPayload,
    decode_attributes,
    encode_attributes,
    encode_chain,
)
from core.ike.v1.proposals import (
    EspChoice,
    accept_esp,
    encap_mode,
    esp_offer,
    min_lifetime,
    pfs_group,
    select_esp,
)

if TYPE_CHECKING:
    from core.ike.v1.sa import IsakmpSa

NONCE_SIZE = 32


def _hash_first(message: Message) -> bytes:
    if not message.payloads or message.payloads[0][0] != PayloadType.HASH:
        raise InvalidHashInformation(f"{message.describe()} does not start with HASH")
    payload = message.payloads[0][1]
    assert isinstance(payload, HashPayload)
    return payload.data


def _seconds(notify: NotifyPayload) -> float | None:
    from core.buffer import Buffer

    life_type: int | None = None
    for attr in decode_attributes(Buffer(notify.data)):
        if attr.type == IpsecAttr.LIFE_TYPE:
            life_type = attr.as_int()
        elif attr.type == IpsecAttr.LIFE_DURATION and life_type == LifeType.SECONDS:
            return float(attr.as_int())
    return None


class QuickMode(Exchange):
    """One quick mode exchange (one message ID), for either role."""

    def __init__(self, sa: IsakmpSa, message_id: int, *, initiator: bool = True,
                 rekey_of: ChildSa | None = None) -> None:
        super().__init__(sa)
        self.message_id = message_id
        self.initiator = initiator
        self.rekey_of = rekey_of
        self.iv = sa.exchange_iv(message_id)
        self.nonce_i = b""
        self.nonce_r = b""
        self.key_exchange: KeyExchange | None = None
        self.spi_in = 0
        self.offer: SaPayload | None = None
        self.local_ts: Selector | None = None
        self.remote_ts: Selector | None = None
        self.finished = False
        self.child: ChildSa | None = None

    @property
    def _mid(self) -> bytes:
        return self.message_id.to_bytes(4, "big")

    # ------------------------------------------------------------------ initiator ---
    def start(self, now: float) -> None:
        sa, policy = self.sa, self.sa.policy
        old = self.rekey_of
        if old is not None:
            old.state = ChildState.REKEYING
            self.local_ts, self.remote_ts = old.local_sel, old.remote_sel
        else:
            self.local_ts, self.remote_ts = _proposed_selectors(sa)
        self.spi_in = sa.new_child_spi()
        self.nonce_i = sa.rng.bytes(NONCE_SIZE)
        group = pfs_group(policy.esp_proposals)
        mode = encap_mode(policy.mode == "tunnel", sa.uses_nat_t, bool(sa.natt_draft))
        try:
            self.offer = esp_offer(policy.esp_proposals, self.spi_in.to_bytes(4, "big"), mode,
                                   group, policy.child_lifetime)
        except NoProposalChosen as error:
            self.fail(error, now)
            return
        rest: PayloadList = [(PayloadType.SA, self.offer),
                             (PayloadType.NONCE, NoncePayload(self.nonce_i))]
        if group is not None:
            self.key_exchange = create_key_exchange(group, sa.rng)
            rest.append((PayloadType.KE, KePayload(self.key_exchange.public_value)))
        if self.local_ts is not None and self.remote_ts is not None:
            rest += [(PayloadType.ID, self.local_ts.payload()),
                     (PayloadType.ID, self.remote_ts.payload())]
        self._send(rest, self._mid, now, track=True)

    def _on_response(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        sa = self.sa
        message = self._open(data)
        expected = sa.auth_hash(self._mid, self.nonce_i, b"".join(message.raw[1:]))
        self._verify(message, expected, "HASH(2)")
        self.iv = message.next_iv
        sa.heard(local, remote, now)
        answer = message.require(PayloadType.SA, SaPayload)
        assert self.offer is not None
        choice, spi = accept_esp(self.offer, answer)
        self.nonce_r = message.require(PayloadType.NONCE, NoncePayload).data
        shared = self._shared_secret(message, choice)
        ids = message.get_all(PayloadType.ID, IdPayload)
        if len(ids) == 2 and self.local_ts is not None and self.remote_ts is not None:
            local_ts, remote_ts = selector_of(ids[0]), selector_of(ids[1])
            if not local_ts.within(self.local_ts) or not remote_ts.within(self.remote_ts):
                raise InvalidIdInformation(f"responder answered {local_ts.describe()} <-> "
                                           f"{remote_ts.describe()}, outside what we proposed")
            self.local_ts, self.remote_ts = local_ts, remote_ts
        elif ids:
            raise InvalidIdInformation(f"quick mode response with {len(ids)} ID payloads")
        lifetime = min_lifetime(choice.lifetime, sa.policy.child_lifetime)
        for note in message.notifies():
            seconds = _seconds(note) if note.notify_type == NotifyType.RESPONDER_LIFETIME \
                else None
            if seconds:
                sa.log("info", f"peer shortened the IPsec SA lifetime to {seconds:.0f} s")
                lifetime = min(lifetime, seconds)
        child = self._make_child(replace(choice, lifetime=lifetime), int.from_bytes(spi, "big"),
                                 shared, now)
        self.last_in = data
        final = sa.auth_hash(b"\x00", self._mid, self.nonce_i, self.nonce_r)
        self._send([(PayloadType.HASH, HashPayload(final))], b"", now, track=False, raw=True)
        self.finished = True
        old = self.rekey_of
        alive = old is not None and old in sa.children
        sa.children.append(child)
        sa.events.append(ChildSaInstalled(child.info(sa.name, sa.local, sa.remote),
                                          replaces_spi_in=old.spi_in if alive and old else None))
        if old is not None and alive:
            old.state = ChildState.REKEYED
            delay = sa.policy.timing.delete_old_child_after
            if delay > 0:
                sa.retire_children.append((now + delay, old))
            else:
                sa.delete_child(old, "rekeyed", now)

    # ------------------------------------------------------------------ responder ---
    def respond(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        sa, policy = self.sa, self.sa.policy
        message = self._open(data)
        self._verify(message, sa.auth_hash(self._mid, b"".join(message.raw[1:])), "HASH(1)")
        self.iv = message.next_iv
        sa.heard(local, remote, now)
        offer = message.require(PayloadType.SA, SaPayload)
        self.nonce_i = message.require(PayloadType.NONCE, NoncePayload).data
        ids = message.get_all(PayloadType.ID, IdPayload)
        self.remote_ts, self.local_ts = self._peer_selectors(ids)
        proposal, choice = select_esp(policy.esp_proposals, offer,
                                      tunnel=policy.mode == "tunnel",
                                      udp_allowed=sa.natt_draft is not None)
        if choice.group is not None:
            self.key_exchange = create_key_exchange(choice.group, sa.rng)
        shared = self._shared_secret(message, choice)
        self.spi_in = sa.new_child_spi()
        self.nonce_r = sa.rng.bytes(NONCE_SIZE)
        answer = SaPayload((replace(proposal, spi=self.spi_in.to_bytes(4, "big")),))
        rest: PayloadList = [(PayloadType.SA, answer),
                             (PayloadType.NONCE, NoncePayload(self.nonce_r))]
        if self.key_exchange is not None:
            rest.append((PayloadType.KE, KePayload(self.key_exchange.public_value)))
        rest += [(PayloadType.ID, payload) for payload in ids]
        proposed = choice.lifetime
        lifetime = min_lifetime(proposed, policy.child_lifetime)
        if proposed is None or proposed > lifetime:
            attrs = (Attribute(IpsecAttr.LIFE_TYPE, LifeType.SECONDS),
                     Attribute.number(IpsecAttr.LIFE_DURATION, int(lifetime)))
            rest.append((PayloadType.NOTIFY, NotifyPayload(
                NotifyType.RESPONDER_LIFETIME, V1Protocol.ESP,
                self.spi_in.to_bytes(4, "big"), encode_attributes(attrs))))
        child = self._make_child(replace(choice, lifetime=lifetime),
                                 int.from_bytes(proposal.spi, "big"), shared, now)
        self.last_in = data
        self._send(rest, self._mid + self.nonce_i, now, track=True)
        child.outbound_installed = False
        old = _same_selectors(sa, child)
        if old is not None:
            child.replaces = old
            old.state = ChildState.REKEYED  # the peer rekeys it: ours is not needed
            old.rekey_at = None
        sa.children.append(child)
        self.child = child
        sa.events.append(ChildSaInstalled(child.info(sa.name, sa.local, sa.remote),
                                          outbound=False,
                                          replaces_spi_in=old.spi_in if old else None))

    def _on_final(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        sa = self.sa
        message = self._open(data)
        self._verify(message, sa.auth_hash(b"\x00", self._mid, self.nonce_i, self.nonce_r),
                     "HASH(3)")
        self.iv = message.next_iv
        sa.heard(local, remote, now)
        self.last_in = data
        self.last_out = None  # HASH(3) ends the exchange: copies of it need no answer
        self.retransmit_record = None
        self.finished = True
        child = self.child
        if child is not None and child in sa.children and not child.outbound_installed:
            child.outbound_installed = True
            sa.events.append(ChildSaOutboundReady(sa.name, child.spi_in))

    # ------------------------------------------------------------------ both --------
    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        if data == self.last_in:
            self.sa.replay(self, f"quick mode {self.message_id:#x}", now)
            return
        if self.finished:
            raise UnexpectedMessage(f"quick mode {self.message_id:#x} is already complete")
        try:
            if self.initiator:
                self._on_response(data, local, remote, now)
            else:
                self._on_final(data, local, remote, now)
        except IsakmpError as error:
            self.fail(error, now)
        except DecodeError as error:
            self.fail(MalformedMessage(str(error)), now)

    def handle_timer(self, now: float) -> None:
        if self._retransmit_if_due(f"quick mode {self.message_id:#x}", now):
            return
        self.fail(IsakmpError(f"quick mode {self.message_id:#x} got no answer"), now,
                  timed_out=True)

    def fail(self, error: IsakmpError, now: float, *, timed_out: bool = False) -> None:
        from core.ike.v1 import informational
        from core.ike.v1.sa import reason_of

        sa = self.sa
        sa.report(error, ExchangeType.QUICK.name)
        self.finished = True
        self.retransmit_record = None
        if error.notify is not None and not isinstance(error, PeerRefused) and not timed_out:
            informational.send_notify(sa, error.notify, now, protocol=V1Protocol.ESP,
                                      spi=self.spi_in.to_bytes(4, "big") if self.spi_in
                                      else b"")
        if not self.initiator:
            if self.child is not None:
                replaced = self.child.replaces
                if replaced is not None and replaced in sa.children and \
                        replaced.state == ChildState.REKEYED:
                    # Its successor never got confirmed: the old SA carries on (the peer
                    # may still delete it, which then leaves us to renegotiate).
                    replaced.state = ChildState.INSTALLED
                # The peer installed it both ways and may send on it: tell it we do not.
                sa.delete_child(self.child, "quick mode not confirmed", now)
                renegotiate_if_bare(sa, now, "no IPsec SA left after an unconfirmed "
                                    "quick mode")
            return
        old = self.rekey_of
        owner = _owner_of(sa, old) if old is not None else None
        if old is not None and owner is not None:
            if old.state == ChildState.REKEYING:
                old.state = ChildState.INSTALLED  # it carries on; try again before it expires
            retry_rekey_later(owner, old, now)
            return
        if not has_usable_child(sa):
            # No IPsec SA is left (the first one failed, or the one we rekeyed expired
            # meanwhile): close the ISAKMP SA so the endpoint re-establishes the peer.
            if timed_out:
                sa.destroy(DownReason.TIMEOUT, now, detail=str(error))
            else:
                informational.send_delete_all(sa, now)
                sa.destroy(reason_of(error), now, detail=str(error))

    def _send(self, rest: PayloadList, hash_prefix: bytes, now: float, *, track: bool,
              raw: bool = False) -> None:
        sa = self.sa
        payloads = rest if raw else [
            (PayloadType.HASH, HashPayload(sa.auth_hash(hash_prefix, encode_chain(rest)))),
            *rest]
        data, self.iv = sa.build(ExchangeType.QUICK, self.message_id, payloads, self.iv)
        self._transmit(data, now, track=track)

    def _open(self, data: bytes) -> Message:
        if not data[19] & 1:
            raise MalformedMessage("quick mode message is not encrypted")
        message = self.sa.open(data, self.iv)
        _hash_first(message)
        return message

    @staticmethod
    def _verify(message: Message, expected: bytes, what: str) -> None:
        if not hmac.compare_digest(_hash_first(message), expected):
            raise InvalidHashInformation(f"{what} does not verify")

    def _shared_secret(self, message: Message, choice: EspChoice) -> bytes | None:
        ke = message.get(PayloadType.KE, KePayload)
        if choice.group is None:
            if ke is not None:
                raise NoProposalChosen("KE payload without a PFS group")
            return None
        if ke is None or self.key_exchange is None:
            raise NoProposalChosen("PFS negotiated but the KE payload is missing")
        try:
            return self.key_exchange.shared_secret(ke.data)
        except InvalidKeyExchange as error:
            raise InvalidKeyInformation(str(error)) from None

    def _peer_selectors(self, ids: list[IdPayload]) -> tuple[Selector, Selector]:
        """Responder: (initiator's side, our side), checked against what we allow."""
        sa, policy = self.sa, self.sa.policy
        if len(ids) == 2:
            theirs, ours = selector_of(ids[0]), selector_of(ids[1])
        elif not ids:
            implied_theirs, implied_ours = host_selector(sa.remote.host), \
                host_selector(sa.local.host)
            if implied_theirs is None or implied_ours is None:
                raise InvalidIdInformation("quick mode without IDs between IPv6 hosts")
            theirs, ours = implied_theirs, implied_ours
        else:
            raise InvalidIdInformation(f"quick mode with {len(ids)} ID payloads")
        if policy.mode == "transport":
            if theirs.start != theirs.end or ours.start != ours.end:
                raise InvalidIdInformation("transport mode IDs must name single hosts")
            return theirs, ours
        allowed_remote = [Selector.of_network(n) for n in policy.remote_ts]
        allowed_local = [Selector.of_network(n) for n in policy.local_ts]
        if not any(theirs.within(a) for a in allowed_remote) or \
                not any(ours.within(a) for a in allowed_local):
            raise InvalidIdInformation(f"peer proposed {theirs.describe()} <-> "
                                       f"{ours.describe()}, outside what we allow")
        return theirs, ours

    def _make_child(self, choice: EspChoice, spi_out: int, shared: bytes | None,
                    now: float) -> ChildSa:
        from core.ike.events import ChildSaKeys

        sa = self.sa
        assert sa.prf is not None and sa.keys is not None
        assert self.local_ts is not None and self.remote_ts is not None
        encr = encr_keymat_size(choice.encr, choice.key_bits)
        length = encr + integ_keymat_size(choice.integ)
        keymat_in, keymat_out = (
            quick_mode_keymat(sa.prf, sa.keys.skeyid_d, V1Protocol.ESP, spi, self.nonce_i,
                              self.nonce_r, length, shared) for spi in (self.spi_in, spi_out))
        keys = ChildSaKeys(encr_in=keymat_in[:encr], integ_in=keymat_in[encr:],
                           encr_out=keymat_out[:encr], integ_out=keymat_out[encr:])
        lifetime = choice.lifetime or sa.policy.child_lifetime
        self.key_exchange = None
        return ChildSa(
            spi_in=self.spi_in, spi_out=spi_out, choice=choice, local_sel=self.local_ts,
            remote_sel=self.remote_ts, created_at=now,
            rekey_at=None if sa.policy.passive else sa.rekey_time(now, lifetime),
            expire_at=now + lifetime, keys=keys)


def retry_rekey_later(sa: IsakmpSa, child: ChildSa, now: float) -> None:
    """Our quick mode rekeying `child` failed: try again after a backoff, before it
    expires (when it is replaced by a new quick mode if nothing else took over)."""
    from core.ike.rekey import next_try_after_failure

    if sa.policy.passive or child.state != ChildState.INSTALLED:
        return
    child.rekey_failures += 1
    child.rekey_at = next_try_after_failure(sa.rng, child.rekey_failures, child.expire_at, now,
                                            sa.log, f"IPsec SA {child.spi_in:08x}")


def has_usable_child(sa: IsakmpSa) -> bool:
    """Whether an IPsec SA carries (or is about to carry) the peer's traffic."""
    return any(c.state in (ChildState.INSTALLED, ChildState.REKEYING) for c in sa.children)


def renegotiate_if_bare(sa: IsakmpSa, now: float, why: str) -> None:
    """With no IPsec SA left (the peer's quick mode never got confirmed, or the peer
    deleted the one carrying the traffic), negotiate one ourselves, unless we are passive
    or a quick mode of ours is under way."""
    from core.ike.v1.sa import SaState

    if sa.policy.passive or sa.state != SaState.ESTABLISHED or has_usable_child(sa) or \
            any(q.initiator and not q.finished for q in sa.quick.values()):
        return
    sa.log("warning", f"{why}: negotiating one")
    sa.start_quick_mode(now)


def _owner_of(sa: IsakmpSa, child: ChildSa) -> IsakmpSa | None:
    """The ISAKMP SA that holds `child` now (it moves to a replacing phase 1)."""
    holder: IsakmpSa | None = sa
    while holder is not None:
        if child in holder.children:
            return holder
        holder = holder.successor
    return None


def respond_quick_mode(sa: IsakmpSa, message_id: int, data: bytes, local: Address,
                       remote: Address, now: float) -> None:
    """A quick mode message 1 with a new message ID."""
    from core.ike.v1 import informational

    exchange = QuickMode(sa, message_id, initiator=False)
    try:
        exchange.respond(data, local, remote, now)
    except (IsakmpError, DecodeError) as error:
        failure = error if isinstance(error, IsakmpError) else MalformedMessage(str(error))
        sa.report(failure, ExchangeType.QUICK.name)
        if failure.notify is not None:
            informational.send_notify(sa, failure.notify, now, protocol=V1Protocol.ESP)
        return
    sa.add_quick(exchange)


def _proposed_selectors(sa: IsakmpSa) -> tuple[Selector | None, Selector | None]:
    """(local, remote) IDs we propose: the configured networks (0.0.0.0/0 for route-based
    tunnels), or the outer hosts in transport mode (no IDs between IPv6 hosts)."""
    policy = sa.policy
    if policy.mode == "transport":
        return host_selector(sa.local.host), host_selector(sa.remote.host)
    return Selector.of_network(policy.local_ts[0]), Selector.of_network(policy.remote_ts[0])


def _same_selectors(sa: IsakmpSa, child: ChildSa) -> ChildSa | None:
    """An installed SA with the same selectors: the one a peer's quick mode replaces."""
    for other in sa.children:
        if other.state in (ChildState.INSTALLED, ChildState.REKEYING) and \
                other.local_sel == child.local_sel and other.remote_sel == child.remote_sel:
            return other
    return None


