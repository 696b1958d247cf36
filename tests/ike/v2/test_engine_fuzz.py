"""Property tests: mutated copies of every message of a good exchange, fed to both roles.

A scripted run of two endpoints (IKE_SA_INIT, IKE_AUTH, a Child SA rekey from each side
with its DELETE, liveness checks, an IKE SA rekey with its DELETE) is replayed.  At one
delivery that hypothesis picks, mutated copies of the message in flight go to its receiver
just before the real one: bit flips, byte replacements, truncation, extension, lying
length fields, payloads swapped or forged without protection, old messages replayed,
wrong SPIs, message IDs and flags.

Properties:
- no exception escapes `Ikev2Endpoint.receive` / `handle_timer`, and no message storm;
- a mutation the receiver can tell from the real message without trusting it (every
  change to a protected message; a change to an IKE_SA_INIT message that breaks its
  syntax or its routing fields) leaves the run as it was: the tunnel is up at the end and
  no SA that came up went down;
- whatever was injected, the tunnel is up again once the endpoints have had time to
  retransmit, time out and re-establish, and no half-open SA is left behind.

A second property plays a peer that holds the keys and misbehaves: it decrypts a protected
message, mangles the inner payloads and re-seals them.

The default example count keeps the suite fast; for a long run:
    RBIPSEC_FUZZ_EXAMPLES=5000 pytest tests/ike/v2/test_engine_fuzz.py
(examples are then drawn at random instead of from the fixed derandomized sequence).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from core.buffer import Buffer
from core.crypto.cipher import IkeProtector, create_ike_protectors
from core.crypto.random import RandomSource, SeededRandomSource
from core.errors import PeerError
from core.ike.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.events import (
    Address,
    ChildSaInstalled,
    DownReason,
    IkeEvent,
    IkeSaDown,
    IkeSaUp,
)
from core.ike.policy import PeerPolicy
from core.ike.v2.child import ChildState
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.header import HEADER_LENGTH, peek_header
from core.ike.v2.message import Message, decode_message, encode_message
from core.ike.v2.payloads import (
    DeletePayload,
    NotifyPayload,
    Payload,
    UnknownPayload,
    pull_payload_chain,
    push_payload_chain,
)
from core.ike.v2.sa import Datagram, IkeSa
from core.ike.v2.state import IkeState
from tests.ike.v2.pair import Pair, mirror, policy

_LONG_RUN = "RBIPSEC_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("RBIPSEC_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # CI runs a fixed sequence and reports a failing example as found (shrinking one takes
    # minutes); a long run explores at random and shrinks what it finds.
    derandomize=not _LONG_RUN,
    phases=tuple(Phase) if _LONG_RUN else (Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Long enough for a full retransmission schedule (~165 s), the half-open timeout and a
# re-establishment with backoff.
RECOVERY_SECONDS = 600.0
SK = PayloadType.SK


# -- the tapped pair ------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """A datagram the pair hands to `receiver` ("a" or "b")."""

    receiver: str
    data: bytes
    local: Address
    remote: Address


Forge = Callable[[Delivery, list[Delivery]], list[bytes]]


@dataclass
class Tap:
    """Counts deliveries and, at the deliveries `at` selects, asks `forge` for datagrams
    to inject before the real one (or instead of it, with `swallow_real`)."""

    at: Callable[[int], bool] = lambda index: False
    forge: Forge | None = None
    swallow_real: bool = False
    count: int = 0
    history: list[Delivery] = field(default_factory=list)
    injected: list[bytes] = field(default_factory=list)

    def __call__(self, delivery: Delivery) -> tuple[list[bytes], bool]:
        """(datagrams to deliver first, whether the real one follows)."""
        extras: list[bytes] = []
        chosen = self.forge is not None and self.at(self.count)
        if chosen and self.forge is not None:
            extras = self.forge(delivery, list(self.history))
            self.injected += extras
        self.count += 1
        self.history.append(delivery)
        return extras, not (chosen and self.swallow_real)


@dataclass(frozen=True)
class Reaction:
    """What an endpoint did with one injected datagram."""

    data: bytes
    sent: list[Datagram]
    events: list[IkeEvent]


class TappedEndpoint(Ikev2Endpoint):
    """An endpoint whose deliveries pass a `Tap`.  It records its reaction to every
    injected datagram and remembers every IKE SA that was its current one (for the keys
    a misbehaving peer would hold)."""

    def __init__(
        self, name: str, policies: Iterable[PeerPolicy], rng: RandomSource, tap: Tap, **limits: int
    ) -> None:
        super().__init__(policies, rng, **limits)
        self.name = name
        self.tap = tap
        self.seen_sas: dict[tuple[bytes, bytes], IkeSa] = {}
        self.reactions: list[Reaction] = []

    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        extras, deliver_real = self.tap(Delivery(self.name, data, local, remote))
        for extra in extras:
            sent, events = len(self.datagrams), len(self.events)
            super().receive(extra, local, remote, now)
            self.reactions.append(Reaction(extra, self.datagrams[sent:], self.events[events:]))
            self._remember()
        if deliver_real:
            super().receive(data, local, remote, now)
            self._remember()

    def _remember(self) -> None:
        sa = self.current_sa("peer")
        if sa is not None and sa.keys is not None:
            self.seen_sas[(sa.spi_i, sa.spi_r)] = sa


class FuzzPair(Pair):
    def __init__(self, tap: Tap, **limits: int) -> None:
        base = policy()
        super().__init__(base, mirror(base))
        self.tap = tap
        self.a.endpoint = TappedEndpoint("a", [base], SeededRandomSource(7), tap)
        self.b.endpoint = TappedEndpoint("b", [mirror(base)], SeededRandomSource(8), tap, **limits)
        self.most_half_open = 0

    def endpoint(self, name: str) -> TappedEndpoint:
        endpoint = (self.a if name == "a" else self.b).endpoint
        assert isinstance(endpoint, TappedEndpoint)
        return endpoint

    def deliver(self, rounds: int = 100) -> None:
        super().deliver(rounds)
        # Every datagram was delivered: the endpoints settled, nothing ping-pongs forever.
        assert not self.a.endpoint.datagrams and not self.b.endpoint.datagrams, "storm"
        self.most_half_open = max(
            self.most_half_open, self.a.endpoint.half_open_count, self.b.endpoint.half_open_count
        )


def run_script(pair: Pair) -> None:
    """The good exchange every mutation is taken from."""
    pair.connect()
    pair.a.endpoint.rekey("peer", pair.now)  # CREATE_CHILD_SA from the initiator ...
    pair.deliver()
    pair.advance(1)
    pair.b.endpoint.rekey("peer", pair.now)  # ... and from the responder
    pair.deliver()
    pair.advance(25)  # a liveness check (dpd_interval 20 s)
    pair.a.endpoint.rekey("peer", pair.now, ike=True)  # IKE SA rekey, DELETE of the old
    pair.deliver()
    pair.advance(2)


def tunnel_problems(pair: Pair, *, strict: bool = True) -> list[str]:
    """Why the tunnel is not up and consistent on both sides ([] when it is).

    Strict: the installed Child SAs pair up one to one.  Otherwise it is enough that one
    Child SA exists on both sides, in whatever state (after a peer's garbage an SA may
    linger on one side, or wait for a DELETE that never comes, until it expires)."""
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    if sa_a is None or sa_b is None:
        return [f"no current IKE SA (a: {sa_a is not None}, b: {sa_b is not None})"]
    problems = []
    if not (sa_a.is_established and sa_b.is_established):
        problems.append(f"IKE SA states {sa_a.state} / {sa_b.state}")
    if (sa_a.spi_i, sa_a.spi_r) != (sa_b.spi_i, sa_b.spi_r):
        problems.append("the two current IKE SAs differ")
    live_a = {c.spi_in: c for c in sa_a.children if c.state == ChildState.INSTALLED}
    live_b = {c.spi_out: c for c in sa_b.children if c.state == ChildState.INSTALLED}
    if strict and (not live_a or live_a.keys() != live_b.keys()):
        problems.append(f"Child SAs do not pair up: {sorted(live_a)} vs {sorted(live_b)}")
    if not strict:
        all_a = {c.spi_in for c in sa_a.children}
        all_b = {c.spi_out for c in sa_b.children}
        if not all_a & all_b:
            problems.append(f"no Child SA on both sides: {sorted(all_a)} vs {sorted(all_b)}")
    for spi, child in live_a.items():
        if spi in live_b and child.keys.encr_in != live_b[spi].keys.encr_out:
            problems.append(f"Child SA {spi:08x} has different keys on each side")
    return problems


def unplanned_downs(pair: Pair) -> list[IkeSaDown]:
    """IkeSaDown events for SAs that had come up, other than their planned replacement."""
    downs = []
    for side in (pair.a, pair.b):
        up = {(e.info.spi_i, e.info.spi_r) for e in side.of(IkeSaUp)}
        downs += [
            e
            for e in side.of(IkeSaDown)
            if (e.spi_i, e.spi_r) in up and e.reason != DownReason.REPLACED
        ]
    return downs


def _clean_run() -> FuzzPair:
    pair = FuzzPair(Tap())
    run_script(pair)
    return pair


CLEAN = _clean_run()
DELIVERIES = CLEAN.tap.count


# -- mutations ------------------------------------------------------------------------
def _u32(value: int) -> bytes:
    return (value & 0xFFFFFFFF).to_bytes(4, "big")


def _set_length(data: bytes) -> bytes:
    return data[:24] + _u32(len(data)) + data[28:] if len(data) >= 28 else data


def payload_header_offsets(data: bytes) -> list[int]:
    """Offsets of the generic payload headers of the outer chain, as far as they parse."""
    offsets: list[int] = []
    position, next_type = HEADER_LENGTH, data[16] if len(data) > 16 else 0
    while next_type != 0 and position + 4 <= len(data):
        offsets.append(position)
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 4 or next_type == SK:
            break
        next_type = data[position]
        position += length
    return offsets


def forged_payload_lists(
    delivery: Delivery, history: list[Delivery]
) -> st.SearchStrategy[list[tuple[int, Payload]]]:
    """Plausible plaintext content an attacker without keys could send."""
    esp_spis = [
        e.info.spi_in.to_bytes(4, "big")
        for side in (CLEAN.a, CLEAN.b)
        for e in side.of(ChildSaInstalled)
    ]
    notify = st.builds(
        NotifyPayload,
        st.sampled_from([ProtocolId.NONE, ProtocolId.ESP]),
        st.just(b""),
        st.sampled_from(list(NotifyType)) | st.integers(0, 65535),
        st.binary(max_size=8),
    )
    return st.one_of(
        st.just([]),
        st.just([(PayloadType.DELETE, DeletePayload(ProtocolId.IKE, ()))]),
        st.lists(st.sampled_from(esp_spis), min_size=1, max_size=2).map(
            lambda spis: [(PayloadType.DELETE, DeletePayload(ProtocolId.ESP, tuple(spis)))]
        ),
        notify.map(lambda n: [(PayloadType.NOTIFY, n)]),
        st.integers(49, 255).map(lambda t: [(t, UnknownPayload(t, True, b"x"))]),
    )


# Three groups drawn with equal weight, so that the few kinds that forge or misroute a
# message are not drowned by the many that damage its bytes.
MUTATIONS: dict[str, list[str]] = {
    "bytes": [
        "flip",
        "replace",
        "truncate",
        "extend",
        "header_length",
        "payload_length",
        "next_payload",
    ],
    "header": ["spi", "message_id", "flags", "exchange", "version"],
    "forgery": ["reorder", "forge_plaintext", "replay"],
}


def mutate_once(
    source: st.DataObject, data: bytes, delivery: Delivery, history: list[Delivery]
) -> bytes:
    group = source.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation group")
    kind = source.draw(st.sampled_from(MUTATIONS[group]), label="mutation")
    event(f"mutation {kind}")
    size = len(data)
    if kind == "flip" and size:
        out = bytearray(data)
        for bit in source.draw(st.lists(st.integers(0, size * 8 - 1), min_size=1, max_size=4)):
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    if kind == "replace" and size:
        out = bytearray(data)
        for position, value in source.draw(
            st.lists(
                st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=4
            )
        ):
            out[position] = value
        return bytes(out)
    if kind == "truncate" and size:
        return data[: source.draw(st.integers(0, size - 1))]
    if kind == "extend":
        extended = data + source.draw(st.binary(min_size=1, max_size=64))
        return _set_length(extended) if source.draw(st.booleans()) else extended
    if kind == "header_length" and size >= 28:
        lie = source.draw(
            st.sampled_from([0, 27, 28, size - 1, size + 1, 0xFFFFFFFF])
            | st.integers(0, 0xFFFFFFFF)
        )
        return data[:24] + _u32(lie) + data[28:]
    if kind in ("payload_length", "next_payload"):
        offsets = payload_header_offsets(data)
        if offsets:
            at = source.draw(st.sampled_from(offsets))
            if kind == "payload_length":
                lie = source.draw(st.sampled_from([0, 3, 4, 5, 0xFFFF]) | st.integers(0, 0xFFFF))
                return data[: at + 2] + lie.to_bytes(2, "big") + data[at + 4 :]
            value = source.draw(st.sampled_from([0, 33, 41, 46, 48, 53, 200]) | st.integers(0, 255))
            critical = source.draw(st.sampled_from([0, 0x80, 0x01]))
            return data[:at] + bytes([value, critical]) + data[at + 2 :]
    if kind == "reorder" and size and data[16:17] != bytes([SK]):
        try:
            message = decode_message(data)
        except PeerError:
            return data[::-1]
        payloads = source.draw(st.permutations(message.payloads))
        payloads = payloads[: source.draw(st.integers(0, len(payloads)))]
        duplicate: bool = source.draw(st.booleans())
        if payloads and duplicate:
            payloads.append(source.draw(st.sampled_from(payloads)))
        message.payloads = list(payloads)
        return encode_message(message)
    if kind in ("forge_plaintext", "reorder") and size >= 28:
        header = peek_or_none(data)
        if header is not None:
            payloads = source.draw(forged_payload_lists(delivery, history))
            return encode_message(
                Message(
                    header.spi_i,
                    header.spi_r,
                    header.exchange_type,
                    header.is_initiator,
                    header.is_response,
                    header.message_id,
                    payloads,
                )
            )
    if kind == "replay" and history:
        return source.draw(st.sampled_from(history)).data
    if kind == "spi" and size >= 16:
        seen = [d.data[:16] for d in history if len(d.data) >= 16]
        spis = source.draw(st.sampled_from(seen) if seen else st.binary(min_size=16, max_size=16))
        choice = source.draw(st.sampled_from(["i", "r", "both", "swap", "zero_r", "random_r"]))
        spi_i, spi_r = data[:8], data[8:16]
        if choice == "i":
            spi_i = spis[:8]
        elif choice == "r":
            spi_r = spis[8:16]
        elif choice == "both":
            spi_i, spi_r = spis[:8], spis[8:16]
        elif choice == "swap":
            spi_i, spi_r = spi_r, spi_i
        elif choice == "zero_r":
            spi_r = bytes(8)
        else:
            spi_r = source.draw(st.binary(min_size=8, max_size=8))
        return spi_i + spi_r + data[16:]
    if kind == "message_id" and size >= 24:
        current = int.from_bytes(data[20:24], "big")
        value = source.draw(
            st.sampled_from([0, 1, current - 1, current + 1, current + 2, 0xFFFFFFFF])
            | st.integers(0, 0xFFFFFFFF)
        )
        return data[:20] + _u32(value) + data[24:]
    if kind == "flags" and size >= 20:
        xor = source.draw(st.sampled_from([0x20, 0x08, 0x28, 0x10, 0xFF]))
        return data[:19] + bytes([data[19] ^ xor]) + data[20:]
    if kind == "exchange" and size >= 19:
        value = source.draw(st.sampled_from([0, 33, 34, 35, 36, 37, 38, 43, 99, 240, 255]))
        return data[:18] + bytes([value]) + data[19:]
    if kind == "version" and size >= 18:
        return data[:17] + bytes([source.draw(st.integers(0, 255))]) + data[18:]
    return data[:-1]


def peek_or_none(data: bytes) -> Message | None:
    try:
        header = peek_header(data)
    except PeerError:
        return None
    return Message(
        header.spi_i,
        header.spi_r,
        header.exchange_type,
        header.is_initiator,
        header.is_response,
        header.message_id,
    )


def detectable(original: bytes, mutated: bytes) -> bool:
    """Whether a receiver that trusts nothing unauthenticated can tell `mutated` from
    `original` (or must treat it as a duplicate of it)."""
    if mutated == original:
        return True
    if original[16:17] == bytes([SK]):
        return True  # the ICV covers the whole protected message
    try:
        decode_message(mutated)
    except PeerError:
        return True
    # IKE_SA_INIT: the SPIs the receiver knows, the exchange type, the I and R flags and the
    # message ID route a message; a change to them is visible.  Other changes that still
    # parse (nonce, KE, a minor version, the V flag, the responder's SPI in a response) are
    # indistinguishable from a real message.
    known_spis = slice(0, 8) if original[19] & 0x20 else slice(0, 16)
    return (
        mutated[known_spis] != original[known_spis]
        or mutated[18] != original[18]
        or (mutated[19] ^ original[19]) & 0x28 != 0
        or mutated[20:24] != original[20:24]
    )


# -- the properties --------------------------------------------------------------------
def recover_and_check(pair: FuzzPair, *, strict: bool = True) -> None:
    pair.advance(RECOVERY_SECONDS)
    assert tunnel_problems(pair, strict=strict) == []
    assert pair.a.endpoint.half_open_count == 0 and pair.b.endpoint.half_open_count == 0


@FUZZ
@given(data=st.data(), target=st.integers(0, DELIVERIES - 1))
def test_mutated_messages_before_the_real_one(data: st.DataObject, target: int) -> None:
    verdicts: list[bool] = []

    def forge(delivery: Delivery, history: list[Delivery]) -> list[bytes]:
        copies = []
        for _ in range(data.draw(st.integers(1, 3), label="copies")):
            mutated = delivery.data
            for _step in range(data.draw(st.integers(1, 2), label="steps")):
                mutated = mutate_once(data, mutated, delivery, history)
            verdicts.append(detectable(delivery.data, mutated))
            copies.append(mutated)
        return copies

    pair = FuzzPair(Tap(lambda index: index == target, forge))
    run_script(pair)
    assert pair.tap.injected, "the target delivery was never reached"
    init_requests = sum(1 for m in pair.tap.injected if len(m) > 18 and m[18] == 34)
    assert pair.most_half_open <= 1 + init_requests
    event("detectable by the receiver" if all(verdicts) else "indistinguishable IKE_SA_INIT")
    if all(verdicts):
        assert tunnel_problems(pair) == []
        assert unplanned_downs(pair) == []
        assert len(pair.a.of(IkeSaUp)) == len(CLEAN.a.of(IkeSaUp))
    recover_and_check(pair)


# -- a peer that holds the keys and misbehaves ----------------------------------------
def sender_protectors(
    pair: FuzzPair, delivery: Delivery
) -> tuple[IkeProtector, IkeProtector] | None:
    """(seal as the sender, open as the receiver) for the SA `delivery` belongs to."""
    sender = pair.endpoint("b" if delivery.receiver == "a" else "a")
    sa = sender.seen_sas.get((delivery.data[:8], delivery.data[8:16]))
    if sa is None or sa.keys is None or sa.negotiated is None:
        return None
    seal, _ = create_ike_protectors(
        sa.negotiated.encr_choice, sa.negotiated.integ, sa.keys, sa.initiator
    )
    _, open_ = create_ike_protectors(
        sa.negotiated.encr_choice, sa.negotiated.integ, sa.keys, not sa.initiator
    )
    return seal, open_


def reseal(
    header: bytes, first_inner: int, chain: bytes, protector: IkeProtector, rng: RandomSource
) -> bytes:
    """A protected message with `chain` as its inner payloads, lengths made to fit."""
    sk_length = 4 + protector.sealed_length(len(chain))
    header = header[:16] + bytes([SK]) + header[17:24] + _u32(HEADER_LENGTH + sk_length)
    associated = header + bytes([first_inner, 0]) + sk_length.to_bytes(2, "big")
    return associated + protector.seal(associated, chain, rng)


def mangle_inner(source: st.DataObject, first: int, chain: bytes) -> tuple[int, bytes]:
    kind = source.draw(st.sampled_from(["bytes", "structure", "first_type"]), label="inner")
    if kind == "first_type":
        return source.draw(st.sampled_from([0, 33, 41, 46, 48, 200]) | st.integers(0, 255)), chain
    if kind == "structure":
        try:
            payloads = pull_payload_chain(Buffer(chain), first)
        except PeerError:
            payloads = []
        extra: list[tuple[int, Payload]] = [
            (
                PayloadType.NOTIFY,
                NotifyPayload(
                    ProtocolId.NONE,
                    b"",
                    source.draw(st.sampled_from(list(NotifyType)) | st.integers(0, 65535)),
                    source.draw(st.binary(max_size=8)),
                ),
            ),
            (PayloadType.DELETE, DeletePayload(ProtocolId.IKE, ())),
            (200, UnknownPayload(200, source.draw(st.booleans()), b"\x00")),
        ]
        pool = payloads + extra
        chosen = source.draw(st.lists(st.sampled_from(pool), max_size=len(pool) + 1))
        return push_payload_chain(chosen)
    out = bytearray(chain)
    if out:
        for position, value in source.draw(
            st.lists(
                st.tuples(st.integers(0, len(out) - 1), st.integers(0, 255)), min_size=1, max_size=3
            )
        ):
            out[position] = value
    cut = source.draw(st.integers(0, len(out)))
    return first, bytes(out[:cut]) + source.draw(st.binary(max_size=8))


PROTECTED = [i for i, d in enumerate(CLEAN.tap.history) if d.data[16:17] == bytes([SK])]


@FUZZ
@given(data=st.data(), target=st.sampled_from(PROTECTED), replace=st.booleans())
def test_authenticated_garbage_from_a_keyed_peer(
    data: st.DataObject, target: int, replace: bool
) -> None:
    """The peer holds the keys but sends nonsense inside them: nothing escapes, nothing
    ping-pongs forever and no half-open SA is left.  (Whether the tunnel recovers is not
    asserted here: see the rekey cases in test_engine_hostile.py.)"""
    rng = SeededRandomSource(99)
    holder: list[FuzzPair] = []

    def forge(delivery: Delivery, history: list[Delivery]) -> list[bytes]:
        keys = sender_protectors(holder[0], delivery)
        assert keys is not None, "no keys for a protected message of the script"
        seal, open_ = keys
        message = delivery.data
        sk_at = payload_header_offsets(message)[0]
        chain = open_.open(message[: sk_at + 4], message[sk_at + 4 :])
        first, mangled = mangle_inner(data, message[sk_at], chain)
        header = bytearray(message[:HEADER_LENGTH])
        if data.draw(st.booleans(), label="mangle the header too"):
            header[18] = data.draw(st.sampled_from([34, 35, 36, 37, 43, 99]), label="exchange")
            header[19] ^= data.draw(st.sampled_from([0, 0x10, 0x20]), label="flags")
        return [reseal(bytes(header), first, mangled, seal, rng)]

    tap = Tap(lambda index: index == target, forge, swallow_real=replace)
    pair = FuzzPair(tap)
    holder.append(pair)
    run_script(pair)
    assert tap.injected
    pair.advance(RECOVERY_SECONDS)
    assert pair.a.endpoint.half_open_count == 0 and pair.b.endpoint.half_open_count == 0


def test_the_script_covers_every_exchange() -> None:
    exchanges = {(d.receiver, d.data[18], bool(d.data[19] & 0x20)) for d in CLEAN.tap.history}
    for exchange in (
        ExchangeType.IKE_SA_INIT,
        ExchangeType.IKE_AUTH,
        ExchangeType.CREATE_CHILD_SA,
        ExchangeType.INFORMATIONAL,
    ):
        assert ("b", exchange, False) in exchanges  # requests to the responder ...
        assert ("a", exchange, True) in exchanges  # ... and their responses
    # Both roles receive CREATE_CHILD_SA and INFORMATIONAL requests.
    assert ("a", ExchangeType.CREATE_CHILD_SA, False) in exchanges
    assert ("a", ExchangeType.INFORMATIONAL, False) in exchanges
    assert tunnel_problems(CLEAN) == [] and unplanned_downs(CLEAN) == []
    assert len(CLEAN.a.of(IkeSaUp)) == 1
    sa = CLEAN.a.endpoint.current_sa("peer")
    assert sa is not None and sa.state == IkeState.ESTABLISHED
