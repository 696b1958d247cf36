"""TCP MSS clamping with the RFC 1624 incremental checksum update."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dataplane.mss import clamp_mss
from core.dataplane.userspace.packet import internet_checksum

SRC = bytes([10, 0, 0, 1])
DST = bytes([10, 0, 0, 2])
NOP = b"\x01"
SACK_PERMITTED = b"\x04\x02"
WINDOW_SCALE = b"\x03\x03\x07"
TIMESTAMPS = b"\x08\x0a" + bytes(range(8))


def mss_option(value: int) -> bytes:
    return b"\x02\x04" + value.to_bytes(2, "big")


def tcp_checksum(segment: bytes) -> int:
    pseudo = SRC + DST + struct.pack("!BBH", 0, 6, len(segment))
    return internet_checksum(pseudo + segment)


def syn(options: bytes, *, flags: int = 0x02, payload: bytes = b"", fragment: int = 0) -> bytes:
    options += b"\x00" * (-len(options) % 4)  # EOL padding to a 32-bit boundary
    data_offset = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, data_offset << 4, flags, 65535, 0, 0)
    segment = tcp + options + payload
    checksum = tcp_checksum(segment)
    segment = segment[:16] + checksum.to_bytes(2, "big") + segment[18:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 1, fragment, 64, 6, 0, SRC, DST
    )
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return header + segment


def mss_of(packet: bytes, options_before: bytes = b"") -> int:
    at = 40 + len(options_before) + 2
    return int.from_bytes(packet[at : at + 2], "big")


@pytest.mark.parametrize(
    "before",
    [b"", NOP, NOP + NOP, NOP * 3, SACK_PERMITTED, WINDOW_SCALE, TIMESTAMPS + NOP],
    ids=["first", "after-nop", "after-2-nops", "after-3-nops", "after-sack", "odd", "late"],
)
@pytest.mark.parametrize("flags", [0x02, 0x12], ids=["syn", "syn-ack"])
def test_mss_lowered_and_checksum_still_valid(before: bytes, flags: int) -> None:
    packet = syn(before + mss_option(1460) + WINDOW_SCALE, flags=flags, payload=b"abc")
    clamped = clamp_mss(packet, 1360)
    assert mss_of(clamped, before) == 1360
    assert tcp_checksum(clamped[20:]) == 0
    assert len(clamped) == len(packet)
    differing = [i for i in range(len(packet)) if packet[i] != clamped[i]]
    assert all(36 <= i < 38 or i >= 40 + len(before) for i in differing)


def test_smaller_mss_is_left_alone() -> None:
    packet = syn(mss_option(1200))
    assert clamp_mss(packet, 1360) is packet


@pytest.mark.parametrize(
    "packet",
    [
        syn(WINDOW_SCALE + SACK_PERMITTED),  # no MSS option
        syn(mss_option(1460), flags=0x10),  # a plain ACK
        syn(mss_option(1460), fragment=0x0010),  # a later fragment
        syn(b"\x00" + mss_option(1460)),  # EOL before the option
        syn(b"\x08\x30" + mss_option(1460)),  # an option length past the header
        syn(b"\x08\x01" + mss_option(1460)),  # an option length below 2
        syn(b"\x02\x05\x05\xb4\x00"),  # MSS with the wrong length
        b"\x60" + bytes(59),  # IPv6
        syn(mss_option(1460), payload=bytes(8))[:44],  # total length says 52
        b"\x45\x00\x00",  # far too short
    ],
    ids=[
        "no-mss", "not-syn", "fragment", "eol", "long-option", "short-option",
        "bad-mss-length", "ipv6", "truncated", "tiny",
    ],
)  # fmt: skip
def test_everything_else_comes_back_untouched(packet: bytes) -> None:
    assert clamp_mss(packet, 536) is packet


def test_lying_data_offset_is_untouched() -> None:
    packet = bytearray(syn(mss_option(1460)))
    packet[32] = 0xF0  # data offset 60 bytes: beyond the packet's total length
    assert clamp_mss(bytes(packet), 536) == bytes(packet)


def test_udp_is_untouched() -> None:
    packet = bytearray(syn(mss_option(1460)))
    packet[9] = 17
    assert clamp_mss(bytes(packet), 536) == bytes(packet)


OPTIONS = st.sampled_from([NOP, SACK_PERMITTED, WINDOW_SCALE, TIMESTAMPS])


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(OPTIONS, max_size=4),
    after=st.lists(OPTIONS, max_size=3),
    original=st.integers(min_value=0, max_value=65535),
    limit=st.integers(min_value=88, max_value=65535),
    payload=st.binary(max_size=64),
)
def test_any_layout_keeps_a_valid_checksum(
    before: list[bytes], after: list[bytes], original: int, limit: int, payload: bytes
) -> None:
    options = b"".join(before) + mss_option(original) + b"".join(after)
    if len(options) > 40:
        return
    packet = syn(options, payload=payload)
    clamped = clamp_mss(packet, limit)
    assert mss_of(clamped, b"".join(before)) == min(original, limit)
    assert tcp_checksum(clamped[20:]) == 0
