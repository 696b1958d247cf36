"""Receive-side coalescing of TCP segments for the TUN device (what GRO does), sans-IO.

Why: each packet written to a TUN device costs a system call and a pass through the TCP
receive path, and every second segment makes the receiver send an ACK back through the
tunnel.  In-order segments of one TCP flow that arrive in one batch are therefore written
as one large packet tagged for GSO (a virtio_net_hdr with gso_type TCPV4 and gso_size =
the segment size), which the kernel takes in one go and resegments if it forwards it.

Only what Linux GRO itself merges is merged (inet_gro_receive, tcp_gro_receive): IPv4
without options, DF set and not a fragment, the same addresses, ToS, TTL; TCP with the
same ports, ack number, window, urgent pointer and options, flags ACK (PSH|ACK ends a
merge), consecutive sequence numbers, equal even payload sizes (the last may be
shorter), 64 KiB at most.

The merged packet carries a complete TCP checksum derived from the segments' own
checksums, without reading their payloads: over a whole segment, pseudo-header included,
the ones'-complement sum is 0 (mod 0xFFFF), so a payload sums to minus its pseudo-header
and TCP header words, and the payload sums add up (RFC 1071).  No NEEDS_CSUM flag is
set, so the host that delivers the packet verifies the checksum over all of it: one
segment with a bad checksum spoils the merged packet, which is dropped as a whole.
(A router resegmenting it in software writes fresh segment checksums, as for any GSO
packet: the one case where a segment the sender broke is not caught.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

# virtio_net_hdr {flags, gso_type, hdr_len, gso_size, csum_start, csum_offset},
# little-endian: the backend asks the TUN device for that byte order (TUNSETVNETLE).
VNET_HEADER = struct.Struct("<BBHHHH")
VNET_HEADER_SIZE = VNET_HEADER.size
PLAIN = bytes(VNET_HEADER_SIZE)  # no offload: the kernel takes the packet as usual
_GSO_TCPV4 = 1
_MAX_IP_PACKET = 0xFFFF

# An IPv4 header without options and a TCP header, all as integers:
#  0 version/IHL, 1 ToS, 2 total length, 3 id, 4 flags/fragment, 5 TTL, 6 protocol,
#  7 IP checksum, 8-11 address words, then the TCP header's ten 16-bit words:
# 12 source port, 13 destination port, 14-15 sequence, 16-17 ack, 18 offset/flags,
# 19 window, 20 checksum, 21 urgent pointer.
_HEADERS = struct.Struct("!BBHHHBBH14H")
_TOTAL_LENGTH, _FRAGMENT, _TTL, _ADDRESSES, _TCP = 2, 4, 5, 8, 12
_SEQ, _ACK, _OFFSET_FLAGS, _WINDOW, _CHECKSUM, _URGENT = 14, 16, 18, 19, 20, 21
_DONT_FRAGMENT = 0x4000  # DF set, MF clear, offset 0
_FLAG_ACK, _FLAG_PSH = 0x10, 0x08
_PROTO_TCP = 6

Headers = tuple[int, ...]


def _words_sum(data: bytes) -> int:
    """Sum of the big-endian 16-bit words of `data` (even length), not folded."""
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _complement(total: int) -> int:
    """The checksum field that makes a ones'-complement sum of `total` come out right."""
    return 0xFFFF - (total % 0xFFFF or 0xFFFF)


