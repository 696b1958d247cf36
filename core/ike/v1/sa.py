"""One ISAKMP SA (IKEv1 phase 1) with its quick modes, informational exchanges, DPD and
NAT-T keepalives (RFC 2408, 2409, 3706, 3947; sans-IO).

An `IsakmpSa` takes received messages and `now` and hands back datagrams, events and its
next timer deadline, like the IKEv2 `IkeSa`.  Each exchange keeps its own state and IV
chain: phase 1 (`phase1.Phase1`, message ID 0) and one `quick.QuickMode` per message ID.
Whoever sent a message that needs an answer retransmits it; a received copy of a message
already processed is answered with the cached reply.  Informational exchanges are
one-shot (`informational`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.crypto.ikev1 import CbcCipher, Ikev1Prf, Phase1Keys, phase2_iv
from core.crypto.random import RandomSource
from core.errors import DecodeError
from core.ike.constants import NAT_KEEPALIVE, NAT_T_PORT
from core.ike.datagram import Datagram, Outputs, on_wire
from core.ike.events import (
    Address,
    ChildSaDeleted,
    ChildSaOutboundReady,
    DownReason,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    IkeSaInfo,
    LogMessage,
)
from core.ike.policy import Identity, PeerPolicy
from core.ike.v1 import informational
from core.ike.v1.child import ChildSa, ChildState
from core.ike.v1.constants import ExchangeType, NotifyType, name_of
from core.ike.v1.errors import InvalidMessageId, IsakmpError, PeerRefused
from core.ike.v1.message import Message, decode_message, encode_message, last_block, peek_header
from core.ike.v1.payloads import PayloadList
from core.ike.v1.phase1 import Phase1
from core.ike.v1.proposals import Phase1Choice
from core.ike.v1.quick import QuickMode, respond_quick_mode
from core.ike.v2.state import IkeState

KEEPALIVE_INTERVAL = 20.0
REPLAY_HOLDOFF = 1.0  # seconds between two replays of the same cached answer
ZERO_COOKIE = bytes(8)
MAX_FINISHED_QUICK = 8  # finished quick modes kept to answer retransmissions
REPLACE_WAIT = 10.0  # seconds the side not replacing an expired IPsec SA waits to look again

__all__ = ["Datagram", "IkeState", "IsakmpSa", "SaState"]


# The IKEv2 states, so the daemon reads both engines alike.  IKEv1 uses CONNECTING,
# ESTABLISHED, REKEYED (replaced by a newer ISAKMP SA; waits for its DELETE or expiry) and
# DESTROYED.
SaState = IkeState


class Replayable(Protocol):
    last_in: bytes | None
    last_out: bytes | None
    replayed: tuple[bytes, float] | None


@dataclass
class Retransmit:
    message: bytes  # without the non-ESP marker
    sends: int
    next_at: float
    max_sends: int


class IsakmpSa(Outputs):
    def __init__(self, policy: PeerPolicy, *, initiator: bool, cky_i: bytes, cky_r: bytes,
                 local: Address, remote: Address, rng: RandomSource, now: float,
                 aggressive: bool) -> None:
        self.policy = policy
        self.candidates: tuple[PeerPolicy, ...] = (policy,)  # responder: who it may be
        self.initiator = initiator
        self.aggressive = aggressive
        self.cky_i = cky_i
        self.cky_r = cky_r
        self.local = local
        self.remote = remote
        self.rng = rng
        self.created_at = now
        self.state = SaState.CONNECTING
        # Keys, set by phase 1.
        self.choice: Phase1Choice | None = None
        self.prf: Ikev1Prf | None = None
        self.keys: Phase1Keys | None = None
        self.cipher: CbcCipher | None = None
        self.phase1_iv = b""  # the IV chain of phase 1; its final value seeds phase 2 IVs
        self.peer_id: Identity | None = None
        # NAT traversal (RFC 3947): None = not negotiated, else whether the peer uses a draft.
        self.natt_draft: bool | None = None
        self.nat_local = False
        self.nat_remote = False
        self.nat_forced = False
        # DPD (RFC 3706).
        self.peer_dpd = False
        self.dpd_seq = int.from_bytes(rng.bytes(4), "big") & 0x7FFFFFFF
        self.dpd_first_seq = self.dpd_seq + 1
        self.dpd_probes = 0
        self.dpd_next_at: float | None = None
        # Exchanges.
        self.phase1 = Phase1(self)
        self.quick: dict[int, QuickMode] = {}
        self.seen_informational: list[int] = []
        # Lifetimes and liveness.
        self.established_at: float | None = None
        self.rekey_at: float | None = None
        self.expire_at: float | None = None
        self.last_heard = now
        self.last_sent = now
        self.children: list[ChildSa] = []
        self.retire_children: list[tuple[float, ChildSa]] = []  # old SAs to delete after a rekey
        # When to look again whether an IPsec SA that expired without a successor needs a
        # new quick mode from us (the peer was to negotiate it: see `_replace_expired`).
        self.replace_check_at: float | None = None
        self.send_initial_contact = False
        self.initial_contact_received = False
        self.rekey_requested = False  # the endpoint starts a new phase 1 (IKEv1 has no rekey)
        self.rekey_failures = 0  # replacing phase 1s that failed in a row
        self.replaces: IsakmpSa | None = None  # the SA our new phase 1 replaces
        self.successor: IsakmpSa | None = None  # the SA that took over our IPsec SAs
        # SAs with the same peer that were negotiating while this one was: a collision.
        self.concurrent: list[IsakmpSa] = []
        # Set by the endpoint: finds an IPsec SA (by the peer's SPI) on a sibling SA.
        self.find_child_elsewhere: Callable[[int], tuple[IsakmpSa, ChildSa] | None] | None \
            = None
        # Outputs.
        self.datagrams: list[Datagram] = []
        self.events: list[IkeEvent] = []
        self.down_reason: DownReason | None = None

    # ------------------------------------------------------------------ identity ----
    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def our_cookie(self) -> bytes:
        return self.cky_i if self.initiator else self.cky_r

    @property
    def cookies(self) -> bytes:
        return self.cky_i + self.cky_r

    @property
    def gone(self) -> bool:
        return self.state == SaState.DESTROYED

    @property
    def is_established(self) -> bool:
        return self.state == SaState.ESTABLISHED

    @property
    def uses_nat_t(self) -> bool:
        return self.nat_local or self.nat_remote or self.nat_forced

    @property
    def spi_i(self) -> bytes:
        return self.cky_i

    @property
    def spi_r(self) -> bytes:
        return self.cky_r

    @property
    def negotiated(self) -> Phase1Choice | None:
        return self.choice

    @property
    def peer_id_text(self) -> str:
        return str(self.peer_id) if self.peer_id is not None else ""

    @property
    def exchange_mode(self) -> str:
        return "aggressive" if self.aggressive else "main"

    def info(self) -> IkeSaInfo:
        return IkeSaInfo(
            peer=self.name, ike_version=1, exchange_mode=self.exchange_mode,
            spi_i=self.cky_i.hex(), spi_r=self.cky_r.hex(), initiator=self.initiator,
            local=self.local, remote=self.remote, nat_local=self.nat_local,
            nat_remote=self.nat_remote, nat_forced=self.nat_forced,
            algorithms=self.choice.describe() if self.choice else "",
            established_at=self.established_at or self.created_at,
            rekey_at=self.rekey_at, expire_at=self.expire_at)

    # ------------------------------------------------------------------ crypto ------
    def new_message_id(self) -> int:
        while True:
            message_id = int.from_bytes(self.rng.bytes(4), "big")
            if message_id and message_id not in self.quick:
                return message_id

    def exchange_iv(self, message_id: int) -> bytes:
        assert self.prf is not None and self.cipher is not None
        return phase2_iv(self.prf, self.phase1_iv, message_id, self.cipher.block_size)

    def auth_hash(self, *parts: bytes) -> bytes:
        """prf(SKEYID_a, ...): HASH(1), HASH(2), HASH(3) of quick mode and informational."""
        assert self.prf is not None and self.keys is not None
        return self.prf.prf(self.keys.skeyid_a, *parts)

    def build(self, exchange: ExchangeType, message_id: int, payloads: PayloadList,
              iv: bytes | None = None) -> tuple[bytes, bytes]:
        """The encoded message and the IV after it (encrypted when `iv` is given)."""
        message = Message(self.cky_i, self.cky_r, exchange, message_id, payloads)
        if iv is None:
            return encode_message(message), b""
        assert self.cipher is not None
        data = encode_message(message, self.cipher, iv)
        return data, last_block(data, self.cipher)

    def open(self, data: bytes, iv: bytes) -> Message:
        return decode_message(data, self.cipher, iv)

    # ------------------------------------------------------------------ sending -----
    def emit(self, message: bytes, now: float) -> None:
        wire = on_wire(message, self.local)
        self.datagrams.append(Datagram(wire, self.local, self.remote))
        self.last_sent = now

    def retransmit_after(self, sent_before: int) -> float:
        timing = self.policy.timing
        base = timing.retransmit_timeout * timing.retransmit_base ** sent_before
        jitter = timing.retransmit_jitter * base
        return base + self.rng.uniform(-jitter, jitter)

    def send_tracked(self, message: bytes, now: float) -> Retransmit:
        """Sends a message that expects an answer; the caller keeps the returned record."""
        self.emit(message, now)
        return Retransmit(message, 1, now + self.retransmit_after(0),
                          self.policy.timing.retransmit_tries + 1)

    def retransmit(self, record: Retransmit, what: str, now: float) -> bool:
        """Resends `record` if due; False once every try is used up."""
        if now < record.next_at:
            return True
        if record.sends >= record.max_sends:
            return False
        self.log("debug", f"retransmitting {what} (send {record.sends + 1})")
        record.next_at = now + self.retransmit_after(record.sends)
        record.sends += 1
        self.emit(record.message, now)
        return True

    def replay(self, exchange: Replayable, what: str, now: float) -> None:
        """The peer sent its last message of `exchange` again: it missed our answer.
        Resend the cached answer, at most once a second (a network that duplicates every
        packet would otherwise make both sides echo each other forever)."""
        if exchange.last_out is None or exchange.last_in is None:
            return
        previous = exchange.replayed
        if previous is not None and previous[0] == exchange.last_in and \
                now - previous[1] < REPLAY_HOLDOFF:
            self.log("debug", f"ignored another copy of the peer's {what} message")
            return
        exchange.replayed = (exchange.last_in, now)
        self.log("debug", f"retransmitted {what} message: resending our answer")
        self.emit(exchange.last_out, now)

    def float_to_nat_t(self) -> None:
        """Move IKE to port 4500 (RFC 3947 4) once a NAT is detected or encapsulation forced."""
        if self.uses_nat_t and self.local.port != NAT_T_PORT:
            self.local = Address(self.local.host, NAT_T_PORT)
            self.remote = Address(self.remote.host, NAT_T_PORT)

    def heard(self, local: Address, remote: Address, now: float) -> None:
        """An authenticated message arrived: the peer lives; follow it to 4500 or a new
        NAT mapping."""
        self.last_heard = now
        self.dpd_probes = 0
        self.dpd_next_at = None
        if local.port == NAT_T_PORT and self.local.port != NAT_T_PORT:
            self.local, self.remote = local, remote
        elif self.nat_remote and remote != self.remote and local.port == self.local.port:
            self.log("info", f"peer moved from {self.remote} to {remote} (NAT mapping)")
            self.local, self.remote = local, remote

    # ------------------------------------------------------------------ receiving ---
    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        """An ISAKMP message for this SA (non-ESP marker removed)."""
        if self.gone:
            return
        try:
            header = peek_header(data)
            if header.exchange in (ExchangeType.MAIN, ExchangeType.AGGRESSIVE):
                if header.message_id != 0:
                    raise InvalidMessageId(f"phase 1 message with message ID {header.message_id}")
                self.phase1.receive(header, data, local, remote, now)
            elif header.exchange == ExchangeType.QUICK:
                self._receive_quick(header.message_id, data, local, remote, now)
            elif header.exchange == ExchangeType.INFORMATIONAL:
                informational.receive(self, header, data, local, remote, now)
            else:
                self.log("info", f"ignored an unsupported "
                         f"{name_of(ExchangeType, header.exchange)} exchange from {remote}")
                if self.is_established:
                    informational.send_notify(self, NotifyType.UNSUPPORTED_EXCHANGE_TYPE, now)
        except (IsakmpError, DecodeError) as error:
            self.log("debug", f"dropped a message from {remote}: {error}")

    def _receive_quick(self, message_id: int, data: bytes, local: Address, remote: Address,
                       now: float) -> None:
        exchange = self.quick.get(message_id)
        if exchange is not None:
            exchange.receive(data, local, remote, now)
        elif self.state in (SaState.ESTABLISHED, SaState.REKEYED):
            respond_quick_mode(self, message_id, data, local, remote, now)
        else:
            self.log("debug", f"dropped quick mode {message_id:#x}: phase 1 not complete")

    def add_quick(self, exchange: QuickMode) -> None:
        self.quick[exchange.message_id] = exchange
        finished = [m for m, q in self.quick.items() if q.finished]
        for message_id in finished[:-MAX_FINISHED_QUICK]:
            del self.quick[message_id]

    def report(self, error: IsakmpError, exchange: str) -> None:
        notify = error.notify.name if error.notify is not None else None
        if isinstance(error, PeerRefused) and error.notify is None:
            notify = str(error.notify_value)
        self.events.append(ExchangeFailed(self.name, exchange, str(error), notify))

    # ------------------------------------------------------------------ timers ------
    def next_timer(self) -> float | None:
        if self.gone:
            return None
        deadlines: list[float] = []
        record = self.phase1.retransmit_record
        if record is not None:
            deadlines.append(record.next_at)
        if self.state == SaState.CONNECTING and not self.initiator:
            deadlines.append(self.created_at + self.policy.timing.half_open_timeout)
        deadlines += [q.retransmit_record.next_at for q in self.quick.values()
                      if q.retransmit_record is not None]
        if self.state in (SaState.ESTABLISHED, SaState.REKEYED):
            for value in (self.rekey_at, self.expire_at, informational.dpd_due(self),
                          self._keepalive_due()):
                if value is not None:
                    deadlines.append(value)
            for child in self.children:
                if child.rekey_at is not None and child.state == ChildState.INSTALLED:
                    deadlines.append(child.rekey_at)
                deadlines.append(child.expire_at)
            deadlines += [at for at, _child in self.retire_children]
            if self.replace_check_at is not None:
                deadlines.append(self.replace_check_at)
        return min(deadlines) if deadlines else None

    def _keepalive_due(self) -> float | None:
        return self.last_sent + KEEPALIVE_INTERVAL if self.nat_local else None

    def handle_timer(self, now: float) -> None:
        if self.gone:
            return
        self.phase1.handle_timer(now)
        for exchange in list(self.quick.values()):
            if self.gone:
                return
            exchange.handle_timer(now)
        if self.gone:
            return
        if self.state == SaState.CONNECTING:
            if not self.initiator and now >= self.created_at + \
                    self.policy.timing.half_open_timeout:
                self.destroy(DownReason.TIMEOUT, now, detail="half-open SA timed out")
            return
        self._handle_lifetimes(now)
        if not self.gone:
            self._handle_children(now)
        if not self.gone:
            informational.handle_dpd(self, now)
        keepalive_at = self._keepalive_due()
        if not self.gone and keepalive_at is not None and now >= keepalive_at:
            self.datagrams.append(Datagram(NAT_KEEPALIVE, self.local, self.remote))
            self.last_sent = now

    def _handle_lifetimes(self, now: float) -> None:
        if self.expire_at is not None and now >= self.expire_at:
            self.expire_at = None
            if self.state == SaState.REKEYED:
                informational.send_ike_delete(self, now)  # the peer may still hold it
                self.destroy(DownReason.REPLACED, now, keep_children=True)
                return
            if not self.policy.passive:
                informational.send_delete_all(self, now)
            self.destroy(DownReason.EXPIRED, now)
            return
        if self.rekey_at is not None and now >= self.rekey_at:
            self.rekey_at = None
            if self.is_established and not self.policy.passive:
                self.rekey_requested = True

    def _handle_children(self, now: float) -> None:
        due = [child for at, child in self.retire_children if at <= now]
        self.retire_children = [(at, c) for at, c in self.retire_children if at > now]
        for child in due:
            self.delete_child(child, "rekeyed", now)
        if self.replace_check_at is not None and now >= self.replace_check_at:
            self.replace_check_at = None
            self._replace_if_bare(now, "still no IPsec SA from the peer")
        for child in list(self.children):
            if now >= child.expire_at:
                self.delete_child(child, "lifetime expired", now,
                                  quietly=self.policy.passive)
                self._replace_expired(child, now)
            elif child.rekey_at is not None and now >= child.rekey_at and \
                    child.state == ChildState.INSTALLED:
                child.rekey_at = None
                if self.is_established and not self.policy.passive:
                    self.start_quick_mode(now, rekey_of=child)

    def _replace_expired(self, child: ChildSa, now: float) -> None:
        """An IPsec SA ran out: if nothing took over from it (all its rekeys failed), a new
        quick mode brings the tunnel back.

        With equal lifetimes both sides' SAs expire together; were both to negotiate a
        replacement, two SA pairs would stay installed for the same selectors (and the
        responder would take later rekeys for the wrong one).  So only one side, chosen
        the same way on both, negotiates at once: the one whose inbound SPI of the expired
        pair is the lower.  The other looks again after REPLACE_WAIT and negotiates only
        if still nothing carries the traffic (the peer is passive, or its try failed)."""
        if self.policy.passive or self.state != SaState.ESTABLISHED:
            return
        if child.spi_in > child.spi_out:
            self.replace_later(now, f"IPsec SA {child.spi_in:08x} expired without a "
                               "successor: the peer negotiates a new one")
            return
        self._replace_if_bare(now, f"IPsec SA {child.spi_in:08x} expired without a successor")

    def replace_later(self, now: float, why: str) -> None:
        """Leave a new IPsec SA to the peer for REPLACE_WAIT, then negotiate one ourselves
        if still none carries the traffic."""
        if self.policy.passive or self.state != SaState.ESTABLISHED:
            return
        self.log("info", f"{why} (checking again in {REPLACE_WAIT:.0f} s)")
        self.replace_check_at = now + REPLACE_WAIT

    def _replace_if_bare(self, now: float, why: str) -> None:
        """Negotiate a new IPsec SA unless one carries the traffic or our quick mode is
        under way."""
        from core.ike.v1.quick import has_usable_child

        if self.policy.passive or self.state != SaState.ESTABLISHED or \
                has_usable_child(self) or \
                any(q.initiator and not q.finished for q in self.quick.values()):
            return
        self.log("warning", f"{why}: negotiating a new one")
        self.start_quick_mode(now)

    def note_inbound_traffic(self, now: float) -> None:
        """ESP arrived from the peer: it is alive (saves a DPD probe)."""
        self.last_heard = max(self.last_heard, now)

    # ------------------------------------------------------------------ children ----
    def start_quick_mode(self, now: float, rekey_of: ChildSa | None = None) -> None:
        exchange = QuickMode(self, self.new_message_id(), rekey_of=rekey_of)
        self.add_quick(exchange)
        exchange.start(now)

    def new_child_spi(self) -> int:
        taken = {c.spi_in for c in self.children}
        while True:
            spi = int.from_bytes(self.rng.bytes(4), "big")
            if spi >= 0x100 and spi not in taken:
                return spi

    def find_child_by_out(self, spi_out: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_out == spi_out), None)

    def delete_child(self, child: ChildSa, reason: str, now: float, *,
                     quietly: bool = False) -> None:
        """Send the DELETE for `child` (unless `quietly`) and uninstall it."""
        if child not in self.children:
            return
        if not quietly and self.state in (SaState.ESTABLISHED, SaState.REKEYED):
            informational.send_child_delete(self, [child], now)
        self.remove_child(child, reason)

    def remove_child(self, child: ChildSa, reason: str) -> None:
        if child not in self.children:
            return
        self.children.remove(child)
        self.retire_children = [(at, c) for at, c in self.retire_children if c is not child]
        self.events.append(ChildSaDeleted(self.name, child.spi_in, child.spi_out, reason))
        for successor in self.children:
            if successor.replaces is child:
                successor.replaces = None
                if not successor.outbound_installed:
                    successor.outbound_installed = True
                    self.events.append(ChildSaOutboundReady(self.name, successor.spi_in))

    # ------------------------------------------------------------------ lifecycle ---
    def mark_established(self, now: float, lifetime: float) -> None:
        from core.ike.events import IkeSaUp

        self.state = SaState.ESTABLISHED
        self.established_at = now
        self.last_heard = now
        self.expire_at = now + lifetime
        self.rekey_at = None if self.policy.passive else self.rekey_time(now, lifetime)
        self.events.append(IkeSaUp(self.info()))

    def rekey_time(self, now: float, lifetime: float) -> float:
        timing = self.policy.timing
        jitter = self.rng.uniform(0.0, timing.rekey_jitter * lifetime)
        return now + lifetime * (1.0 - timing.rekey_margin) - jitter

    def destroy(self, reason: DownReason, now: float, *, detail: str = "",
                keep_children: bool = False) -> None:
        if self.gone:
            return
        successor = self.successor
        if keep_children and successor is not None and not successor.gone:
            # IPsec SAs negotiated here after the hand-over move on as well.
            successor.children += self.children
            successor.retire_children += self.retire_children
            self.children, self.retire_children = [], []
        for child in list(self.children):
            self.remove_child(child, reason.value)
        self.state = SaState.DESTROYED
        self.down_reason = reason
        self.phase1.retransmit_record = None
        self.quick.clear()
        self.events.append(IkeSaDown(self.name, self.cky_i.hex(), self.cky_r.hex(), reason,
                                     detail))

    def log(self, level: str, message: str) -> None:
        self.events.append(LogMessage(self.name, level, message))



def reason_of(error: IsakmpError) -> DownReason:
    """The DownReason a failed phase 1 reports."""
    if error.notify == NotifyType.NO_PROPOSAL_CHOSEN:
        return DownReason.NO_PROPOSAL
    if error.notify in (NotifyType.AUTHENTICATION_FAILED, NotifyType.INVALID_HASH_INFORMATION,
                        NotifyType.INVALID_ID_INFORMATION):
        return DownReason.AUTH_FAILED
    return DownReason.PROTOCOL_ERROR
