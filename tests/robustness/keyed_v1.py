"""IKEv1 fuzz scenarios on keyed ISAKMP SAs: fuzzed payloads encrypted with the SA's keys.

A fresh in-memory pair (tests/ike/v1/pair.py, fixed seeds) is driven to one point; the
fuzzer's bytes become the payloads of a message the receiver can decrypt: after HASH(1)
(quick mode and informational requests, computed over the fuzzed payloads so that it
verifies), after HASH(2) (the answer to our quick mode), or as the whole encrypted body of
main mode message 5 or 6 (phase 1 IV chain; HASH_I/HASH_R are fuzzed like the rest).  Two
scenarios feed whole datagrams (fuzzed unencrypted phase 1 messages) with the right cookies.

Input layout (`run`): scenario byte, first payload type, payload chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.ike.events import Address
from core.ike.v1.constants import ExchangeType, Flag, PayloadType
from core.ike.v1.sa import IsakmpSa
from tests.ike.v1.pair import A_ADDR, B_ADDR, Pair, Side, mirror, policy

HEADER = 28
NEW_MESSAGE_ID = 0x5EED0001
SETTLE_SECONDS = 12.0


@dataclass
class Target:
    """Where the fuzzed message goes and how it is built."""

    receiver: Side
    sender_sa: IsakmpSa  # whose cookies, cipher and SKEYID_a build the message
    exchange: int
    message_id: int
    iv: bytes | None  # None: unencrypted (phase 1 before keys)
    hash_prefix: bytes | None  # None: no HASH payload is computed (the chain is all)
    real: bytes = b""  # the real message held back, if there is one (for seeds)


def new_pair(mode: str = "main") -> Pair:
    if mode == "aggressive":
        base = policy(
            dpd_interval=0,
            exchange_mode="aggressive",
            local_id="fqdn:a.example",
            remote_id="fqdn:b.example",
            ike="aes128-sha1-x25519",
        )
        return Pair(base, mirror(base, local_id=base.remote_id, remote_id=base.local_id))
    base = policy(dpd_interval=0, ike="aes128-sha256-x25519", esp="aes128gcm16-x25519")
    return Pair(base, mirror(base))


def _sa(side: Side) -> IsakmpSa:
    sa = side.endpoint.current_sa("peer")
    assert sa is not None, f"{side.name} has no ISAKMP SA"
    return sa


def _start(pair: Pair) -> None:
    pair.a.endpoint.connect("peer", Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)


def _pass_one(pair: Pair, sender: Side, receiver: Side) -> bytes:
    (datagram,) = sender.endpoint.pop_datagrams()
    receiver.endpoint.receive(datagram.data, datagram.remote, datagram.local, pair.now)
    return datagram.data


def _drop_one(sender: Side) -> bytes:
    (datagram,) = sender.endpoint.pop_datagrams()
    return datagram.data


def _request_to(to: str, exchange: int) -> Callable[[Pair], Target]:
    def scenario(pair: Pair) -> Target:
        pair.connect()
        receiver, sender = (pair.b, pair.a) if to == "b" else (pair.a, pair.b)
        sa = _sa(sender)
        return Target(
            receiver,
            sa,
            exchange,
            NEW_MESSAGE_ID,
            sa.exchange_iv(NEW_MESSAGE_ID),
            NEW_MESSAGE_ID.to_bytes(4, "big"),
        )

    return scenario


def initiator_quick_answer(pair: Pair) -> Target:
    """A started a quick mode (a rekey); the fuzzed message is its answer (HASH(2))."""
    pair.connect()
    pair.a.endpoint.rekey("peer", pair.now)
    request = _drop_one(pair.a)
    message_id = int.from_bytes(request[20:24], "big")
    quick = _sa(pair.a).quick[message_id]
    return Target(
        pair.a,
        _sa(pair.b),
        ExchangeType.QUICK,
        message_id,
        request[-16:],
        message_id.to_bytes(4, "big") + quick.nonce_i,
    )


def responder_main_mode_5(pair: Pair) -> Target:
    _start(pair)
    for _ in range(2):
        _pass_one(pair, pair.a, pair.b)
        _pass_one(pair, pair.b, pair.a)
    real = _drop_one(pair.a)  # the real message 5
    receiver = _sa(pair.b) if pair.b.endpoint.current_sa("peer") else _half_open(pair.b)
    return Target(pair.b, receiver, ExchangeType.MAIN, 0, receiver.phase1_iv, None, real)


def initiator_main_mode_6(pair: Pair) -> Target:
    _start(pair)
    for _ in range(2):
        _pass_one(pair, pair.a, pair.b)
        _pass_one(pair, pair.b, pair.a)
    _pass_one(pair, pair.a, pair.b)
    real = _drop_one(pair.b)
    sa = _sa(pair.a)
    return Target(pair.a, sa, ExchangeType.MAIN, 0, sa.phase1_iv, None, real)


def _half_open(side: Side) -> IsakmpSa:
    return next(iter(side.endpoint._sas.values()))


def responder_first_message(pair: Pair) -> Target:
    """Phase 1 message 1 (main mode) to a fresh responder, unencrypted."""
    return Target(
        pair.b,
        IsakmpSa(
            pair.a.endpoint._peers["peer"].policy,
            initiator=True,
            cky_i=bytes.fromhex("00112233445566ff"),
            cky_r=bytes(8),
            local=Address(A_ADDR, 500),
            remote=Address(B_ADDR, 500),
            rng=pair.a.endpoint.rng,
            now=pair.now,
            aggressive=False,
        ),
        ExchangeType.MAIN,
        0,
        None,
        None,
    )


def initiator_second_message(pair: Pair) -> Target:
    """Phase 1 message 2 to the initiator that sent message 1, unencrypted."""
    _start(pair)
    _pass_one(pair, pair.a, pair.b)
    _drop_one(pair.b)
    return Target(pair.a, _sa(pair.a), ExchangeType.MAIN, 0, None, None)


SCENARIOS: dict[str, Callable[[Pair], Target]] = {
    "responder_quick": _request_to("b", ExchangeType.QUICK),
    "initiator_gets_quick": _request_to("a", ExchangeType.QUICK),
    "responder_informational": _request_to("b", ExchangeType.INFORMATIONAL),
    "initiator_informational": _request_to("a", ExchangeType.INFORMATIONAL),
    "initiator_quick_answer": initiator_quick_answer,
    "responder_main_mode_5": responder_main_mode_5,
    "initiator_main_mode_6": initiator_main_mode_6,
    "responder_first_message": responder_first_message,
    "initiator_second_message": initiator_second_message,
}
NAMES = tuple(SCENARIOS)


def build(target: Target, first: int, chain: bytes) -> bytes:
    """The datagram carrying `chain` (first payload type `first`) as `target` wants it."""
    sa = target.sender_sa
    if target.hash_prefix is not None:
        digest = sa.auth_hash(target.hash_prefix, chain)
        body = bytes([first, 0]) + (4 + len(digest)).to_bytes(2, "big") + digest + chain
        first = PayloadType.HASH
    else:
        body = chain
    flags = 0
    if target.iv is not None:
        assert sa.cipher is not None
        body += bytes(-len(body) % sa.cipher.block_size)
        body = sa.cipher.encrypt(target.iv, body)
        flags = Flag.ENCRYPTION
    header = (
        sa.cky_i
        + sa.cky_r
        + bytes((first, 0x10, target.exchange, flags))
        + target.message_id.to_bytes(4, "big")
        + (HEADER + len(body)).to_bytes(4, "big")
    )
    return header + body


def run(data: bytes) -> Pair:
    """Play one fuzz input; exceptions escaping the endpoints propagate (the findings)."""
    pair = new_pair()
    if len(data) < 2:
        return pair
    target = SCENARIOS[NAMES[data[0] % len(NAMES)]](pair)
    datagram = build(target, data[1], data[2:])
    sender = pair.a if target.receiver is pair.b else pair.b
    target.receiver.endpoint.receive(
        datagram, Address(target.receiver.address, 500), Address(sender.address, 500), pair.now
    )
    pair.deliver()
    pair.advance(SETTLE_SECONDS)
    return pair


def seeds() -> dict[str, bytes]:
    """Inputs that rebuild each scenario's real message (as far as one exists)."""
    out: dict[str, bytes] = {}
    for index, name in enumerate(NAMES):
        real = _real_message(name)
        if real is not None:
            out[name] = bytes([index]) + real
    return out


