"""TCP MSS clamping of IPv4 SYN segments, with an incremental checksum update.

`clamp_mss(packet, mss)` lowers the MSS option of a TCP SYN (or SYN-ACK) to `mss` so that
tunnelled TCP does not fragment.  Anything else -- not IPv4, not TCP, a fragment, no SYN,
no MSS option, an MSS already small enough, or lengths that do not add up -- comes back
as the very same object, untouched.  The TCP checksum is patched per RFC 1624
(HC' = ~(~HC + ~m + m')), so the payload is never summed again.
"""

from __future__ import annotations

_PROTO_TCP = 6
_SYN = 0x02
_OPTION_EOL = 0
_OPTION_NOP = 1
_OPTION_MSS = 2


def clamp_mss(packet: bytes, mss: int) -> bytes:
    """`packet` with its TCP MSS option lowered to `mss` if it was higher."""
    # Called for every packet on a clamping interface: two byte tests send everything
    # but TCP SYNs back at once.  (In a later fragment the "flags" byte is payload; such
    # a packet only takes the full check below, which refuses fragments.)
    header_length = (packet[0] & 0x0F) * 4 if packet else 0
    if len(packet) < header_length + 20 or packet[9] != _PROTO_TCP:
        return packet
    if not packet[header_length + 13] & _SYN:
        return packet
    tcp = _syn_segment_offset(packet)
    if tcp < 0:
        return packet
    value_at = _mss_value_offset(packet, tcp)
    if value_at < 0 or int.from_bytes(packet[value_at : value_at + 2], "big") <= mss:
        return packet
    clamped = bytearray(packet)
    clamped[value_at : value_at + 2] = mss.to_bytes(2, "big")
    checksum_at = tcp + 16
    # Words are aligned to the start of the TCP header; the option may sit at an odd offset.
    first_word = tcp + ((value_at - tcp) & ~1)
    last_word = tcp + ((value_at + 1 - tcp) & ~1)
    checksum = int.from_bytes(packet[checksum_at : checksum_at + 2], "big")
    for word_at in range(first_word, last_word + 2, 2):
        old = int.from_bytes(packet[word_at : word_at + 2], "big")
        new = int.from_bytes(clamped[word_at : word_at + 2], "big")
        checksum = _incremental_update(checksum, old, new)
    clamped[checksum_at : checksum_at + 2] = checksum.to_bytes(2, "big")
    return bytes(clamped)


def _syn_segment_offset(packet: bytes) -> int:
    """Offset of the TCP header if `packet` is an unfragmented IPv4 TCP SYN, else -1."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != _PROTO_TCP:
        return -1
    header_length = (packet[0] & 0x0F) * 4
    total_length = int.from_bytes(packet[2:4], "big")
    if header_length < 20 or total_length > len(packet) or total_length < header_length + 20:
        return -1
    if int.from_bytes(packet[6:8], "big") & 0x1FFF:
        return -1  # a later fragment: its bytes are not a TCP header
    if not packet[header_length + 13] & _SYN:
        return -1
    tcp_header_length = (packet[header_length + 12] >> 4) * 4
    if tcp_header_length < 20 or header_length + tcp_header_length > total_length:
        return -1
    return header_length


def _mss_value_offset(packet: bytes, tcp: int) -> int:
    """Offset of the 2-byte MSS value inside the TCP options, or -1."""
    end = tcp + (packet[tcp + 12] >> 4) * 4
    at = tcp + 20
    while at < end:
        kind = packet[at]
        if kind == _OPTION_EOL:
            return -1
        if kind == _OPTION_NOP:
            at += 1
            continue
        if at + 1 >= end:
            return -1
        length = packet[at + 1]
        if length < 2 or at + length > end:
            return -1  # a lying option length: leave the segment alone
        if kind == _OPTION_MSS:
            return at + 2 if length == 4 else -1
        at += length
    return -1


def _incremental_update(checksum: int, old_word: int, new_word: int) -> int:
    """RFC 1624 equation 3."""
    total = (~checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
