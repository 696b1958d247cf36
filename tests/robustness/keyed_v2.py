"""IKEv2 fuzz scenarios on keyed SAs: fuzzed payload chains re-sealed with the SA's keys.

A scenario drives a fresh in-memory pair (tests/ike/v2/pair.py, fixed seeds, so every run
is the same) to one point of a good exchange and holds back the next message in flight.
The fuzzer's bytes replace that message's inner payload chain; the header is kept (or
tweaked) and the chain is sealed with the sender's keys, so the receiver's ICV check
passes and the mutation reaches the payload handlers.  Then both ends run: the held-back
exchange is retransmitted and whatever the fuzzed message started plays out.

Input layout (`run`): scenario byte, header tweak byte, first inner payload type, chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.crypto.cipher import IkeProtector, create_ike_protectors
from core.crypto.random import SeededRandomSource
from core.ike.constants import ExchangeType, PayloadType
from core.ike.events import Address
from core.ike.v2.header import HEADER_LENGTH
from core.ike.v2.sa import Datagram, IkeSa
from tests.ike.v2.pair import A_ADDR, B_ADDR, Pair, Side, mirror, policy

SK = PayloadType.SK
# Seconds both ends run after the fuzzed message: covers a retransmission of the held-back
# request (4 s) and the timers the fuzzed message may have started.
SETTLE_SECONDS = 12.0


@dataclass(frozen=True)
class Held:
    """A protected message held back on its way, with what it takes to forge its kin."""

    datagram: bytes  # without the non-ESP marker
    receiver: Side
    seal: IkeProtector  # the sender's outbound protector
    open: IkeProtector  # the receiver's inbound protector


def new_pair() -> Pair:
    base = policy(dpd_interval=0)
    return Pair(base, mirror(base))


def _sa(side: Side) -> IkeSa:
    sa = side.endpoint.current_sa("peer")
    assert sa is not None, f"{side.name} has no IKE SA"
    return sa


def _protectors(sender_sa: IkeSa) -> tuple[IkeProtector, IkeProtector]:
    """(seal as the sender, open as the receiver) for messages of `sender_sa`."""
    assert sender_sa.negotiated is not None and sender_sa.keys is not None
    negotiated, keys = sender_sa.negotiated, sender_sa.keys
    seal, _ = create_ike_protectors(
        negotiated.encr_choice, negotiated.integ, keys, sender_sa.initiator
    )
    _, open_ = create_ike_protectors(
        negotiated.encr_choice, negotiated.integ, keys, not sender_sa.initiator
    )
    return seal, open_


def _take(side: Side) -> list[Datagram]:
    side.events += side.endpoint.pop_events()
    return side.endpoint.pop_datagrams()


def _deliver_one(pair: Pair, sender: Side, receiver: Side) -> Datagram:
    """Deliver the single datagram `sender` has pending and return it."""
    (datagram,) = _take(sender)
    receiver.endpoint.receive(datagram.data, datagram.remote, datagram.local, pair.now)
    return datagram


def _sa_of(side: Side, message: bytes) -> IkeSa:
    """The sender's IKE SA that `message` belongs to (by its SPIs: after a rekey this is
    not the current one)."""
    return next(
        sa
        for sa in side.endpoint._sas.values()
        if (sa.spi_i, sa.spi_r) == (message[:8], message[8:16])
    )


def _hold(pair: Pair, sender: Side, receiver: Side) -> Held:
    (datagram,) = _take(sender)
    seal, open_ = _protectors(_sa_of(sender, datagram.data))
    return Held(datagram.data, receiver, seal, open_)


# -- scenarios: each returns the pair and the message held back ------------------------
def responder_ike_auth(pair: Pair) -> Held:
    """B, the responder, is about to receive IKE_AUTH."""
    _start(pair)
    _deliver_one(pair, pair.a, pair.b)  # IKE_SA_INIT request
    _deliver_one(pair, pair.b, pair.a)  # IKE_SA_INIT response
    return _hold(pair, pair.a, pair.b)


def initiator_ike_auth(pair: Pair) -> Held:
    """A, the initiator, is about to receive the IKE_AUTH response."""
    _start(pair)
    _deliver_one(pair, pair.a, pair.b)
    _deliver_one(pair, pair.b, pair.a)
    _deliver_one(pair, pair.a, pair.b)  # IKE_AUTH request
    return _hold(pair, pair.b, pair.a)


def _start(pair: Pair) -> None:
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)


def _established(pair: Pair) -> None:
    pair.connect()
    assert _sa(pair.a).is_established and _sa(pair.b).is_established


def _request(by: str, ike: bool = False) -> Callable[[Pair], Held]:
    def scenario(pair: Pair) -> Held:
        _established(pair)
        sender, receiver = (pair.a, pair.b) if by == "a" else (pair.b, pair.a)
        sender.endpoint.rekey("peer", pair.now, ike=ike)
        return _hold(pair, sender, receiver)

    return scenario


def _response(by: str, ike: bool = False) -> Callable[[Pair], Held]:
    """`by` asks (a rekey); the fuzzed message is the answer it receives."""

    def scenario(pair: Pair) -> Held:
        _established(pair)
        asker, answerer = (pair.a, pair.b) if by == "a" else (pair.b, pair.a)
        asker.endpoint.rekey("peer", pair.now, ike=ike)
        _deliver_one(pair, asker, answerer)
        return _hold(pair, answerer, asker)

    return scenario


SCENARIOS: dict[str, Callable[[Pair], Held]] = {
    "responder_ike_auth": responder_ike_auth,
    "initiator_ike_auth": initiator_ike_auth,
    "responder_child_rekey": _request("a"),
    "responder_ike_rekey": _request("a", ike=True),
    "initiator_gets_child_rekey": _request("b"),
    "initiator_gets_ike_rekey": _request("b", ike=True),
    "initiator_child_rekey_answer": _response("a"),
    "initiator_ike_rekey_answer": _response("a", ike=True),
    "responder_child_rekey_answer": _response("b"),
}
NAMES = tuple(SCENARIOS)

# Header tweaks (second input byte): low 3 bits pick the exchange type, the next two the
# flags, the top ones the message ID.
_EXCHANGES = (
    None,
    None,
    None,
    None,
    ExchangeType.INFORMATIONAL,
    ExchangeType.CREATE_CHILD_SA,
    ExchangeType.IKE_AUTH,
    99,
)


def tweak_header(header: bytes, tweak: int) -> bytes:
    out = bytearray(header)
    exchange = _EXCHANGES[tweak & 7]
    if exchange is not None:
        out[18] = exchange
    flags = (tweak >> 3) & 3
    out[19] ^= (0, 0x20, 0x08, 0x10)[flags]
    message_id = int.from_bytes(out[20:24], "big")
    out[20:24] = ((message_id + (0, 1, -1, 7)[(tweak >> 5) & 3]) & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


def reseal(header: bytes, first_inner: int, chain: bytes, seal: IkeProtector) -> bytes:
    """A protected message with `chain` as its inner payloads, lengths made to fit."""
    sk_length = 4 + seal.sealed_length(len(chain))
    total = HEADER_LENGTH + sk_length
    header = header[:16] + bytes([SK]) + header[17:24] + total.to_bytes(4, "big")
    associated = header + bytes([first_inner, 0]) + sk_length.to_bytes(2, "big")
    return associated + seal.seal(associated, chain, SeededRandomSource(3))


def plaintext_of(held: Held) -> tuple[int, bytes]:
    """(first inner payload type, inner chain) of the held-back message."""
    data = held.datagram
    assert data[16] == SK, "the held-back message is not protected"
    chain = held.open.open(data[: HEADER_LENGTH + 4], data[HEADER_LENGTH + 4 :])
    return data[HEADER_LENGTH], chain


def run(data: bytes) -> Pair:
    """Play one fuzz input; returns the pair afterwards (for checks).  Exceptions that
    escape the endpoints propagate: they are the findings."""
    if len(data) < 3:
        return new_pair()
    pair = new_pair()
    held = SCENARIOS[NAMES[data[0] % len(NAMES)]](pair)
    header = tweak_header(held.datagram[:HEADER_LENGTH], data[1])
    forged = reseal(header, data[2], data[3:], held.seal)
    sender = pair.a if held.receiver is pair.b else pair.b
    held.receiver.endpoint.receive(
        forged, Address(held.receiver.address, 500), Address(sender.address, 500), pair.now
    )
    pair.deliver()
    pair.advance(SETTLE_SECONDS)
    return pair


def seeds() -> dict[str, bytes]:
    """One input per scenario that replays its real message unchanged."""
    out: dict[str, bytes] = {}
    for index, name in enumerate(NAMES):
        held = SCENARIOS[name](new_pair())
        first, chain = plaintext_of(held)
        out[name] = bytes([index, 0, first]) + chain
    return out
