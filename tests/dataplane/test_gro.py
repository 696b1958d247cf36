"""TCP segment coalescing for the TUN device: what merges, what does not, checksums."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from core.dataplane.userspace.gro import PLAIN, VNET_HEADER, coalesce
from core.dataplane.userspace.packet import build_ipv4_header, internet_checksum

SRC = ipaddress.IPv4Address("10.0.0.1")
DST = ipaddress.IPv4Address("10.0.0.2")
ACK, PSH_ACK = 0x10, 0x18
TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(range(8))  # NOP NOP TS(val, ecr)


def segment(
    seq: int, payload: bytes, *, flags: int = ACK, options: bytes = b"", window: int = 5000,
    ack: int = 77, df: bool = True, tos: int = 0, checksum_error: int = 0,
) -> bytes:  # fmt: skip
    """An IPv4 TCP segment with correct checksums (unless told otherwise)."""
    tcp = struct.pack(
        "!HHIIBBHHH", 40000, 5201, seq & 0xFFFFFFFF, ack, (5 + len(options) // 4) << 4, flags,
        window, 0, 0,
    ) + options  # fmt: skip
    pseudo = SRC.packed + DST.packed + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    checksum = internet_checksum(pseudo + tcp + payload) ^ checksum_error
    tcp = tcp[:16] + checksum.to_bytes(2, "big") + tcp[18:]
    header = bytearray(
        build_ipv4_header(
            src=SRC, dst=DST, protocol=6, payload_length=len(tcp) + len(payload), tos=tos
        )
    )
    if df:
        header[6] = 0x40
        header[10:12] = bytes(2)
        header[10:12] = internet_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + tcp + payload


def checksums_valid(packet: bytes) -> bool:
    header_length = (packet[0] & 0x0F) * 4
    tcp = packet[header_length:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    return internet_checksum(packet[:header_length]) == 0 and internet_checksum(pseudo + tcp) == 0


def stream(start: int, sizes: list[int], *, last_flags: int = PSH_ACK) -> list[bytes]:
    packets, seq = [], start
    for index, size in enumerate(sizes):
        payload = bytes((seq + i) % 251 for i in range(size))
        flags = last_flags if index == len(sizes) - 1 else ACK
        packets.append(segment(seq, payload, flags=flags))
        seq += size
    return packets


def payload_of(packet: bytes) -> bytes:
    return packet[(packet[0] & 0x0F) * 4 + (packet[32] >> 4) * 4 :]


def test_in_order_segments_become_one_gso_packet_with_valid_checksums() -> None:
    packets = stream(1000, [1360, 1360, 1360, 200])
    (written,) = list(coalesce(packets))
    vnet, merged, count = written
    flags, gso_type, header_length, gso_size, csum_start, csum_offset = VNET_HEADER.unpack(vnet)
    assert (flags, gso_type, header_length, gso_size) == (0, 1, 40, 1360)  # no NEEDS_CSUM
    assert (csum_start, csum_offset, count) == (0, 0, 4)
    assert int.from_bytes(merged[2:4], "big") == len(merged) == 40 + 3 * 1360 + 200
    assert checksums_valid(merged)
    assert payload_of(merged) == b"".join(payload_of(packet) for packet in packets)
    assert merged[33] == PSH_ACK and merged[24:28] == packets[0][24:28]


def test_identical_options_merge_and_differing_ones_do_not() -> None:
    same = [
        segment(1, bytes(100), options=TIMESTAMPS),
        segment(101, bytes(100), options=TIMESTAMPS),
    ]
    ((vnet, merged, count),) = list(coalesce(same))
    assert count == 2 and VNET_HEADER.unpack(vnet)[2] == 52 and checksums_valid(merged)
    newer = TIMESTAMPS[:-1] + b"\x09"
    differing = [same[0], segment(101, bytes(100), options=newer)]
    assert [item[1] for item in coalesce(differing)] == differing


def test_order_is_kept_around_packets_that_cannot_merge() -> None:
    first, second = stream(0, [500, 500], last_flags=ACK), stream(1000, [500, 500])
    icmp = build_ipv4_header(src=SRC, dst=DST, protocol=1, payload_length=8) + bytes(8)
    written = list(coalesce([*first, icmp, *second]))
    assert [count for _, _, count in written] == [2, 1, 2]
    assert written[1] == (PLAIN, icmp, 1)
    assert payload_of(written[2][1]) == payload_of(second[0]) + payload_of(second[1])


def test_what_must_not_merge_passes_untouched() -> None:
    cases = {
        "gap in sequence": [segment(0, bytes(100)), segment(200, bytes(100))],
        "no DF": [segment(0, bytes(100), df=False), segment(100, bytes(100), df=False)],
        "other ToS": [segment(0, bytes(100)), segment(100, bytes(100), tos=2)],
        "other window": [segment(0, bytes(100)), segment(100, bytes(100), window=1)],
        "other ack": [segment(0, bytes(100)), segment(100, bytes(100), ack=78)],
        "PSH before the end": [segment(0, bytes(100), flags=PSH_ACK), segment(100, bytes(100))],
        "FIN": [segment(0, bytes(100), flags=0x11), segment(100, bytes(100), flags=0x11)],
        "pure ACKs": [segment(0, b""), segment(0, b"")],
        "larger after smaller": [segment(0, bytes(100)), segment(100, bytes(200))],
        "odd size": [segment(0, bytes(101)), segment(101, bytes(101))],
    }
    for label, packets in cases.items():
        written = list(coalesce(packets))
        assert written == [(PLAIN, packet, 1) for packet in packets], label


def test_a_merged_packet_stays_under_64_kib() -> None:
    packets = stream(0, [1400] * 60, last_flags=ACK)
    written = list(coalesce(packets))
    assert all(len(packet) <= 0xFFFF and checksums_valid(packet) for _, packet, _ in written)
    assert sum(count for _, _, count in written) == 60 and len(written) == 2


def test_a_segment_with_a_bad_checksum_spoils_the_merged_packet() -> None:
    packets = [segment(0, bytes(range(200))), segment(200, bytes(200), checksum_error=0x0100)]
    ((_, merged, count),) = list(coalesce(packets))
    assert count == 2 and not checksums_valid(merged)  # the receiving kernel drops it


def test_sequence_numbers_wrap() -> None:
    packets = stream((1 << 32) - 300, [200, 200, 200])
    ((_, merged, count),) = list(coalesce(packets))
    assert count == 3 and checksums_valid(merged)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, (1 << 32) - 1),
    st.integers(1, 700).map(lambda half: half * 2),
    st.lists(st.sampled_from(["full", "short", "gap", "psh", "udp"]), max_size=25),
)
def test_any_stream_comes_out_in_order_with_valid_checksums(
    start: int, size: int, shapes: list[str]
) -> None:
    packets, seq = [], start
    for shape in shapes:
        if shape == "udp":
            header = build_ipv4_header(src=SRC, dst=DST, protocol=17, payload_length=8)
            packets.append(header + bytes(8))
            continue
        if shape == "gap":
            seq += 7
        length = size // 2 if shape == "short" else size
        payload = bytes((seq + i) % 253 for i in range(length))
        packets.append(segment(seq, payload, flags=PSH_ACK if shape == "psh" else ACK))
        seq += length
    written = list(coalesce(packets))
    assert sum(count for _, _, count in written) == len(packets)
    assert b"".join(payload_of(p) for _, p, _ in written if p[9] == 6) == b"".join(
        payload_of(p) for p in packets if p[9] == 6
    )
    assert all(checksums_valid(p) for _, p, _ in written if p[9] == 6)
    sizes = (size, size // 2)  # a merge of short segments has the short size
    assert all(vnet == PLAIN or VNET_HEADER.unpack(vnet)[3] in sizes for vnet, _, _ in written)


# -- UDP ------------------------------------------------------------------------------
def datagram(
    payload: bytes, *, sport: int = 40000, df: bool = True, tos: int = 0, ttl: int = 64,
    checksum_error: int = 0, no_checksum: bool = False,
) -> bytes:  # fmt: skip
    """An IPv4 UDP datagram with correct checksums (unless told otherwise)."""
    udp = struct.pack("!HHHH", sport, 5202, 8 + len(payload), 0) + payload
    pseudo = SRC.packed + DST.packed + struct.pack("!BBH", 0, 17, len(udp))
    checksum = 0 if no_checksum else (internet_checksum(pseudo + udp) or 0xFFFF) ^ checksum_error
    udp = udp[:6] + checksum.to_bytes(2, "big") + udp[8:]
    header = bytearray(
        build_ipv4_header(src=SRC, dst=DST, protocol=17, payload_length=len(udp), tos=tos, ttl=ttl)
    )
    if df:
        header[6] = 0x40
        header[10:12] = bytes(2)
        header[10:12] = internet_checksum(bytes(header)).to_bytes(2, "big")
    return bytes(header) + udp


def split_like_the_kernel(vnet: bytes, merged: bytes) -> list[bytes]:
    """What Linux makes of a UDP GSO packet (__udp_gso_segment, then the NEEDS_CSUM
    checksum completed as skb_checksum_help does): the datagrams it delivers."""
    flags, gso_type, header_length, gso_size, csum_start, csum_offset = VNET_HEADER.unpack(vnet)
    assert (flags, gso_type, header_length, csum_start, csum_offset) == (1, 5, 28, 20, 6)
    assert internet_checksum(merged[:20]) == 0
    assert int.from_bytes(merged[2:4], "big") == len(merged)
    merged_udp_length = int.from_bytes(merged[24:26], "big")
    assert merged_udp_length == len(merged) - 20
    partial = int.from_bytes(merged[26:28], "big")
    datagrams = []
    for start in range(28, len(merged), gso_size):
        piece = merged[start : start + gso_size]
        udp_length = 8 + len(piece)
        field = partial + (~merged_udp_length & 0xFFFF) + udp_length  # csum16_sub, csum16_add
        while field >> 16:
            field = (field & 0xFFFF) + (field >> 16)
        udp = merged[20:24] + struct.pack("!HH", udp_length, field) + piece
        checksum = internet_checksum(udp) or 0xFFFF
        udp = udp[:6] + checksum.to_bytes(2, "big") + udp[8:]
        datagrams.append(merged[:2] + (20 + udp_length).to_bytes(2, "big") + merged[4:20] + udp)
    return datagrams


def test_datagrams_of_one_flow_become_one_udp_gso_packet() -> None:
    packets = [datagram(bytes((i + n) % 256 for n in range(512))) for i in range(3)]
    packets.append(datagram(b"short tail"))
    ((vnet, merged, count),) = list(coalesce(packets))
    assert count == 4 and VNET_HEADER.unpack(vnet)[3] == 512
    assert len(merged) == 28 + 3 * 512 + len(b"short tail")
    delivered = split_like_the_kernel(vnet, merged)
    assert [packet[20:] for packet in delivered] == [packet[20:] for packet in packets]
    for packet in delivered:  # the checksum each carried from its sender, recomputed
        pseudo = packet[12:20] + struct.pack("!BBH", 0, 17, len(packet) - 20)
        assert internet_checksum(pseudo + packet[20:]) == 0


def test_udp_merging_stops_at_64_datagrams() -> None:
    written = list(coalesce([datagram(bytes(36)) for _ in range(100)]))
    assert [count for _, _, count in written] == [64, 36]


def test_large_datagrams_are_written_one_by_one() -> None:
    # Verifying their checksums would cost more than the writes merging saves.
    packets = [datagram(bytes(513)) for _ in range(3)]
    assert list(coalesce(packets)) == [(PLAIN, packet, 1) for packet in packets]


def test_udp_datagrams_that_must_not_merge_pass_untouched() -> None:
    body = bytes(100)
    cases = {
        "bad checksum": [datagram(body), datagram(body, checksum_error=1)],
        "no checksum": [datagram(body, no_checksum=True), datagram(body, no_checksum=True)],
        "no DF": [datagram(body, df=False), datagram(body, df=False)],
        "other port": [datagram(body), datagram(body, sport=40001)],
        "other ToS": [datagram(body), datagram(body, tos=4)],
        "other TTL": [datagram(body), datagram(body, ttl=3)],
        "larger after smaller": [datagram(body), datagram(bytes(101))],
    }
    for label, packets in cases.items():
        written = list(coalesce(packets))
        assert written == [(PLAIN, packet, 1) for packet in packets], label


def test_a_datagram_with_a_bad_checksum_is_written_alone_between_merges() -> None:
    good = [datagram(bytes(200)) for _ in range(2)]
    bad = datagram(bytes(200), checksum_error=0x0100)
    written = list(coalesce([*good, bad, *good]))
    assert [count for _, _, count in written] == [2, 1, 2]
    assert written[1] == (PLAIN, bad, 1)


def test_udp_merging_can_be_switched_off() -> None:
    packets = [datagram(bytes(100)) for _ in range(3)]
    assert list(coalesce(packets, udp=False)) == [(PLAIN, packet, 1) for packet in packets]


def test_tcp_and_udp_in_one_batch_keep_their_order() -> None:
    tcp = stream(0, [500, 500], last_flags=ACK)
    udp = [datagram(bytes(300)) for _ in range(2)]
    written = list(coalesce([*tcp, *udp, *stream(1000, [500])]))
    assert [(packet[9], count) for _, packet, count in written] == [(6, 2), (17, 2), (6, 1)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 700)), max_size=30))
def test_any_udp_batch_is_delivered_as_it_was_sent(shapes: list[tuple[int, int]]) -> None:
    packets = [
        datagram(bytes((size + n) % 256 for n in range(size)), sport=40000 + flow)
        for flow, size in shapes
    ]
    delivered = []
    for vnet, packet, count in coalesce(packets):
        if vnet == PLAIN:
            assert count == 1
            delivered.append(packet)
        else:
            pieces = split_like_the_kernel(vnet, packet)
            assert len(pieces) == count
            delivered.extend(pieces)
    assert [packet[20:] for packet in delivered] == [packet[20:] for packet in packets]