class _Merge:
    """Segments of one flow collected so far, and the sums the merged checksum needs."""

    __slots__ = (
        "closed",
        "first",
        "header_length",
        "headers",
        "last_flags",
        "length",
        "next_seq",
        "options",
        "options_sum",
        "payloads",
        "segment_size",
        "segment_sums",
    )

    def __init__(self, packet: bytes, headers: Headers, header_length: int) -> None:
        self.first = packet
        self.headers = headers
        self.header_length = header_length
        self.options = packet[40:header_length]
        self.options_sum = _words_sum(self.options)
        self.segment_size = len(packet) - header_length
        self.payloads = [packet[header_length:]]
        self.length = len(packet)
        seq = headers[_SEQ] << 16 | headers[_SEQ + 1]
        self.next_seq = (seq + self.segment_size) & 0xFFFFFFFF
        self.segment_sums = self._segment_sum(headers, len(packet))
        self.last_flags = headers[_OFFSET_FLAGS] & 0xFF
        # Odd sizes would shift the next payload's words by a byte: no merging then.
        self.closed = bool(self.last_flags & _FLAG_PSH or self.segment_size & 1)

    def _segment_sum(self, headers: Headers, length: int) -> int:
        """A segment's TCP length plus all its TCP header words, checksum included."""
        return length - 20 + sum(headers[_TCP:]) + self.options_sum

    def accepts(self, packet: bytes, headers: Headers, header_length: int) -> bool:
        first = self.headers
        payload = len(packet) - header_length
        return (
            header_length == self.header_length
            and 0 < payload <= self.segment_size
            and self.length + payload <= _MAX_IP_PACKET
            and headers[_SEQ] << 16 | headers[_SEQ + 1] == self.next_seq
            and headers[1] == first[1]  # ToS
            and headers[_TTL] == first[_TTL]
            and headers[8] == first[8]
            and headers[9] == first[9]
            and headers[10] == first[10]
            and headers[11] == first[11]
            and headers[12] == first[12]
            and headers[13] == first[13]
            and headers[_ACK] == first[_ACK]
            and headers[_ACK + 1] == first[_ACK + 1]
            and headers[_WINDOW] == first[_WINDOW]
            and headers[_URGENT] == first[_URGENT]
            and (header_length == 40 or packet[40:header_length] == self.options)
        )

    def add(self, packet: bytes, headers: Headers) -> None:
        payload = packet[self.header_length :]
        self.payloads.append(payload)
        self.length += len(payload)
        self.next_seq = (self.next_seq + len(payload)) & 0xFFFFFFFF
        self.segment_sums += self._segment_sum(headers, len(packet))
        self.last_flags = headers[_OFFSET_FLAGS] & 0xFF
        self.closed = bool(self.last_flags & _FLAG_PSH or len(payload) < self.segment_size)

    def merged(self) -> tuple[bytes, bytes, int]:
        """(vnet header, packet, segments in it) for the segments collected."""
        segments = len(self.payloads)
        if segments == 1:
            return PLAIN, self.first, 1
        headers = self.headers
        pseudo = sum(headers[_ADDRESSES:_TCP]) + _PROTO_TCP  # without the TCP length
        tcp_words = (
            sum(headers[_TCP:_OFFSET_FLAGS])
            + (headers[_OFFSET_FLAGS] & 0xFF00 | self.last_flags)
            + headers[_WINDOW]
            + headers[_URGENT]
            + self.options_sum
        )
        # All payloads sum to -(pseudo-headers + headers) of their segments, so:
        tcp_checksum = _complement(
            pseudo + self.length - 20 + tcp_words - segments * pseudo - self.segment_sums
        )
        ip_header = bytearray(self.first[:20])
        ip_header[2:4] = self.length.to_bytes(2, "big")
        ip_header[10:12] = bytes(2)
        ip_header[10:12] = _complement(_words_sum(bytes(ip_header))).to_bytes(2, "big")
        tcp_header = bytearray(self.first[20 : self.header_length])
        tcp_header[13] = self.last_flags
        tcp_header[16:18] = tcp_checksum.to_bytes(2, "big")
        vnet = VNET_HEADER.pack(0, _GSO_TCPV4, self.header_length, self.segment_size, 0, 0)
        return vnet, b"".join((ip_header, tcp_header, *self.payloads)), segments


def _mergeable(packet: bytes) -> tuple[Headers, int] | None:
    """(headers, IP + TCP header length) of a segment GRO may merge, else None."""
    if len(packet) <= 40 or packet[0] != 0x45 or packet[9] != _PROTO_TCP:
        return None
    headers = _HEADERS.unpack_from(packet)
    header_length = 20 + (headers[_OFFSET_FLAGS] >> 12) * 4
    flags = headers[_OFFSET_FLAGS] & 0xFF
    if (
        flags & ~_FLAG_PSH != _FLAG_ACK
        or headers[_FRAGMENT] != _DONT_FRAGMENT
        or headers[_TOTAL_LENGTH] != len(packet)
        or not 40 <= header_length < len(packet)
    ):
        return None
    return headers, header_length


def coalesce(packets: list[bytes]) -> Iterator[tuple[bytes, bytes, int]]:
    """(vnet header, packet, how many of `packets` it holds) to write, in order."""
    merge: _Merge | None = None
    for packet in packets:
        parsed = _mergeable(packet)
        if parsed is None:
            if merge is not None:
                yield merge.merged()
                merge = None
            yield PLAIN, packet, 1
            continue
        headers, header_length = parsed
        if merge is not None and merge.accepts(packet, headers, header_length):
            merge.add(packet, headers)
        else:
            if merge is not None:
                yield merge.merged()
            merge = _Merge(packet, headers, header_length)
        if merge.closed:
            yield merge.merged()
            merge = None
    if merge is not None:
        yield merge.merged()
