"""One IKEv2 SA: keys, message IDs, the task manager, timers (RFC 7296; sans-IO).

An `IkeSa` takes received messages and `now`, and hands back datagrams, events and its
next timer deadline.  It never reads a clock or touches a socket.  Each exchange is a
task (`core.ike.v2.tasks`): the SA runs one request of its own at a time (window size 1),
retransmits it on a backoff schedule, answers the peer's requests in order and replays
its cached response to a retransmitted request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.crypto.cipher import IkeProtector, create_ike_protectors
from core.crypto.keymat import IkeKeys
from core.crypto.prf import Prf
from core.crypto.random import RandomSource
from core.errors import IntegrityError, PeerError
from core.ike.constants import (
    NAT_KEEPALIVE,
    NAT_T_PORT,
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from core.ike.datagram import Datagram as Datagram  # re-exported for callers
from core.ike.datagram import Outputs, on_wire
from core.ike.errors import IkeError
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
from core.ike.policy import PeerPolicy
from core.ike.v2.child import ChildSa, ChildState
from core.ike.v2.message import Message, decode_message, encode_message
from core.ike.v2.payloads import NotifyPayload, Payload
from core.ike.v2.proposals import Negotiated
from core.ike.v2.state import IkeState

if TYPE_CHECKING:
    from core.ike.v2.tasks.base import Task

KEEPALIVE_INTERVAL = 20.0
MAX_RESPONSE_CACHE = 1


@dataclass
class _Outstanding:
    task: Task
    message_id: int
    message: bytes  # without the non-ESP marker
    sends: int
    next_at: float


@dataclass
class _Deferred:
    at: float
    task: Task = field(compare=False)


class IkeSa(Outputs):
    """One IKE SA generation.  A rekey creates a successor `IkeSa` (see `spawned`)."""

    def __init__(
        self,
        policy: PeerPolicy,
        *,
        initiator: bool,
        spi_i: bytes,
        spi_r: bytes,
        local: Address,
        remote: Address,
        rng: RandomSource,
        now: float,
    ) -> None:
        self.policy = policy
        # Responder: the peers this SA may turn out to be; IKE_AUTH picks one by ID.
        self.candidates: tuple[PeerPolicy, ...] = (policy,)
        self.initiator = initiator  # we are the original initiator of this IKE SA
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.local = local
        self.remote = remote
        self.rng = rng
        self.created_at = now
        self.state = IkeState.CONNECTING
        # Keys, set by IKE_SA_INIT or by the rekey that created this SA.
        self.negotiated: Negotiated | None = None
        self.keys: IkeKeys | None = None
        self.prf: Prf | None = None
        self._protect_out: IkeProtector | None = None
        self._protect_in: IkeProtector | None = None
        self.nonce_i = b""
        self.nonce_r = b""
        self.init_request = b""  # RealMessage1, signed by the initiator's AUTH
        self.init_response = b""  # RealMessage2
        # NAT traversal (RFC 7296 2.23).
        self.nat_local = False
        self.nat_remote = False
        self.nat_forced = policy.nat_traversal == "force"
        # Message IDs and the task manager.
        self.next_request_id = 0
        self.next_peer_id = 0
        self._active: _Outstanding | None = None
        self._queue: deque[Task] = deque()
        self._deferred: list[_Deferred] = []
        self._cached_response: tuple[int, bytes] | None = None
        self._resent_early_for: int | None = None  # see _peer_is_ahead
        # Lifetimes.
        self.established_at: float | None = None
        self.rekey_at: float | None = None
        self.expire_at: float | None = None
        self.rekey_failures = 0  # our rekeys of this SA that failed in a row
        self.last_heard = now
        self.last_sent = now
        self.dpd_probes = 0
        self.children: list[ChildSa] = []
        self.peer_id_text = ""
        self.initial_contact_received = False
        # Set by the endpoint: whether another IKE SA with this peer is established.  Then
        # IKE_AUTH must not carry INITIAL_CONTACT, which would make the peer drop that SA.
        self.peer_has_other_sa: Callable[[], bool] = lambda: False
        # Outputs.
        self.datagrams: list[Datagram] = []
        self.events: list[IkeEvent] = []
        self.spawned: list[IkeSa] = []
        self.down_reason: DownReason | None = None
        # Collision bookkeeping, set by the responder halves of rekey tasks.
        self.peer_ike_rekey: IkeSa | None = None
        self._after_response: list[Callable[[float], None]] = []

    # ------------------------------------------------------------------ identity ----
    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def gone(self) -> bool:
        return self.state == IkeState.DESTROYED

    @property
    def is_established(self) -> bool:
        return self.state in (IkeState.ESTABLISHED, IkeState.REKEYING)

    @property
    def uses_nat_t(self) -> bool:
        return self.nat_local or self.nat_remote or self.nat_forced

    def info(self) -> IkeSaInfo:
        return IkeSaInfo(
            peer=self.name,
            ike_version=2,
            exchange_mode="ikev2",
            spi_i=self.spi_i.hex(),
            spi_r=self.spi_r.hex(),
            initiator=self.initiator,
            local=self.local,
            remote=self.remote,
            nat_local=self.nat_local,
            nat_remote=self.nat_remote,
            nat_forced=self.nat_forced,
            algorithms=self.negotiated.describe() if self.negotiated else "",
            established_at=self.established_at or self.created_at,
            rekey_at=self.rekey_at,
            expire_at=self.expire_at,
        )

    # ------------------------------------------------------------------ keys --------
    def install_keys(self, negotiated: Negotiated, keys: IkeKeys) -> None:
        assert negotiated.prf is not None
        self.negotiated = negotiated
        self.keys = keys
        self.prf = Prf(negotiated.prf)
        self._protect_out, self._protect_in = create_ike_protectors(
            negotiated.encr_choice, negotiated.integ, keys, self.initiator)

    def mark_established(self, now: float) -> None:
        self.state = IkeState.ESTABLISHED
        self.established_at = now
        self.last_heard = now
        lifetime = self.policy.ike_lifetime
        self.expire_at = now + lifetime
        self.rekey_at = None if self.policy.passive else self.rekey_time(now, lifetime)

    def rekey_time(self, now: float, lifetime: float) -> float:
        timing = self.policy.timing
        jitter = self.rng.uniform(0.0, timing.rekey_jitter * lifetime)
        return now + lifetime * (1.0 - timing.rekey_margin) - jitter

    # ------------------------------------------------------------------ sending -----
    def _wire(self, message: bytes) -> bytes:
        return on_wire(message, self.local)

    def _emit(self, message: bytes, now: float) -> None:
        self.datagrams.append(Datagram(self._wire(message), self.local, self.remote))
        self.last_sent = now

    def float_to_nat_t(self) -> None:
        """Move IKE to port 4500 (RFC 7296 2.23), once NAT-T is in use."""
        if self.local.port != NAT_T_PORT:
            self.local = Address(self.local.host, NAT_T_PORT)
            self.remote = Address(self.remote.host, NAT_T_PORT)

    def encode(self, exchange: ExchangeType, message_id: int, response: bool,
               payloads: list[tuple[int, Payload]]) -> bytes:
        message = Message(
            spi_i=self.spi_i,
            spi_r=self.spi_r,
            exchange_type=exchange,
            is_initiator=self.initiator,
            is_response=response,
            message_id=message_id,
            payloads=payloads,
        )
        if exchange == ExchangeType.IKE_SA_INIT:
            return encode_message(message)
        return encode_message(message, self._protect_out, self.rng)

    def queue(self, task: Task, *, first: bool = False) -> None:
        if first:
            self._queue.appendleft(task)
        else:
            self._queue.append(task)

    def defer(self, task: Task, at: float) -> None:
        self._deferred.append(_Deferred(at, task))

    def has_task(self, predicate: Callable[[Task], bool]) -> bool:
        tasks = list(self._queue) + [d.task for d in self._deferred]
        if self._active is not None:
            tasks.append(self._active.task)
        return any(predicate(t) for t in tasks)

    def active_task(self) -> Task | None:
        return self._active.task if self._active else None

    def hand_over(self, successor: IkeSa, predicate: Callable[[Task], bool]) -> None:
        """Move the queued and deferred tasks matching `predicate` to `successor`."""
        successor._queue.extend(t for t in self._queue if predicate(t))
        successor._deferred += [d for d in self._deferred if predicate(d.task)]
        self.drop_queued(predicate)

    def drop_queued(self, predicate: Callable[[Task], bool]) -> None:
        self._queue = deque(t for t in self._queue if not predicate(t))
        self._deferred = [d for d in self._deferred if not predicate(d.task)]

    def _start_next(self, now: float) -> None:
        while self._active is None and self._queue and self.state != IkeState.DESTROYED:
            task = self._queue.popleft()
            if not task.can_start(self):
                continue
            self._send_request(task, now)

    def _send_request(self, task: Task, now: float) -> None:
        payloads = task.build(self, now)
        message_id = self.next_request_id
        message = self.encode(task.exchange, message_id, False, payloads)
        task.sent(self, message)
        self._active = _Outstanding(task, message_id, message, 1,
                                    now + self._retransmit_delay(task, 0))
        self._emit(message, now)

    def _retransmit_delay(self, task: Task, sent_before: int) -> float:
        custom = task.retransmit_delay(self, sent_before)
        if custom is not None:
            return custom
        timing = self.policy.timing
        base = timing.retransmit_timeout * timing.retransmit_base**sent_before
        jitter = timing.retransmit_jitter * base
        return base + self.rng.uniform(-jitter, jitter)

    def _max_sends(self, task: Task) -> int:
        custom = task.max_sends(self)
        return custom if custom is not None else self.policy.timing.retransmit_tries + 1

    # ------------------------------------------------------------------ receiving ---
    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        """An IKE message for this SA (non-ESP marker removed)."""
        if self.state == IkeState.DESTROYED:
            return
        if len(data) > 19 and bool(data[19] & 0x08) == self.initiator:
            # RFC 7296 3.1: only the original initiator sets the I flag; a message from
            # the peer carrying our own role's flag is not the peer's.
            self.log("debug", f"dropped a message from {remote} with the wrong I flag")
            return
        try:
            header_response = bool(data[19] & 0x20) if len(data) > 19 else False
            message_id = int.from_bytes(data[20:24], "big") if len(data) >= 24 else -1
            if header_response:
                self._receive_response(data, message_id, local, remote, now)
            else:
                self._receive_request(data, message_id, local, remote, now)
        except PeerError as error:
            self.log("debug", f"dropped a malformed message from {remote}: {error}")
        self._start_next(now)

    def _decode(self, data: bytes) -> Message:
        """Decode a message on this SA.  Raises `Unauthenticated` for anything whose
        integrity was not proven (to be dropped silently, RFC 7296 2.21.2), and IkeError
        only for authenticated messages, which may be answered."""
        if self._protect_in is None:
            return decode_message(data)
        probe = _IntegrityProbe(self._protect_in)
        try:
            message = decode_message(data, probe)
        except IkeError as error:
            if probe.opened:
                raise
            raise Unauthenticated(f"unauthenticated and malformed: {error}") from None
        if not message.encrypted:
            raise Unauthenticated("an unprotected message on an IKE SA with keys")
        return message

    def _heard(self, local: Address, remote: Address, now: float) -> None:
        self.last_heard = now
        self.dpd_probes = 0
        if local.port == NAT_T_PORT and self.local.port != NAT_T_PORT:
            self.local, self.remote = local, remote  # the peer floated to 4500
        elif self.nat_remote and remote != self.remote:
            self.log("info", f"peer moved from {self.remote} to {remote} (NAT mapping)")
            self.local, self.remote = local, remote

    def _receive_response(self, data: bytes, message_id: int, local: Address,
                          remote: Address, now: float) -> None:
        active = self._active
        if active is None or message_id != active.message_id:
            self.log("debug", f"dropped a response with unexpected message ID {message_id}")
            return
        try:
            message = self._decode(data)
        except IntegrityError:
            self.log("debug", "dropped a response that failed its integrity check")
            return
        except Unauthenticated as error:
            self.log("debug", f"dropped a response: {error}")
            return
        except IkeError as error:
            if self._protect_in is None:
                # An unprotected IKE_SA_INIT response that does not parse proves nothing
                # (it may be forged): keep waiting for the real one (RFC 7296 2.21).
                self.log("debug", f"dropped a malformed IKE_SA_INIT response: {error}")
                return
            # An authenticated response we cannot parse ends the exchange, failed.
            self._active = None
            self.next_request_id += 1
            self._task_failed(active.task, error, now)
            return
        if message.exchange_type != active.task.exchange:
            self.log("debug", "dropped a response to a different exchange")
            return
        self._heard(local, remote, now)
        self._active = None
        task = active.task
        try:
            retry = task.process(self, message, data, now)
        except IkeError as error:
            self.next_request_id += 1
            self._task_failed(task, error, now)
            return
        if retry:
            # IKE_SA_INIT again with message ID 0 (COOKIE, INVALID_KE_PAYLOAD).
            self._send_request(task, now)
            return
        self.next_request_id += 1

    def _receive_request(self, data: bytes, message_id: int, local: Address,
                         remote: Address, now: float) -> None:
        if message_id == self.next_peer_id - 1 and self._cached_response is not None:
            cached_id, cached = self._cached_response
            if cached_id == message_id:
                self.log("debug", f"retransmitted request {message_id}: resending response")
                self._emit(cached, now)
                return
        if message_id != self.next_peer_id:
            self.log("debug", f"dropped a request with message ID {message_id}, "
                     f"expected {self.next_peer_id}")
            return
        exchange = data[18]
        if self._protect_in is None or exchange == ExchangeType.IKE_SA_INIT:
            # Before keys exist the peer has nothing to ask; IKE_SA_INIT requests belong
            # to the endpoint (retransmissions were answered from the cache above).
            self.log("debug", f"dropped an unexpected request (exchange {exchange})")
            return
        if exchange not in ExchangeType._value2member_map_:
            self.log("warning", f"dropped a request of unknown exchange type {exchange}")
            return
        try:
            message = self._decode(data)
        except IntegrityError:
            self.log("debug", "dropped a request that failed its integrity check")
            return
        except Unauthenticated as error:
            self.log("debug", f"dropped a request: {error}")
            return
        except IkeError as error:
            # Integrity held but the content is bad: answer with the error's notify.
            self._answer(ExchangeType(exchange), message_id, _error_payloads(error), now)
            self._report(error, ExchangeType(exchange).name, now)
            return
        if self.state == IkeState.CONNECTING and self.initiator:
            self._peer_is_ahead(message_id, now)  # (addresses unchanged: it may be a replay)
            return
        self._heard(local, remote, now)
        from core.ike.v2.tasks.responder import respond

        try:
            payloads = respond(self, message, data, now)
        except IkeError as error:
            payloads = _error_payloads(error)
            self._report(error, message.exchange_type.name if isinstance(
                message.exchange_type, ExchangeType) else str(message.exchange_type), now)
            self._answer(message.exchange_type, message_id, payloads, now)
            if self.state == IkeState.CONNECTING:
                self.destroy(_reason_of(error), now, detail=str(error))
            return
        self._answer(message.exchange_type, message_id, payloads, now)
        self.after_response(now)

    def _peer_is_ahead(self, message_id: int, now: float) -> None:
        """An authentic request while our IKE_AUTH is unanswered: the responder has
        finished it, and its response to us was lost.  The request stays unanswered (its
        message ID unused, the peer retransmits it) and IKE_AUTH goes again at once; the
        cached response completes the SA.  Tearing down would drop a tunnel that is up.
        Once per request (its copies and replays change nothing), outside the
        retransmission count and schedule."""
        active = self._active
        if active is None or message_id == self._resent_early_for:
            return
        self._resent_early_for = message_id
        self.log("debug", f"request {message_id} before the IKE_AUTH response: "
                 "left for the peer to retransmit; resending IKE_AUTH")
        self._emit(active.message, now)

    def after_response(self, now: float) -> None:
        """Run work that must follow our response (e.g. destroying after a DELETE)."""
        pending, self._after_response = self._after_response, []
        for action in pending:
            action(now)

    def on_after_response(self, action: Callable[[float], None]) -> None:
        self._after_response.append(action)

    def _answer(self, exchange: int, message_id: int, payloads: list[tuple[int, Payload]],
                now: float) -> None:
        message = self.encode(ExchangeType(exchange), message_id, True, payloads)
        self._cached_response = (message_id, message)
        self.next_peer_id = message_id + 1
        self._emit(message, now)

    def respond_first(self, message: bytes, now: float) -> None:
        """The IKE_SA_INIT response: not encrypted, cached for retransmitted requests."""
        self._cached_response = (0, message)
        self.next_peer_id = 1
        self._emit(message, now)

    def _task_failed(self, task: Task, error: IkeError, now: float) -> None:
        self._report(error, task.exchange.name, now)
        task.failed(self, error, now)

    def _report(self, error: IkeError, exchange: str, now: float) -> None:
        notify = error.notify.name if error.notify is not None else None
        self.events.append(ExchangeFailed(self.name, exchange, str(error), notify))

    # ------------------------------------------------------------------ timers ------
    def next_timer(self) -> float | None:
        if self.state == IkeState.DESTROYED:
            return None
        deadlines: list[float] = [d.at for d in self._deferred]
        if self._active is not None:
            deadlines.append(self._active.next_at)
        if self.state == IkeState.CONNECTING:
            deadlines.append(self.created_at + self.policy.timing.half_open_timeout)
        if self.is_established:
            for value in (self.rekey_at, self.expire_at, self._dpd_due(),
                          self._keepalive_due()):
                if value is not None:
                    deadlines.append(value)
            for child in self.children:
                if child.rekey_at is not None and child.state == ChildState.INSTALLED \
                        and not child.expired:
                    deadlines.append(child.rekey_at)
                if not child.expired:
                    deadlines.append(child.expire_at)
        return min(deadlines) if deadlines else None

    def _dpd_due(self) -> float | None:
        interval = self.policy.dpd_interval
        if interval <= 0 or self.policy.passive or self._active is not None:
            return None
        return self.last_heard + interval

    def _keepalive_due(self) -> float | None:
        if not self.nat_local:
            return None
        return self.last_sent + KEEPALIVE_INTERVAL

    def handle_timer(self, now: float) -> None:
        if self.state == IkeState.DESTROYED:
            return
        self._handle_retransmit(now)
        if self.gone:
            return
        due = [d for d in self._deferred if d.at <= now]
        if due:
            self._deferred = [d for d in self._deferred if d.at > now]
            for deferred in due:
                self.queue(deferred.task)
        if self.state == IkeState.CONNECTING:
            if now >= self.created_at + self.policy.timing.half_open_timeout:
                self.destroy(DownReason.TIMEOUT, now, detail="half-open SA timed out")
                return
        elif self.is_established:
            self._handle_lifetimes(now)
        self._start_next(now)

    def _handle_retransmit(self, now: float) -> None:
        active = self._active
        if active is None or now < active.next_at:
            return
        if active.sends >= self._max_sends(active.task):
            self._active = None
            active.task.timed_out(self, now)
            return
        self.log("debug", f"retransmitting {active.task.exchange.name} request "
                 f"{active.message_id} (send {active.sends + 1})")
        active.next_at = now + self._retransmit_delay(active.task, active.sends)
        active.sends += 1
        self._emit(active.message, now)

    def _handle_lifetimes(self, now: float) -> None:
        from core.ike.v2.tasks.child_create import ChildCreate
        from core.ike.v2.tasks.child_delete import ChildDelete
        from core.ike.v2.tasks.dpd import Dpd
        from core.ike.v2.tasks.ike_delete import IkeDelete
        from core.ike.v2.tasks.ike_rekey import IkeRekey

        if self.expire_at is not None and now >= self.expire_at:
            self.expire_at = None
            if self.policy.passive:
                self.destroy(DownReason.EXPIRED, now)
                return
            self.queue(IkeDelete(DownReason.EXPIRED), first=True)
        if self.rekey_at is not None and now >= self.rekey_at and self.state == \
                IkeState.ESTABLISHED:
            self.rekey_at = None
            if not self.has_task(lambda t: isinstance(t, IkeRekey)):
                self.queue(IkeRekey())
        for child in list(self.children):
            if now >= child.expire_at and not child.expired:
                replace = child.usable  # nothing else took over from it
                child.expired = True
                if self.policy.passive:
                    self.remove_child(child, "lifetime expired", now)
                    continue
                if child.state != ChildState.DELETING:
                    self.queue(ChildDelete(child, "lifetime expired"))
                if replace:
                    # Its rekeys all failed: a fresh Child SA brings the tunnel back (it
                    # starts only if no other usable Child SA is there by then).
                    self.log("warning", f"Child SA {child.spi_in:08x} expired without a "
                             "successor: creating a new one")
                    self.queue(ChildCreate(replacement=True))
            elif (child.rekey_at is not None and now >= child.rekey_at
                  and child.state == ChildState.INSTALLED and not child.expired):
                child.rekey_at = None
                self.queue(ChildCreate(rekey_of=child))
        dpd_at = self._dpd_due()
        if dpd_at is not None and now >= dpd_at and not self._queue and \
                not self.has_task(lambda t: isinstance(t, Dpd)):
            self.queue(Dpd())
        keepalive_at = self._keepalive_due()
        if keepalive_at is not None and now >= keepalive_at:
            self.datagrams.append(Datagram(NAT_KEEPALIVE, self.local, self.remote))
            self.last_sent = now

    def note_inbound_traffic(self, now: float) -> None:
        """ESP arrived from the peer: it is alive (saves a DPD probe)."""
        self.last_heard = max(self.last_heard, now)

    # ------------------------------------------------------------------ children ----
    def find_child_by_out(self, spi_out: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_out == spi_out), None)

    def find_child_by_in(self, spi_in: int) -> ChildSa | None:
        return next((c for c in self.children if c.spi_in == spi_in), None)

    def new_child_spi(self) -> int:
        taken = {c.spi_in for c in self.children}
        while True:
            spi = int.from_bytes(self.rng.bytes(4), "big")
            if spi >= 0x100 and spi not in taken:
                return spi

    def remove_child(self, child: ChildSa, reason: str, now: float) -> None:
        if child not in self.children:
            return
        self.children.remove(child)
        # Successors waiting for this SA to go may now send: their outbound SA goes in
        # before the old one comes out (make before break).
        for successor in self.children:
            if successor.replaces is child:
                successor.replaces = None
                if not successor.outbound_installed and not successor.redundant:
                    successor.outbound_installed = True
                    self.events.append(ChildSaOutboundReady(self.name, successor.spi_in))
        self.events.append(ChildSaDeleted(self.name, child.spi_in, child.spi_out, reason))

    # ------------------------------------------------------------------ teardown ----
    def destroy(self, reason: DownReason, now: float, *, detail: str = "",
                keep_children: bool = False) -> None:
        if self.state == IkeState.DESTROYED:
            return
        if not keep_children:
            for child in list(self.children):
                self.remove_child(child, reason.value, now)
        self.state = IkeState.DESTROYED
        self.down_reason = reason
        self._active = None
        self._queue.clear()
        self._deferred.clear()
        self.events.append(IkeSaDown(self.name, self.spi_i.hex(), self.spi_r.hex(), reason,
                                     detail))

    def log(self, level: str, message: str) -> None:
        self.events.append(LogMessage(self.name, level, message))



class Unauthenticated(PeerError):
    """A message whose integrity could not be checked: dropped without an answer."""


class _IntegrityProbe:
    """Wraps the inbound protector to tell whether a message's ICV held before a decode
    error: only authenticated messages may be answered or end an exchange."""

    __slots__ = ("_inner", "opened")

    def __init__(self, inner: IkeProtector) -> None:
        self._inner = inner
        self.opened = False

    def sealed_length(self, plaintext_len: int) -> int:
        return self._inner.sealed_length(plaintext_len)

    def seal(self, associated: bytes, plaintext: bytes, rng: RandomSource) -> bytes:
        return self._inner.seal(associated, plaintext, rng)

    def open(self, associated: bytes, body: bytes) -> bytes:
        plaintext = self._inner.open(associated, body)
        self.opened = True
        return plaintext


def _error_payloads(error: IkeError) -> list[tuple[int, Payload]]:
    if error.notify is None:
        return []
    return [(PayloadType.NOTIFY, NotifyPayload(ProtocolId.NONE, b"", error.notify,
                                               error.data))]


def _reason_of(error: IkeError) -> DownReason:
    if error.notify == NotifyType.AUTHENTICATION_FAILED:
        return DownReason.AUTH_FAILED
    if error.notify == NotifyType.NO_PROPOSAL_CHOSEN:
        return DownReason.NO_PROPOSAL
    return DownReason.PROTOCOL_ERROR
