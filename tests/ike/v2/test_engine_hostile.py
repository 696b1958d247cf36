"""Hostile input to the IKEv2 engine: each case asserts the RFC's answer (or silence) and
the event that reports it, and that a good exchange is not disturbed.

Cases: truncated packets and lying lengths at every step of a good run, unknown SPIs, old
and future message IDs, failed ICVs, unsupported critical payloads, replayed IKE_AUTH,
forged plaintext, a flood of IKE_SA_INIT from spoofed addresses (cookies, the half-open
cap, an established SA that keeps working), half-open SAs timing out, and the inputs
stored in tests/robustness/corpus/ikev2/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from core.crypto.cipher import IkeProtector, create_ike_protectors
from core.crypto.random import SeededRandomSource
from core.ike.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.events import (
    Address,
    ChildSaInstalled,
    DownReason,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    IkeSaUp,
    LogMessage,
)
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.message import Message, decode_message, encode_message
from core.ike.v2.payloads import DeletePayload, NotifyPayload, Payload, UnknownPayload
from core.ike.v2.sa import Datagram, IkeSa
from core.ike.v2.state import IkeState
from tests.ike.v2.pair import A_ADDR, B_ADDR, Pair, Side, mirror, policy
from tests.ike.v2.test_engine_fuzz import (
    CLEAN,
    FuzzPair,
    Tap,
    payload_header_offsets,
    run_script,
    tunnel_problems,
    unplanned_downs,
)

A = Address(A_ADDR, 500)
B = Address(B_ADDR, 500)
CORPUS = Path(__file__).parents[2] / "robustness" / "corpus" / "ikev2"


# -- helpers ------------------------------------------------------------------------
def established() -> Pair:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.connect()
    assert tunnel_problems(pair) == []
    return pair


def current(side: Side) -> IkeSa:
    sa = side.endpoint.current_sa("peer")
    assert sa is not None
    return sa


def feed(
    side: Side,
    data: bytes,
    now: float,
    *,
    remote: Address | None = None,
    local: Address | None = None,
) -> tuple[list[Datagram], list[IkeEvent]]:
    """Hand `data` to one endpoint directly; return what it sent and reported."""
    if remote is None:
        remote = B if side.name == "a" else A
    if local is None:
        local = A if side.name == "a" else B
    side.endpoint.receive(data, local, remote, now)
    return side.endpoint.pop_datagrams(), side.endpoint.pop_events()


def opened(receiver: IkeSa, data: bytes) -> Message:
    """Decode a protected message sent to `receiver`'s side, with its keys."""
    assert receiver.keys is not None and receiver.negotiated is not None
    _, inbound = create_ike_protectors(
        receiver.negotiated.encr_choice,
        receiver.negotiated.integ,
        receiver.keys,
        receiver.initiator,
    )
    return decode_message(data, inbound)


def logs(events: list[IkeEvent]) -> list[str]:
    return [e.message for e in events if isinstance(e, LogMessage)]


def plain(
    sa: IkeSa,
    exchange: int,
    message_id: int,
    payloads: list[tuple[int, Payload]],
    *,
    response: bool = False,
) -> bytes:
    """An unprotected message with `sa`'s SPIs, as anyone on the path could forge it."""
    return encode_message(
        Message(sa.spi_i, sa.spi_r, exchange, sa.initiator, response, message_id, payloads)
    )


