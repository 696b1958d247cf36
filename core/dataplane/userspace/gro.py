"""Receive-side coalescing of TCP segments and UDP datagrams for the TUN device (what GRO
does), sans-IO.

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

UDP datagrams of one flow (Linux >= 6.2 takes UDP GSO from a TUN device) are merged the
way udp_gro_receive merges them: IPv4 without options, DF set and not a fragment, the same
addresses, ports, ToS and TTL, equal payload sizes (the last may be shorter), at most 64
datagrams (the kernel's UDP_MAX_SEGMENTS) and 64 KiB; and only small ones (up to 512
bytes of payload), for which a write saved outweighs verifying a checksum in Python.
The kernel splits such a packet back into the original datagrams when it delivers or
forwards it, with the given segment size, and writes their UDP checksums itself (a UDP
GSO packet must ask for that: NEEDS_CSUM), so each datagram's own checksum is verified
here before it is merged; one without a checksum (0) or with a wrong one is written
alone, and the kernel drops the latter as it would have anyway.
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
GSO_UDP_L4 = 5  # VIRTIO_NET_HDR_GSO_UDP_L4
_NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM
MAX_UDP_SEGMENTS = 64  # UDP_MAX_SEGMENTS in include/linux/udp.h
# Larger datagrams are written one by one: verifying a checksum here costs ~1.4 ns a byte,
# and a write saved is worth ~1 us of kernel time (measured: 64-byte datagrams merged cost
# the receiving forwarder ~1 us less each, 1400-byte ones ~1 us more).
MAX_MERGED_UDP_PAYLOAD = 512
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
_PROTO_UDP = 17
_UDP_HEADERS = struct.Struct("!BBHHHBBH4s4sHHHH")  # IPv4 without options, then UDP

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


class _UdpMerge:
    """Datagrams of one UDP flow collected so far (all but the last of one size)."""

    __slots__ = ("closed", "first", "flow", "length", "payloads", "segment_size")

    def __init__(self, packet: bytes) -> None:
        self.first = packet
        self.flow = packet[12:24]  # addresses and ports
        self.segment_size = len(packet) - 28
        self.payloads = [packet[28:]]
        self.length = len(packet)
        self.closed = False

    def accepts(self, packet: bytes) -> bool:
        payload = len(packet) - 28
        first = self.first
        return (
            payload <= self.segment_size
            and self.length + payload <= _MAX_IP_PACKET
            and packet[12:24] == self.flow
            and packet[1] == first[1]  # ToS
            and packet[8] == first[8]  # TTL
        )

    def add(self, packet: bytes) -> None:
        payload = packet[28:]
        self.payloads.append(payload)
        self.length += len(payload)
        self.closed = (
            len(payload) < self.segment_size or len(self.payloads) == MAX_UDP_SEGMENTS
        )  # fmt: skip

    def merged(self) -> tuple[bytes, bytes, int]:
        """(vnet header, packet, datagrams in it) for the datagrams collected."""
        segments = len(self.payloads)
        first = self.first
        if segments == 1:
            return PLAIN, first, 1
        udp_length = self.length - 20
        ip_header = bytearray(first[:20])
        ip_header[2:4] = self.length.to_bytes(2, "big")
        ip_header[10:12] = bytes(2)
        ip_header[10:12] = _complement(_words_sum(bytes(ip_header))).to_bytes(2, "big")
        # NEEDS_CSUM: the checksum field holds the folded pseudo-header sum, and the
        # kernel adds the rest for each datagram it cuts out (RFC 768, RFC 1071).
        pseudo = _words_sum(first[12:20]) + _PROTO_UDP + udp_length
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
        udp_header = first[20:24] + udp_length.to_bytes(2, "big") + pseudo.to_bytes(2, "big")
        vnet = VNET_HEADER.pack(_NEEDS_CSUM, GSO_UDP_L4, 28, self.segment_size, 20, 6)
        return vnet, b"".join((ip_header, udp_header, *self.payloads)), segments


def _udp_mergeable(packet: bytes) -> bool:
    """True for a UDP datagram GRO may merge: its lengths agree and its checksum is right."""
    if len(packet) <= 28 or packet[0] != 0x45 or packet[9] != _PROTO_UDP:
        return False
    fields = _UDP_HEADERS.unpack_from(packet)
    total_length: int = fields[2]
    fragment: int = fields[4]
    udp_length: int = fields[12]
    checksum: int = fields[13]
    if (
        fragment != _DONT_FRAGMENT
        or total_length != len(packet)
        or udp_length != total_length - 20
        or udp_length > MAX_MERGED_UDP_PAYLOAD + 8
        or not checksum  # no checksum: nothing to verify, and merging would invent one
    ):
        return False
    # Ones'-complement sum of pseudo-header and datagram, verified in one big-integer
    # remainder: 2**16 == 1 (mod 0xFFFF), so the remainder of the datagram read as one
    # number is the remainder of the sum of its 16-bit words (RFC 1071).
    udp = packet[20:] if udp_length % 2 == 0 else packet[20:] + b"\x00"
    pseudo = _words_sum(packet[12:20]) + _PROTO_UDP + udp_length
    return (pseudo + int.from_bytes(udp, "big")) % 0xFFFF == 0


def coalesce(packets: list[bytes], *, udp: bool = True) -> Iterator[tuple[bytes, bytes, int]]:
    """(vnet header, packet, how many of `packets` it holds) to write, in order.

    `udp=False` leaves UDP datagrams alone (a kernel that takes no UDP GSO)."""
    merge: _Merge | _UdpMerge | None = None
    for packet in packets:
        if len(packet) > 9 and packet[9] == _PROTO_UDP:
            if not udp or not _udp_mergeable(packet):
                if merge is not None:
                    yield merge.merged()
                    merge = None
                yield PLAIN, packet, 1
                continue
            if isinstance(merge, _UdpMerge) and merge.accepts(packet):
                merge.add(packet)
            else:
                if merge is not None:
                    yield merge.merged()
                merge = _UdpMerge(packet)
            if merge.closed:
                yield merge.merged()
                merge = None
            continue
        parsed = _mergeable(packet)
        if parsed is None:
            if merge is not None:
                yield merge.merged()
                merge = None
            yield PLAIN, packet, 1
            continue
        headers, header_length = parsed
        if isinstance(merge, _Merge) and merge.accepts(packet, headers, header_length):
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
