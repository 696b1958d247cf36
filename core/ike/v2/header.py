"""The IKE header (RFC 7296 3.1).

                     1                   2                   3
 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                       IKE SA Initiator's SPI                  |
|                                                               |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                       IKE SA Responder's SPI                  |
|                                                               |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                          Message ID                           |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
|                            Length                             |
+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

from dataclasses import dataclass

from core.buffer import Buffer
from core.errors import UsageError
from core.ike.constants import HeaderFlag
from core.ike.errors import InvalidMajorVersion, InvalidSyntax

HEADER_LENGTH = 28
SPI_LENGTH = 8
MAJOR_VERSION = 2
MINOR_VERSION = 0


@dataclass(frozen=True)
class IkeHeader:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    major_version: int
    minor_version: int
    exchange_type: int
    flags: int
    message_id: int
    length: int

    @property
    def is_initiator(self) -> bool:
        """I flag: the sender is the original initiator of the IKE SA."""
        return bool(self.flags & HeaderFlag.INITIATOR)

    @property
    def is_response(self) -> bool:
        """R flag: the message is a response to a request with the same message ID."""
        return bool(self.flags & HeaderFlag.RESPONSE)


def pull_header(buf: Buffer) -> IkeHeader:
    """Read the 28 header octets as they are; checks nothing beyond their presence."""
    if buf.remaining < HEADER_LENGTH:
        raise InvalidSyntax(f"IKE header needs {HEADER_LENGTH} octets, {buf.remaining} left")
    spi_i = buf.pull_bytes(SPI_LENGTH)
    spi_r = buf.pull_bytes(SPI_LENGTH)
    next_payload = buf.pull_u8()
    version = buf.pull_u8()
    exchange_type = buf.pull_u8()
    flags = buf.pull_u8()
    message_id = buf.pull_u32()
    length = buf.pull_u32()
    return IkeHeader(
        spi_i,
        spi_r,
        next_payload,
        version >> 4,
        version & 0x0F,
        exchange_type,
        flags,
        message_id,
        length,
    )


def push_header(buf: Buffer, hdr: IkeHeader) -> None:
    if len(hdr.spi_i) != SPI_LENGTH or len(hdr.spi_r) != SPI_LENGTH:
        raise UsageError("IKE SPIs are 8 octets")
    if not 0 <= hdr.message_id <= 0xFFFFFFFF or not 0 <= hdr.length <= 0xFFFFFFFF:
        raise UsageError("message ID and length are 32-bit unsigned")
    buf.push_bytes(hdr.spi_i)
    buf.push_bytes(hdr.spi_r)
    buf.push_u8(hdr.next_payload)
    buf.push_u8(((hdr.major_version & 0x0F) << 4) | (hdr.minor_version & 0x0F))
    buf.push_u8(hdr.exchange_type)
    buf.push_u8(hdr.flags)
    buf.push_u32(hdr.message_id)
    buf.push_u32(hdr.length)


def peek_header(data: bytes) -> IkeHeader:
    """The header of a received datagram (without the non-ESP marker), validated.

    - Fewer than 28 octets: InvalidSyntax.
    - Major version other than 2: InvalidMajorVersion, carrying the parsed header (the
      caller answers INVALID_MAJOR_VERSION only to requests, RFC 7296 2.5).  It is checked
      before the length, since another version may lay out the rest differently.
    - Length field not equal to the datagram length: InvalidSyntax.  RFC 7296 puts one
      message in each datagram; octets beyond the stated length would be covered neither
      by the ICV nor by the AUTH of IKE_SA_INIT, so we reject them rather than guess.

    Minor version and unknown flag bits are ignored, as RFC 7296 3.1 requires.
    """
    hdr = pull_header(Buffer(data))
    if hdr.major_version != MAJOR_VERSION:
        raise InvalidMajorVersion(f"IKE major version {hdr.major_version}", header=hdr)
    if hdr.length < HEADER_LENGTH:
        raise InvalidSyntax(f"IKE length field {hdr.length} is shorter than the header")
    if hdr.length != len(data):
        raise InvalidSyntax(f"IKE length field {hdr.length} but datagram of {len(data)}")
    return hdr


def flags_for(*, is_initiator: bool, is_response: bool) -> int:
    """The flags octet we send: I and R as given, V never set, other bits zero."""
    return (HeaderFlag.INITIATOR if is_initiator else 0) | (
        HeaderFlag.RESPONSE if is_response else 0
    )