def set_u32(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + (value & 0xFFFFFFFF).to_bytes(4, "big") + data[at + 4 :]


def set_u16(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + (value & 0xFFFF).to_bytes(2, "big") + data[at + 2 :]


# -- damage at every step of a good run ------------------------------------------------
def truncations(data: bytes) -> list[bytes]:
    size = len(data)
    cuts = sorted({0, 1, 20, 27, 28, 29, 32, size // 2, size - 17, size - 16, size - 1})
    raw = [data[:cut] for cut in cuts if 0 <= cut < size]
    # The same, with the header's length field made to agree: the payload chain is cut.
    fitted = [set_u32(data[:cut], 24, cut) for cut in cuts if 28 <= cut < size]
    return raw + fitted


def header_length_lies(data: bytes) -> list[bytes]:
    size = len(data)
    return [set_u32(data, 24, lie) for lie in (0, 27, 28, size - 1, size + 1, 0xFFFFFFFF)]


def payload_length_lies(data: bytes) -> list[bytes]:
    lies = []
    for at in payload_header_offsets(data):
        remaining = len(data) - at
        for value in (0, 3, 4, 5, remaining - 1, remaining + 1, 0xFFFF):
            if value != int.from_bytes(data[at + 2 : at + 4], "big"):
                lies.append(set_u16(data, at + 2, value))
    return lies


@pytest.mark.parametrize(
    "damage",
    [truncations, header_length_lies, payload_length_lies],
    ids=lambda f: f.__name__,
)
def test_damaged_copies_at_every_step_are_dropped_silently(
    damage: Callable[[bytes], list[bytes]],
) -> None:
    """RFC 7296 2.21 / 3.14: a message that does not parse, or whose integrity cannot be
    verified, is dropped: no answer, no change of state, a log event.  The real message
    that follows each damaged copy then completes the run as if nothing happened."""
    tap = Tap(lambda index: True, lambda delivery, history: damage(delivery.data))
    pair = FuzzPair(tap)
    run_script(pair)
    assert len(tap.injected) > 2 * CLEAN.tap.count  # damaged copies at every step
    for name in ("a", "b"):
        for reaction in pair.endpoint(name).reactions:
            assert reaction.sent == [], f"{name} answered {reaction.data.hex()}"
            assert logs(reaction.events), f"{name} dropped {reaction.data.hex()} unreported"
            assert not any(
                isinstance(e, (IkeSaDown, IkeSaUp, ExchangeFailed)) for e in reaction.events
            )
    assert tunnel_problems(pair) == [] and unplanned_downs(pair) == []
    assert len(pair.a.of(ChildSaInstalled)) == len(CLEAN.a.of(ChildSaInstalled))


# -- SPIs, message IDs, ICV -------------------------------------------------------------
def test_unknown_ike_spi_gets_silence() -> None:
    """RFC 7296 2.21.4: a message for an IKE SA we do not have may be answered with
    INVALID_IKE_SPI; we stay silent (no reflection) and log it."""
    pair = established()
    sa_a = current(pair.a)
    request = sa_a.encode(ExchangeType.INFORMATIONAL, 2, False, [])
    for spis in (bytes(range(16)), sa_a.spi_i + bytes(8), sa_a.spi_i + b"\x01" * 8):
        sent, events = feed(pair.b, spis + request[16:], pair.now)
        assert sent == []
        assert any("unknown IKE SPI" in line for line in logs(events))
    # Our SPI with a wrong one of the peer's: it reaches our SA, whose ICV (over both SPIs)
    # fails.
    sent, events = feed(pair.b, b"\x02" * 8 + request[8:], pair.now)
    assert sent == [] and any("integrity" in line for line in logs(events))
    # A fresh endpoint with no SA at all: the same.
    lonely = Side("c", Ikev2Endpoint([mirror(policy())], SeededRandomSource(3)), B_ADDR)
    sent, events = feed(lonely, request, pair.now)
    assert sent == [] and any("unknown IKE SPI" in line for line in logs(events))
    assert current(pair.b).next_peer_id == 2  # nothing reached the real SA


def test_old_message_id_gets_the_cached_response_and_future_ones_are_dropped() -> None:
    """RFC 7296 2.3: a retransmitted request gets the same response again; a request
    outside the window is dropped."""
    pair = established()
    ike_auth_request, ike_auth_response = pair.a.sent[1].data, pair.b.sent[1].data
    sent, events = feed(pair.b, ike_auth_request, pair.now)
    assert [d.data for d in sent] == [ike_auth_response]  # byte for byte
    assert not any(isinstance(e, (IkeSaUp, ChildSaInstalled)) for e in events)
    assert any("retransmitted request 1" in line for line in logs(events))

    sa_a, sa_b = current(pair.a), current(pair.b)
    for future in (3, 4, 0x7FFFFFFF):
        sent, events = feed(
            pair.b, sa_a.encode(ExchangeType.INFORMATIONAL, future, False, []), pair.now
        )
        assert sent == [] and any("message ID" in line for line in logs(events))
    assert sa_b.next_peer_id == 2

    pair.advance(21)  # a liveness check each way: the cache now holds a newer response
    assert sa_b.next_peer_id == 3
    sent, events = feed(pair.b, ike_auth_request, pair.now)
    assert sent == [] and any("message ID 1" in line for line in logs(events))
    # A response nobody asked for (IKE_AUTH's, replayed to the initiator): dropped.
    sent, events = feed(pair.a, ike_auth_response, pair.now)
    assert sent == [] and any("unexpected message ID" in line for line in logs(events))
    assert len(pair.a.of(IkeSaUp)) == len(pair.b.of(IkeSaUp)) == 1
    assert tunnel_problems(pair) == []


def test_ike_auth_replayed_after_more_exchanges_changes_nothing() -> None:
    pair = established()
    ike_auth_request = pair.a.sent[1].data
    pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    children = [c.spi_in for c in current(pair.b).children]
    sent, events = feed(pair.b, ike_auth_request, pair.now)
    assert sent == [] and logs(events)
    assert [c.spi_in for c in current(pair.b).children] == children
    assert len(pair.b.of(IkeSaUp)) == 1 and tunnel_problems(pair) == []


@pytest.mark.parametrize("direction", ["request", "response"])
def test_failed_icv_is_dropped_and_the_sa_is_unaffected(direction: str) -> None:
    """RFC 7296 2.21.2 / 3.14: a message whose ICV fails is discarded without an answer;
    the genuine message that follows goes through."""
    pair = established()
    pair.a.endpoint.rekey("peer", pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    sa_b = current(pair.b)
    if direction == "request":
        target, data = pair.b, request.data
    else:
        [response], _ = feed(pair.b, request.data, pair.now)
        target, data = pair.a, response.data
    for position in (len(data) - 1, len(data) - 20, 40):  # ICV, ciphertext, IV
        corrupted = bytearray(data)
        corrupted[position] ^= 0x01
        sent, events = feed(target, bytes(corrupted), pair.now)
        assert sent == []
        assert any("integrity check" in line for line in logs(events))
        assert not any(isinstance(e, ExchangeFailed) for e in events)
    assert sa_b.next_peer_id == (2 if direction == "request" else 3)
    sent, events = feed(target, data, pair.now)
    if direction == "request":
        assert len(sent) == 1
        feed(pair.a, sent[0].data, pair.now)
    assert any(isinstance(e, ChildSaInstalled) for e in events)
    pair.deliver()
    assert tunnel_problems(pair) == []


# -- critical payloads ------------------------------------------------------------------
def test_unsupported_critical_payload_inside_sk_is_refused_with_its_notify() -> None:
    """RFC 7296 2.5 / 3.2: an unknown payload with the critical bit makes the request fail
    with UNSUPPORTED_CRITICAL_PAYLOAD carrying the payload type; the SA stays up."""
    pair = established()
    sa_a, sa_b = current(pair.a), current(pair.b)
    request = sa_a.encode(
        ExchangeType.INFORMATIONAL, 2, False, [(200, UnknownPayload(200, True, b"\x00\x01"))]
    )
    [answer], events = feed(pair.b, request, pair.now)
    response = opened(sa_a, answer.data)
    assert response.is_response and response.message_id == 2 and response.encrypted
    refusal = response.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert refusal is not None and refusal.data == bytes([200])
    assert [e.notify for e in events if isinstance(e, ExchangeFailed)] == [
        "UNSUPPORTED_CRITICAL_PAYLOAD"
    ]
    assert sa_b.state == IkeState.ESTABLISHED


def test_unknown_non_critical_payload_inside_sk_is_skipped() -> None:
    pair = established()
    sa_a = current(pair.a)
    request = sa_a.encode(
        ExchangeType.INFORMATIONAL, 2, False, [(200, UnknownPayload(200, False, b"\x00\x01"))]
    )
    [answer], events = feed(pair.b, request, pair.now)
    response = opened(sa_a, answer.data)
    assert response.is_response and response.notifies() == []
    assert not any(isinstance(e, ExchangeFailed) for e in events)


def test_unsupported_critical_payload_in_ike_sa_init_gets_a_stateless_refusal() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", A, B, pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    message = decode_message(request.data)
    message.payloads.append((200, UnknownPayload(200, True, b"")))
    [answer], events = feed(pair.b, encode_message(message), pair.now)
    response = decode_message(answer.data)
    refusal = response.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert response.is_response and refusal is not None and refusal.data == bytes([200])
    assert response.spi_r == bytes(8) and pair.b.endpoint.half_open_count == 0
    assert logs(events)


# -- flood, cookies, half-open limits ----------------------------------------------------
def spoofed(index: int) -> Address:
    return Address(str(ipaddress.ip_address("203.0.113.0") + 1 + index % 250), 500 + index // 250)


def with_spi(request: bytes, index: int) -> bytes:
    return (0x5000 + index).to_bytes(8, "big") + request[8:]


def with_cookie(request: bytes, cookie: bytes) -> bytes:
    message = decode_message(request)
    note = NotifyPayload(ProtocolId.NONE, b"", NotifyType.COOKIE, cookie)
    message.payloads.insert(0, (PayloadType.NOTIFY, note))
    return encode_message(message)


def test_flood_of_ike_sa_init_from_spoofed_addresses() -> None:
    """RFC 7296 2.6: past the half-open threshold the responder answers with a stateless
    COOKIE; past the hard cap it drops; established SAs and a real initiator that returns
    the cookie are not hurt; the half-open SAs time out."""
    threshold, cap = 4, 10
    p = policy()
    pair = Pair(p, mirror(p, remote_address=None), cookie_threshold=threshold, max_half_open=cap)
    pair.connect()
    assert tunnel_problems(pair) == []
    template = pair.a.sent[0].data
    most = 0
    # Spoofed sources never see our answers: they cannot return a cookie.
    for index in range(60):
        sent, events = feed(pair.b, with_spi(template, index), pair.now, remote=spoofed(index))
        most = max(most, pair.b.endpoint.half_open_count)
        assert len(sent) == 1 and sent[0].remote == spoofed(index)
        answer = decode_message(sent[0].data)
        if index < threshold:
            assert answer.get(PayloadType.SA) is not None  # a real answer, state kept
        else:
            cookie = answer.notify(NotifyType.COOKIE)
            assert cookie is not None and len(answer.payloads) == 1
    assert pair.b.endpoint.half_open_count == threshold == most
    assert pair.b.endpoint.cookies_sent == 60 - threshold

    # The established SA keeps working through the flood.
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    assert tunnel_problems(pair) == [] and unplanned_downs(pair) == []

    # Sources that do receive our answers return the cookie: they get state, up to the cap.
    dropped = 0
    for index in range(100, 120):
        request = with_spi(template, index)
        sent, events = feed(pair.b, request, pair.now, remote=spoofed(index))
        if sent:
            cookie = decode_message(sent[0].data).notify(NotifyType.COOKIE)
            assert cookie is not None
            sent, events = feed(
                pair.b, with_cookie(request, cookie.data), pair.now, remote=spoofed(index)
            )
        most = max(most, pair.b.endpoint.half_open_count)
        if not sent:  # at the cap: dropped, cookie or not
            dropped += 1
            assert pair.b.endpoint.half_open_count == cap
            assert any(e.level == "warning" for e in events if isinstance(e, LogMessage))
    assert most == cap == pair.b.endpoint.half_open_count
    assert dropped == 20 - (cap - threshold)

    # Half-open SAs time out; each end is reported; the tunnel is still up.
    reported = len(pair.b.events)
    pair.advance(p.timing.half_open_timeout + 1)
    assert pair.b.endpoint.half_open_count == 0
    ends = [str(e) for e in pair.b.events[reported:] if isinstance(e, (IkeSaDown, LogMessage))]
    timed_out = [
        index
        for index in [*range(threshold), *range(100, 100 + cap - threshold)]
        if any(with_spi(b"", index)[:8].hex() in line for line in ends)
    ]
    assert len(timed_out) == cap
    assert tunnel_problems(pair) == [] and unplanned_downs(pair) == []


def test_a_real_initiator_gets_through_a_flood_with_its_cookie() -> None:
    threshold = 3
    p = policy()
    pair = Pair(p, mirror(p, remote_address=None), cookie_threshold=threshold)
    pair.a.endpoint.connect("peer", A, B, pair.now)
    [first] = pair.a.endpoint.pop_datagrams()
    for index in range(20):
        feed(pair.b, with_spi(first.data, index), pair.now, remote=spoofed(index))
    assert pair.b.endpoint.half_open_count == threshold
    pair.b.endpoint.receive(first.data, B, A, pair.now)  # now the real one
    pair.deliver()
    assert tunnel_problems(pair) == []
    assert pair.b.endpoint.cookies_sent == 20 - threshold + 1
    # After the first IKE_SA_INIT (delivered by hand): again with the COOKIE, IKE_AUTH.
    assert len(pair.a.sent) == 2
    assert decode_message(pair.a.sent[0].data).notify(NotifyType.COOKIE) is not None


def test_half_open_sa_times_out_and_leaves_nothing_behind() -> None:
    p = policy()
    pair = Pair(p, mirror(p))
    pair.drop = lambda side, data: side is pair.a and data[18] == ExchangeType.IKE_AUTH
    pair.connect()
    assert pair.b.endpoint.half_open_count == 1
    pair.advance(p.timing.half_open_timeout + 0.5)
    assert pair.b.endpoint.half_open_count == 0
    [down] = pair.b.of(IkeSaDown)
    assert down.reason == DownReason.TIMEOUT and "half-open" in down.detail
    assert not pair.b.of(IkeSaUp)


def test_a_request_before_the_lost_ike_auth_response_does_not_kill_the_tunnel() -> None:
    """B finished IKE_AUTH and asks something at once; its IKE_AUTH response to A was lost.
    A leaves the request for B to retransmit and resends IKE_AUTH at once: both end up
    with the one IKE SA, and B's request is answered after all (seen under 30 % loss)."""
    p = policy()
    pair = Pair(p, mirror(p))
    lost: list[bytes] = []

    def lose_the_ike_auth_response(side: Side, data: bytes) -> bool:
        if side is pair.b and data[18] == ExchangeType.IKE_AUTH and not lost:
            lost.append(data)
            return True
        return False

    pair.drop = lose_the_ike_auth_response
    pair.connect()
    assert lost and pair.b.of(IkeSaUp) and not pair.a.of(IkeSaUp)
    assert pair.b.endpoint.rekey("peer", pair.now)  # a CREATE_CHILD_SA request from B
    pair.deliver()  # no time passes: A answers by resending IKE_AUTH, not by its timer
    assert pair.a.of(IkeSaUp), "A did not resend IKE_AUTH on B's request"
    pair.advance(10)  # B retransmits its request
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)
    sa_a, sa_b = pair.a.endpoint.current_sa("peer"), pair.b.endpoint.current_sa("peer")
    assert sa_a is not None and sa_b is not None
    assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r)
    assert len(pair.b.of(ChildSaInstalled)) == 2, "B's Child SA rekey was never answered"


def test_copies_of_a_request_before_the_ike_auth_response_resend_it_once() -> None:
    """Copies or replays of the responder's request make one early IKE_AUTH, not one each:
    they neither use up the retransmissions nor move their schedule."""
    p = policy()
    pair = Pair(p, mirror(p))
    held: list[bytes] = []

    def hold(side: Side, data: bytes) -> bool:
        if side is pair.b and data[18] == ExchangeType.IKE_AUTH:
            return True  # every IKE_AUTH response lost
        if side is pair.b and data[18] == ExchangeType.CREATE_CHILD_SA:
            held.append(data)
            return True
        return False

    pair.drop = hold
    pair.connect()
    assert pair.b.endpoint.rekey("peer", pair.now)
    pair.deliver()
    sa = pair.a.endpoint.current_sa("peer")
    assert held and sa is not None and sa._active is not None
    sends, next_at = sa._active.sends, sa._active.next_at
    for _ in range(5):
        pair.a.endpoint.receive(held[0], Address(A_ADDR, 500), Address(B_ADDR, 500), pair.now)
    resent = [d for d in pair.a.endpoint.pop_datagrams() if d.data[18] == ExchangeType.IKE_AUTH]
    assert len(resent) == 1
    assert (sa._active.sends, sa._active.next_at) == (sends, next_at)


# -- regressions: engine bugs the property tests found (fixed in 480df61) ------------
def test_plaintext_messages_on_an_established_sa_are_ignored() -> None:
    """RFC 7296 1.2: every message after IKE_SA_INIT is protected.  A plaintext DELETE or
    an empty INFORMATIONAL with the right SPIs and message ID, which anyone who saw the
    SPIs can forge, must not close the SA nor use up the message ID."""
    pair = established()
    sa_b = current(pair.b)
    forged = [
        plain(
            sa_b,
            ExchangeType.INFORMATIONAL,
            2,
            [(PayloadType.DELETE, DeletePayload(ProtocolId.IKE, ()))],
        ),
        plain(sa_b, ExchangeType.INFORMATIONAL, 2, []),
        plain(sa_b, ExchangeType.CREATE_CHILD_SA, 2, []),
    ]
    for data in forged:
        data = data[:19] + bytes([0x08]) + data[20:]  # I flag: "from the initiator"
        sent, events = feed(pair.b, data, pair.now)
        assert sent == [] and logs(events)
        assert sa_b.state == IkeState.ESTABLISHED and sa_b.next_peer_id == 2
    assert tunnel_problems(pair) == []


def test_request_with_an_unknown_exchange_type_does_not_escape() -> None:
    """An authenticated request of an exchange type we do not know: no exception leaks out
    of the endpoint, the SA stays up, an event says what happened."""
    pair = established()
    sa_a, sa_b = current(pair.a), current(pair.b)
    for exchange in (43, 99, 0):
        request = sealed(sa_a, exchange, sa_b.next_peer_id, [])
        _, events = feed(pair.b, request, pair.now)
        assert events
        assert sa_b.state == IkeState.ESTABLISHED
    assert tunnel_problems(pair) == []


def test_forged_ike_sa_init_request_does_not_kill_the_initiators_half_open_sa() -> None:
    """The initiator's SA in IKE_SA_INIT expects a response, never a request.  A copy of
    the responder's answer with the R flag cleared (or any unprotected request with our
    SPI) must be dropped, not answered, and must not close the SA: the real response
    that follows completes the exchange (RFC 7296 2.21: before an IKE SA is
    authenticated, do not be "a dupe in a denial of service attack based on forged
    messages")."""
    p = policy()
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", A, B, pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    [response], _ = feed(pair.b, request.data, pair.now)
    forged = response.data[:19] + bytes([response.data[19] & ~0x20 & 0xFF]) + response.data[20:]
    sent, events = feed(pair.a, forged, pair.now)
    assert sent == [] and logs(events)
    assert not any(isinstance(e, (IkeSaDown, ExchangeFailed)) for e in events)
    assert current(pair.a).state == IkeState.CONNECTING
    pair.a.endpoint.receive(response.data, A, B, pair.now)
    pair.deliver()
    assert tunnel_problems(pair) == []


def test_a_new_ike_sa_init_with_a_known_spi_is_not_taken_for_a_retransmission() -> None:
    """RFC 7296 2.1: the SPI and address do not tell a retransmission from a new request
    (a restarted initiator, two hosts behind one NAT); the request's bytes do.  A new
    request gets a fresh answer and its own SA; a true retransmission the cached one."""
    p = policy()
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", A, B, pair.now)
    [first] = pair.a.endpoint.pop_datagrams()
    [answer], _ = feed(pair.b, first.data, pair.now)
    [again], _ = feed(pair.b, first.data, pair.now)
    assert again.data == answer.data and pair.b.endpoint.half_open_count == 1
    # Another initiator's request with the same SPI, from the same address.
    other = Ikev2Endpoint([p], SeededRandomSource(99))
    other.connect("peer", A, B, pair.now)
    [second] = other.pop_datagrams()
    second_data = first.data[:8] + second.data[8:]
    assert second_data != first.data
    [fresh], _ = feed(pair.b, second_data, pair.now)
    assert fresh.data != answer.data
    assert decode_message(fresh.data).spi_r != decode_message(answer.data).spi_r
    assert pair.b.endpoint.half_open_count == 2
    # The first initiator still completes with its own answer.
    pair.a.endpoint.receive(answer.data, A, B, pair.now)
    pair.deliver()
    assert tunnel_problems(pair) == []


@pytest.mark.parametrize("exchange", ["IKE_AUTH", "rekey"])
def test_unauthenticated_garbage_response_does_not_end_the_exchange(exchange: str) -> None:
    """A response whose outer payload chain is broken cannot be authenticated: it must be
    dropped like one with a bad ICV (RFC 7296 2.21.2), not taken as the end of the
    exchange.  The real response that follows completes it."""
    p = policy()
    pair = Pair(p, mirror(p))
    if exchange == "IKE_AUTH":
        pair.a.endpoint.connect("peer", A, B, pair.now)
        [init] = pair.a.endpoint.pop_datagrams()
        [init_response], _ = feed(pair.b, init.data, pair.now)
        [request], _ = feed(pair.a, init_response.data, pair.now)
    else:
        pair.connect()
        pair.a.endpoint.rekey("peer", pair.now)
        [request] = pair.a.endpoint.pop_datagrams()
    [response], _ = feed(pair.b, request.data, pair.now)
    sk_at = payload_header_offsets(response.data)[0]
    for garbage in (
        set_u16(response.data, sk_at + 2, 0),
        set_u32(response.data[:-8], 24, len(response.data) - 8),
    ):
        sent, events = feed(pair.a, garbage, pair.now)
        assert sent == [] and logs(events)
        assert not any(isinstance(e, (IkeSaDown, ExchangeFailed)) for e in events)
    sent, events = feed(pair.a, response.data, pair.now)
    assert any(isinstance(e, ChildSaInstalled) for e in events)
    pair.a.events += events
    pair.b.events += pair.b.endpoint.pop_events()
    for datagram in sent:
        pair.b.endpoint.receive(datagram.data, B, A, pair.now)
    pair.deliver()
    assert tunnel_problems(pair) == []


def test_unauthenticated_garbage_request_gets_no_answer_and_keeps_the_message_id() -> None:
    """The same for a request: answering INVALID_SYNTAX to a message nobody authenticated,
    and caching that answer, would make the genuine request that follows fail."""
    pair = established()
    sa_b = current(pair.b)
    pair.a.endpoint.rekey("peer", pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    sk_at = payload_header_offsets(request.data)[0]
    sent, events = feed(pair.b, set_u16(request.data, sk_at + 2, 0), pair.now)
    assert sent == [] and logs(events)
    assert not any(isinstance(e, ExchangeFailed) for e in events)
    assert sa_b.next_peer_id == 2
    [answer], events = feed(pair.b, request.data, pair.now)
    assert any(isinstance(e, ChildSaInstalled) for e in events)
    pair.a.endpoint.receive(answer.data, A, B, pair.now)
    pair.deliver()
    assert tunnel_problems(pair) == []


def test_ike_sa_init_request_with_a_nonzero_message_id_is_ignored() -> None:
    """RFC 7296 2.2: the message ID of IKE_SA_INIT is zero.  A request with another one
    cannot be genuine; accepting it lets a copy with a bumped ID win the race against the
    real request, whose AUTH then fails (the responder signed the copy's bytes)."""
    p = policy()
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", A, B, pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    sent, events = feed(pair.b, set_u32(request.data, 20, 1), pair.now)
    assert sent == [] and logs(events)
    assert pair.b.endpoint.half_open_count == 0
    pair.b.endpoint.receive(request.data, B, A, pair.now)
    pair.deliver()
    assert tunnel_problems(pair) == []


@pytest.mark.parametrize("direction", ["request", "response"])
def test_ike_sa_init_with_the_wrong_initiator_flag_is_ignored(direction: str) -> None:
    """RFC 7296 3.1: the I flag MUST be set in messages from the original initiator and
    cleared in those from the original responder; it tells the receiver which SPI is its
    own.  An IKE_SA_INIT request without it, or a response with it, cannot be genuine.
    Taking either in (the responder: as a new half-open SA whose retransmission the real
    request then is; the initiator: as the response) binds the copy's bytes into the AUTH
    computation, and the real exchange fails AUTHENTICATION_FAILED."""
    p = policy()
    pair = Pair(p, mirror(p))
    pair.a.endpoint.connect("peer", A, B, pair.now)
    [request] = pair.a.endpoint.pop_datagrams()
    if direction == "request":
        forged = request.data[:19] + bytes([request.data[19] & ~0x08 & 0xFF]) + request.data[20:]
        sent, events = feed(pair.b, forged, pair.now)
        assert pair.b.endpoint.half_open_count == 0
        pair.b.endpoint.receive(request.data, B, A, pair.now)
    else:
        [response], _ = feed(pair.b, request.data, pair.now)
        forged = response.data[:19] + bytes([response.data[19] | 0x08]) + response.data[20:]
        sent, events = feed(pair.a, forged, pair.now)
        pair.a.endpoint.receive(response.data, A, B, pair.now)
    assert sent == [] and logs(events)
    pair.deliver()
    assert tunnel_problems(pair) == []
    assert not pair.a.of(ExchangeFailed) and not pair.b.of(ExchangeFailed)


def test_unprocessable_ike_rekey_response_does_not_split_the_peers() -> None:
    """The responder of an IKE SA rekey moves everything to the new SA at once; if the
    initiator cannot process the (authenticated) response it stays on the old one.  The
    old SA must not linger on the responder forever (answering liveness checks and
    refusing every further rekey with TEMPORARY_FAILURE every few seconds) while the
    new one dies of DPD: within ten minutes both ends must agree again."""
    pair = established()
    pair.a.endpoint.rekey("peer", pair.now, ike=True)
    [request] = pair.a.endpoint.pop_datagrams()
    [response], _ = feed(pair.b, request.data, pair.now)
    sa_a = current(pair.a)
    broken = sealed_as_peer(sa_a, response.data, [])  # an empty CREATE_CHILD_SA response
    feed(pair.a, broken, pair.now)
    pair.advance(600)
    assert tunnel_problems(pair, strict=False) == []
    failures = [e for e in pair.b.of(ExchangeFailed) if e.notify == "TEMPORARY_FAILURE"]
    assert len(failures) < 10


# -- the stored corpus -----------------------------------------------------------------
def corpus_entry(path: Path) -> bytes:
    lines = (line.split("#", 1)[0] for line in path.read_text().splitlines())
    return bytes.fromhex("".join("".join(lines).split()))


def corpus_expectation(path: Path) -> str:
    """The `# expect:` line of a corpus file: "silence" or "survive"."""
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.split(":", 1)[1].strip()
    return "survive"


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.hex")), ids=lambda p: p.stem)
def test_corpus_inputs(path: Path) -> None:
    """Each stored input goes to a fresh responder and to both sides of an established
    pair (the pair's fixed randomness gives the SPIs the corpus files carry): nothing
    escapes, and the tunnel is still up afterwards."""
    data = corpus_entry(path)
    fresh = Side("b", Ikev2Endpoint([mirror(policy())], SeededRandomSource(3)), B_ADDR)
    feed(fresh, data, 1000.0)
    pair = established()
    for side in (pair.b, pair.a):
        sent, _ = feed(side, data, pair.now)
        if corpus_expectation(path) == "silence":
            assert sent == [], f"{side.name} answered"
            assert current(side).state == IkeState.ESTABLISHED
    pair.deliver()
    pair.advance(60)
    assert tunnel_problems(pair) == []


# -- forging with keys ---------------------------------------------------------------------
def outbound(sa: IkeSa) -> IkeProtector:
    """The protector `sa` seals its messages with."""
    assert sa.keys is not None and sa.negotiated is not None
    return create_ike_protectors(
        sa.negotiated.encr_choice, sa.negotiated.integ, sa.keys, sa.initiator
    )[0]


def sealed(sa: IkeSa, exchange: int, message_id: int, payloads: list[tuple[int, Payload]]) -> bytes:
    """A request protected with `sa`'s keys, as its misbehaving owner could send it."""
    message = Message(sa.spi_i, sa.spi_r, exchange, sa.initiator, False, message_id, payloads)
    return encode_message(message, outbound(sa), sa.rng)


def sealed_as_peer(receiver: IkeSa, like: bytes, payloads: list[tuple[int, Payload]]) -> bytes:
    """A message with the header of `like` and `payloads`, sealed with the keys of
    `receiver`'s peer (which hold the peer's outbound direction)."""
    assert receiver.keys is not None and receiver.negotiated is not None
    peer_out = create_ike_protectors(
        receiver.negotiated.encr_choice,
        receiver.negotiated.integ,
        receiver.keys,
        not receiver.initiator,
    )[0]
    header = decode_message(
        like,
        create_ike_protectors(
            receiver.negotiated.encr_choice,
            receiver.negotiated.integ,
            receiver.keys,
            receiver.initiator,
        )[1],
    )
    header.payloads = payloads
    return encode_message(header, peer_out, receiver.rng)


@pytest.mark.parametrize("moment", ["ike_auth_answered", "established_a_while"])
def test_late_copy_of_ike_sa_init_is_not_taken_for_a_new_request(moment: str) -> None:
    """RFC 7296 2.1: a copy of the IKE_SA_INIT request that arrives after the IKE SA went
    on to IKE_AUTH is no new request: it creates no half-open SA and gets no answer."""
    pair = established()
    request = pair.a.sent[0].data
    assert decode_message(request).exchange_type == ExchangeType.IKE_SA_INIT
    sas_before = dict(pair.b.endpoint._sas)
    if moment == "established_a_while":
        pair.advance(600)
        sas_before = dict(pair.b.endpoint._sas)
    sent, events = feed(pair.b, request, pair.now)
    assert sent == [] and any("late copy" in line for line in logs(events))
    assert pair.b.endpoint.half_open_count == 0
    assert pair.b.endpoint._sas == sas_before
    pair.advance(60)
    assert not [e for e in pair.b.of(IkeSaDown)]
    assert tunnel_problems(pair) == []


def test_ike_sa_init_copies_are_forgotten_with_their_ike_sa() -> None:
    pair = established()
    sa_b = current(pair.b)
    pair.a.endpoint.disconnect("peer", pair.now)
    pair.deliver()
    assert sa_b.gone
    assert pair.b.endpoint._answered_inits == {}
