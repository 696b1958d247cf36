"""ESP behaviour beyond the known answers: round trips, bad input, ESN, lifetimes."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    ExpiryKind,
    Lifetime,
    SaMode,
    SaSpec,
)
from core.dataplane.userspace.esp import (
    DropKind,
    EspDropped,
    EspSa,
    EspSaError,
    EspSendRefused,
)
from core.dataplane.userspace.packet import build_ipv4_header, internet_checksum
from core.errors import PeerError

A = ipaddress.IPv4Address("198.51.100.1")
B = ipaddress.IPv4Address("198.51.100.2")

SUITES = {
    "aes-gcm-128": (EspAlgorithm.AES_GCM_16, bytes(range(20)), EspIntegrity.NONE, b""),
    "aes-gcm-256": (EspAlgorithm.AES_GCM_16, bytes(range(36)), EspIntegrity.NONE, b""),
    "chacha20-poly1305": (EspAlgorithm.CHACHA20_POLY1305, bytes(36), EspIntegrity.NONE, b""),
    "aes-cbc-sha1": (EspAlgorithm.AES_CBC, bytes(16), EspIntegrity.HMAC_SHA1_96, bytes(20)),
    "aes-cbc-sha256": (
        EspAlgorithm.AES_CBC, bytes(32), EspIntegrity.HMAC_SHA2_256_128, bytes(32)
    ),
    "aes-cbc-sha384": (
        EspAlgorithm.AES_CBC, bytes(24), EspIntegrity.HMAC_SHA2_384_192, bytes(48)
    ),
    "aes-cbc-sha512": (
        EspAlgorithm.AES_CBC, bytes(32), EspIntegrity.HMAC_SHA2_512_256, bytes(64)
    ),
}  # fmt: skip


def spec(
    suite: str = "aes-gcm-128",
    *,
    direction: Direction = Direction.OUT,
    mode: SaMode = SaMode.TUNNEL,
    esn: bool = False,
    window: int = 128,
    lifetime: Lifetime | None = None,
) -> SaSpec:
    algorithm, key, integrity, integrity_key = SUITES[suite]
    return SaSpec(
        spi=0xC0FFEE01,
        direction=direction,
        src=A,
        dst=B,
        mode=mode,
        algorithm=algorithm,
        encryption_key=key,
        integrity=integrity,
        integrity_key=integrity_key,
        esn=esn,
        replay_window=window,
        lifetime=lifetime or Lifetime(),
    )


def pair(suite: str = "aes-gcm-128", **kwargs: object) -> tuple[EspSa, EspSa]:
    out_spec = spec(suite, **kwargs)  # type: ignore[arg-type]
    return EspSa(out_spec, 0.0), EspSa(replace(out_spec, direction=Direction.IN), 0.0)


def icmp_packet(payload: bytes = b"ping" * 10, tos: int = 0xB8) -> bytes:
    icmp = b"\x08\x00\x00\x00\x12\x34\x00\x01" + payload
    checksum = internet_checksum(icmp)
    icmp = icmp[:2] + checksum.to_bytes(2, "big") + icmp[4:]
    header = build_ipv4_header(
        src=ipaddress.IPv4Address("10.0.0.1"),
        dst=ipaddress.IPv4Address("10.0.0.2"),
        protocol=1,
        payload_length=len(icmp),
        tos=tos,
    )
    return header + icmp


@pytest.mark.parametrize("suite", sorted(SUITES))
@pytest.mark.parametrize("esn", [False, True])
def test_round_trip_tunnel_mode(suite: str, esn: bool) -> None:
    outbound, inbound = pair(suite, esn=esn)
    for size in (0, 1, 2, 3, 15, 16, 17, 1400):
        packet = icmp_packet(b"x" * size)
        esp = outbound.encapsulate(packet)
        assert inbound.decapsulate(esp) == packet  # the inner ToS travels inside, untouched
    assert outbound.counters().packets == inbound.counters().packets == 8
    assert outbound.counters().bytes == inbound.counters().bytes > 0


def test_aead_iv_is_the_sequence_number_and_padding_is_minimal() -> None:
    outbound, inbound = pair()
    esp = outbound.encapsulate(icmp_packet(b"x"))
    assert esp[4:8] == (1).to_bytes(4, "big")
    assert esp[8:16] == (1).to_bytes(8, "big")
    next_header, payload = inbound.unprotect(esp, 1)
    assert next_header == 4
    assert len(payload) == 29  # + 1 byte of padding + 2 = 32: header, IV, 32, ICV
    assert len(esp) == 8 + 8 + 32 + 16


def test_cbc_hmac_icv_covers_header_iv_ciphertext_and_esn_high_bits() -> None:
    # Recompute the ICV independently: RFC 4303 2.2.1 appends seq high after the payload.
    outbound = EspSa(spec("aes-cbc-sha256", esn=True), 0.0)
    outbound.next_sequence = (7 << 32) | 9
    esp = outbound.encapsulate(icmp_packet())
    covered, icv = esp[:-16], esp[-16:]
    expected = hmac.digest(bytes(32), covered + (7).to_bytes(4, "big"), "sha256")[:16]
    assert icv == expected
    assert esp[4:8] == (9).to_bytes(4, "big")  # only the low half travels


def test_cbc_uses_a_fresh_random_iv() -> None:
    outbound, _ = pair("aes-cbc-sha256")
    first = outbound.encapsulate(icmp_packet())
    second = outbound.encapsulate(icmp_packet())
    assert first[8:24] != second[8:24]


def test_esn_high_bits_are_inferred_across_the_wrap() -> None:
    outbound, inbound = pair("chacha20-poly1305", esn=True)
    outbound.next_sequence = (1 << 32) - 60
    first = outbound.encapsulate(icmp_packet())
    with pytest.raises(EspDropped):  # a fresh receiver cannot place it below zero...
        inbound.decapsulate(first)
    inbound = EspSa(replace(inbound.spec), 0.0)
    sender = EspSa(outbound.spec, 0.0)  # ...so walk a receiver up with real traffic
    for _ in range(3):
        inbound.decapsulate(sender.encapsulate(icmp_packet()))
    # Past the first window (case A of RFC 4303 A2.2) a jump forward is placed right.
    sender.next_sequence = 200
    inbound.decapsulate(sender.encapsulate(icmp_packet()))
    sender.next_sequence = (1 << 32) - 100
    packets = [sender.encapsulate(icmp_packet(bytes([i]))) for i in range(120)]
    for esp in packets[:90] + packets[100:] + packets[90:100]:  # crossing, reordered
        inbound.decapsulate(esp)
    assert inbound.counters().packets == 124
    with pytest.raises(EspDropped) as caught:
        inbound.decapsulate(packets[105])
    assert caught.value.kind is DropKind.REPLAY


def test_esn_packet_with_wrong_high_bits_fails_the_icv() -> None:
    # Without ESN on the receiver the seq high bits are missing from the AAD.
    outbound = EspSa(spec(esn=True), 0.0)
    inbound = EspSa(spec(direction=Direction.IN, esn=False), 0.0)
    outbound.next_sequence = (1 << 32) + 5
    with pytest.raises(EspDropped) as caught:
        inbound.decapsulate(outbound.encapsulate(icmp_packet()))
    assert caught.value.kind is DropKind.INTEGRITY
    assert inbound.counters().integrity_errors == 1


def test_replayed_and_out_of_window_packets_are_dropped_and_counted() -> None:
    outbound, inbound = pair(window=32)
    packets = [outbound.encapsulate(icmp_packet()) for _ in range(40)]
    inbound.decapsulate(packets[39])
    inbound.decapsulate(packets[20])  # inside the window, out of order: accepted
    for stale in (packets[20], packets[39], packets[0]):
        with pytest.raises(EspDropped) as caught:
            inbound.decapsulate(stale)
        assert caught.value.kind is DropKind.REPLAY
    assert inbound.counters().replay_errors == 3
    assert inbound.counters().packets == 2


def test_a_forged_packet_does_not_move_the_replay_window() -> None:
    outbound, inbound = pair()
    genuine = [outbound.encapsulate(icmp_packet()) for _ in range(3)]
    forged = bytearray(genuine[2])
    forged[4:8] = (1000).to_bytes(4, "big")  # far ahead, ICV cannot match
    with pytest.raises(EspDropped):
        inbound.decapsulate(bytes(forged))
    for esp in genuine:
        inbound.decapsulate(esp)
    assert inbound.counters().integrity_errors == 1
    assert inbound.counters().packets == 3


@pytest.mark.parametrize(
    ("mangle", "kind"),
    [
        (lambda esp: esp[:7], DropKind.MALFORMED),
        (lambda esp: esp[:20], DropKind.MALFORMED),
        (lambda esp: b"\x00\x00\x00\x01" + esp[4:], DropKind.MALFORMED),  # other SPI
        (lambda esp: esp[:4] + b"\x00\x00\x00\x00" + esp[8:], DropKind.REPLAY),  # seq 0
        (lambda esp: esp[:30] + bytes([esp[30] ^ 0x80]) + esp[31:], DropKind.INTEGRITY),
        (lambda esp: esp + b"\x00", DropKind.INTEGRITY),
    ],
)
def test_garbled_packets_raise_one_family(mangle: object, kind: DropKind) -> None:
    outbound, inbound = pair()
    esp = outbound.encapsulate(icmp_packet())
    with pytest.raises(EspDropped) as caught:
        inbound.decapsulate(mangle(esp))  # type: ignore[operator]
    assert caught.value.kind is kind
    assert isinstance(caught.value, PeerError)


def _authentic(outbound: EspSa, plaintext_tail: bytes, payload: bytes) -> bytes:
    """An authentic packet whose trailer we choose (wrong padding etc.)."""
    seq = outbound.next_sequence
    outbound.next_sequence = seq + 1
    # Build a payload whose minimal padding is zero, then end it with our own trailer.
    body = payload + plaintext_tail
    assert len(body) % 4 == 0
    return _seal_raw(outbound, body, seq)


def _seal_raw(outbound: EspSa, plaintext: bytes, seq: int) -> bytes:
    # protect() appends a trailer; strip it by sealing with the transform directly.
    transform = outbound._transform  # the test reaches in to forge
    header = (outbound.spec.spi.to_bytes(4, "big")) + seq.to_bytes(4, "big")
    iv = seq.to_bytes(8, "big")
    return header + iv + transform.seal(header, b"", iv, plaintext)


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"\x01\x03\x02\x04", "padding bytes"),  # padding 01 03 instead of 01 02
        (b"\x00\x00\x09\x04", "pad length beyond"),  # pad length larger than the data
    ],
)
def test_bad_padding_is_dropped_after_the_icv(tail: bytes, reason: str) -> None:
    outbound, inbound = pair()
    esp = _authentic(outbound, tail, b"")
    with pytest.raises(EspDropped, match=reason) as caught:
        inbound.decapsulate(esp)
    assert caught.value.kind is DropKind.MALFORMED
    assert inbound.counters().other_errors == 1
    # The ICV passed, so the sequence number is consumed: a resend is a replay.
    with pytest.raises(EspDropped) as again:
        inbound.decapsulate(esp)
    assert again.value.kind is DropKind.REPLAY


def test_dummy_packets_are_dropped_silently() -> None:
    outbound, inbound = pair()
    esp = outbound.protect(b"chaff", 59, 1)
    with pytest.raises(EspDropped) as caught:
        inbound.decapsulate(esp)
    assert caught.value.kind is DropKind.DUMMY
    counters = inbound.counters()
    assert (counters.packets, counters.other_errors, counters.integrity_errors) == (0, 0, 0)


def test_tunnel_mode_rejects_a_non_ipv4_inner_packet() -> None:
    outbound, inbound = pair()
    with pytest.raises(EspDropped, match="next header"):
        inbound.decapsulate(outbound.protect(b"\x60" + bytes(43), 41, 1))
    with pytest.raises(EspDropped, match="not a valid IPv4"):
        inbound.decapsulate(outbound.protect(b"\x45" + bytes(10), 4, 2))
    with pytest.raises(EspSendRefused):
        outbound.encapsulate(b"\x60" + bytes(60))


def test_tunnel_mode_strips_tfc_padding_after_the_inner_packet() -> None:
    outbound, inbound = pair()
    packet = icmp_packet()
    assert inbound.decapsulate(outbound.protect(packet + bytes(16), 4, 1)) == packet


def test_transport_mode_rebuilds_the_header_from_the_sa() -> None:
    outbound, inbound = pair(mode=SaMode.TRANSPORT)
    packet = icmp_packet(tos=0)
    esp = outbound.encapsulate(packet)
    inner = inbound.decapsulate(esp)
    assert inner[20:] == packet[20:]
    assert inner[9] == 1  # protocol from the next header field
    assert inner[12:16] == A.packed and inner[16:20] == B.packed
    assert internet_checksum(inner[:20]) == 0
    fragment = bytearray(packet)
    fragment[6] |= 0x20  # more fragments
    with pytest.raises(EspSendRefused, match="fragments"):
        outbound.encapsulate(bytes(fragment))


def test_sequence_numbers_never_cycle() -> None:
    outbound, inbound = pair()
    outbound.next_sequence = (1 << 32) - 1
    inbound.decapsulate(outbound.encapsulate(icmp_packet()))
    with pytest.raises(EspSendRefused, match="sequence numbers"):
        outbound.encapsulate(icmp_packet())
    assert outbound.poll(1.0) == [ExpiryKind.SOFT, ExpiryKind.HARD]
    assert outbound.poll(2.0) == []
    with pytest.raises(EspSaError):
        outbound.next_sequence = 5


def test_esn_extends_the_sequence_space() -> None:
    outbound = EspSa(spec(esn=True), 0.0)
    outbound.next_sequence = 1 << 32
    assert outbound.encapsulate(icmp_packet())[4:8] == bytes(4)
    assert outbound.poll(0.0) == []


def test_soft_and_hard_limits_by_packets_bytes_and_time() -> None:
    lifetime = Lifetime(soft_packets=2, hard_packets=3, soft_seconds=10, hard_seconds=20)
    outbound = EspSa(spec(lifetime=lifetime), now=100.0)
    outbound.encapsulate(icmp_packet())
    assert outbound.poll(101.0) == []
    outbound.encapsulate(icmp_packet())
    assert outbound.poll(102.0) == [ExpiryKind.SOFT]
    outbound.encapsulate(icmp_packet())
    assert outbound.poll(103.0) == [ExpiryKind.HARD]
    with pytest.raises(EspSendRefused, match="hard limit"):
        outbound.encapsulate(icmp_packet())

    timed = EspSa(spec(lifetime=lifetime, direction=Direction.IN), now=100.0)
    assert timed.poll(109.9) == []
    assert timed.poll(110.0) == [ExpiryKind.SOFT]
    assert timed.poll(120.0) == [ExpiryKind.HARD]
    with pytest.raises(EspDropped) as caught:
        timed.decapsulate(b"\x00" * 64)
    assert caught.value.kind is DropKind.EXPIRED

    by_bytes = EspSa(spec(lifetime=Lifetime(soft_bytes=100)), now=0.0)
    by_bytes.encapsulate(icmp_packet(b"x" * 200))
    assert by_bytes.poll(0.5) == [ExpiryKind.SOFT]


def test_last_used_follows_traffic_at_poll_time() -> None:
    outbound, _ = pair()
    outbound.poll(1.0)
    assert outbound.counters().last_used is None
    outbound.encapsulate(icmp_packet())
    outbound.poll(2.0)
    outbound.poll(3.0)
    assert outbound.counters().last_used == 2.0


@pytest.mark.parametrize(
    ("algorithm", "key", "integrity", "integrity_key"),
    [
        (EspAlgorithm.AES_GCM_16, bytes(16), EspIntegrity.NONE, b""),  # no salt
        (EspAlgorithm.CHACHA20_POLY1305, bytes(32), EspIntegrity.NONE, b""),
        (EspAlgorithm.AES_GCM_16, bytes(20), EspIntegrity.HMAC_SHA1_96, bytes(20)),
        (EspAlgorithm.AES_CBC, bytes(15), EspIntegrity.HMAC_SHA1_96, bytes(20)),
        (EspAlgorithm.AES_CBC, bytes(16), EspIntegrity.HMAC_SHA2_256_128, bytes(20)),
    ],
)
def test_bad_key_material_is_refused_without_showing_keys(
    algorithm: EspAlgorithm, key: bytes, integrity: EspIntegrity, integrity_key: bytes
) -> None:
    bad = replace(
        spec(), algorithm=algorithm, encryption_key=key, integrity=integrity,
        integrity_key=integrity_key,
    )  # fmt: skip
    with pytest.raises(EspSaError) as caught:
        EspSa(bad, 0.0)
    assert "0xc0ffee01" in str(caught.value)
    assert "00000000" not in str(caught.value).replace("0xc0ffee01", "")


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), suite=st.sampled_from(sorted(SUITES)))
def test_random_bytes_only_ever_raise_esp_dropped(garbage: bytes, suite: str) -> None:
    inbound = EspSa(spec(suite, direction=Direction.IN), 0.0)
    candidate = inbound.spec.spi.to_bytes(4, "big") + garbage
    for data in (garbage, candidate):
        with pytest.raises(EspDropped):
            inbound.decapsulate(data)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["aes-gcm-128", "chacha20-poly1305"]),
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 2000), st.integers(0, 255)),
             min_size=1, max_size=12),
)  # fmt: skip
def test_the_fast_paths_agree_with_the_general_code(
    suite: str, packets: list[tuple[int, int, int]]
) -> None:
    """encapsulate()/decapsulate() take inline fast paths for AEAD tunnel mode: they give
    the same bytes, drops and counters as protect() and the general decapsulation."""
    outbound, fast = pair(suite)
    _, general = pair(suite)
    for size, flip_at, flip in packets:
        packet = icmp_packet(b"p" * size)
        seq = outbound.next_sequence
        esp = outbound.encapsulate(packet)
        assert esp == outbound.protect(packet, 4, seq)
        if flip:  # maybe garble a byte (header, IV, ciphertext or ICV)
            position = flip_at % len(esp)
            esp = esp[:position] + bytes([esp[position] ^ flip]) + esp[position + 1 :]
        outcomes: list[bytes | DropKind] = []
        for decapsulate in (fast.decapsulate, general._decapsulate):
            try:
                outcomes.append(decapsulate(esp, 0))
            except EspDropped as dropped:
                outcomes.append(dropped.kind)
        assert outcomes[0] == outcomes[1]
    assert fast.counters() == general.counters()