def _real_message(name: str) -> bytes | None:
    """(first payload type, chain after the hash) of the message the scenario replaces."""
    from core.ike.v1.message import decode_message
    from core.ike.v1.payloads import encode_chain

    pair = new_pair()
    if name in ("responder_main_mode_5", "initiator_main_mode_6"):
        target = SCENARIOS[name](pair)
        assert target.iv is not None and target.sender_sa.cipher is not None
        plain = target.sender_sa.cipher.decrypt(target.iv, target.real[HEADER:])
        return target.real[16:17] + plain
    if name in ("responder_informational", "initiator_informational"):
        pair.connect()
        sender = pair.a if name == "responder_informational" else pair.b
        sender.endpoint.rekey("peer", pair.now)  # its old IPsec SA is deleted afterwards
        pair.deliver()
        pair.advance(5)
        for side, datagram in pair.wire:
            data = datagram.data
            if side == sender.name and len(data) > HEADER and data[18] == 5 and data[19] & 1:
                sa = _sa(sender)
                info = decode_message(
                    data, sa.cipher, sa.exchange_iv(int.from_bytes(data[20:24], "big"))
                )
                rest = info.payloads[1:]
                return bytes([rest[0][0]]) + encode_chain(rest)
        return None
    if name in ("responder_quick", "initiator_gets_quick"):
        pair.connect()
        sender = pair.a if name == "responder_quick" else pair.b
        sender.endpoint.rekey("peer", pair.now)
        request = _drop_one(sender)
        message = decode_message(
            request,
            _sa(sender).cipher,
            _sa(sender).exchange_iv(int.from_bytes(request[20:24], "big")),
        )
        rest = message.payloads[1:]
        return bytes([rest[0][0]]) + encode_chain(rest)
    if name == "responder_first_message":
        _start(pair)
        first = _drop_one(pair.a)
        return first[16:17] + first[HEADER:]
    if name == "initiator_second_message":
        _start(pair)
        _pass_one(pair, pair.a, pair.b)
        second = _drop_one(pair.b)
        return second[16:17] + second[HEADER:]
    return None
