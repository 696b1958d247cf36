"""IKE header codec (RFC 7296 3.1)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.buffer import Buffer
from core.errors import DecodeError, UsageError
from core.ike.constants import ExchangeType, NotifyType, PayloadType
from core.ike.errors import InvalidMajorVersion, InvalidSyntax
from core.ike.v2.header import (
    HEADER_LENGTH,
    IkeHeader,
    flags_for,
    peek_header,
    pull_header,
    push_header,
)

# An IKE_SA_INIT request header from RFC 7296 3.1's layout, written out field by field.
SA_INIT_HEADER = bytes.fromhex(
    "0102030405060708"  # initiator's SPI
    "0000000000000000"  # responder's SPI (zero in the first message)
    "21"  # next payload: SA (33)
    "20"  # major 2, minor 0
    "22"  # exchange type: IKE_SA_INIT (34)
    "08"  # flags: I
    "00000000"  # message ID 0
    "0000001c"  # length 28 (header alone)
)


def _encode(hdr: IkeHeader) -> bytes:
    buf = Buffer()
    push_header(buf, hdr)
    return buf.data()


def test_golden_header_fields() -> None:
    hdr = peek_header(SA_INIT_HEADER)
    assert hdr.spi_i == bytes(range(1, 9))
    assert hdr.spi_r == bytes(8)
    assert hdr.next_payload == PayloadType.SA
    assert (hdr.major_version, hdr.minor_version) == (2, 0)
    assert hdr.exchange_type == ExchangeType.IKE_SA_INIT
    assert hdr.is_initiator and not hdr.is_response
    assert hdr.message_id == 0
    assert hdr.length == HEADER_LENGTH
    assert _encode(hdr) == SA_INIT_HEADER


headers = st.builds(
    IkeHeader,
    spi_i=st.binary(min_size=8, max_size=8),
    spi_r=st.binary(min_size=8, max_size=8),
    next_payload=st.integers(0, 255),
    major_version=st.integers(0, 15),
    minor_version=st.integers(0, 15),
    exchange_type=st.integers(0, 255),
    flags=st.integers(0, 255),
    message_id=st.integers(0, 0xFFFFFFFF),
    length=st.integers(0, 0xFFFFFFFF),
)


@given(headers)
def test_round_trip(hdr: IkeHeader) -> None:
    data = _encode(hdr)
    assert len(data) == HEADER_LENGTH
    assert pull_header(Buffer(data)) == hdr


def test_flags() -> None:
    assert flags_for(is_initiator=True, is_response=False) == 0x08
    assert flags_for(is_initiator=False, is_response=True) == 0x20
    assert flags_for(is_initiator=True, is_response=True) == 0x28
    hdr = pull_header(Buffer(SA_INIT_HEADER[:19] + b"\x20" + SA_INIT_HEADER[20:]))
    assert hdr.is_response and not hdr.is_initiator


def test_unknown_flag_bits_and_minor_version_are_ignored() -> None:
    data = bytearray(SA_INIT_HEADER)
    data[17] = 0x2F  # minor version 15
    data[19] = 0xCF  # I plus undefined bits
    hdr = peek_header(bytes(data))
    assert hdr.is_initiator and not hdr.is_response


@pytest.mark.parametrize("size", range(HEADER_LENGTH))
def test_short_datagram(size: int) -> None:
    with pytest.raises(InvalidSyntax):
        peek_header(SA_INIT_HEADER[:size])


@pytest.mark.parametrize("length", [0, 1, 27, 29, 1000, 0xFFFFFFFF])
def test_lying_length(length: int) -> None:
    data = SA_INIT_HEADER[:24] + length.to_bytes(4, "big")
    with pytest.raises(InvalidSyntax) as info:
        peek_header(data)
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_trailing_octets_are_rejected() -> None:
    with pytest.raises(InvalidSyntax):
        peek_header(SA_INIT_HEADER + b"\x00")


@pytest.mark.parametrize("version", [0x10, 0x30, 0x00, 0xF0])
def test_major_version(version: int) -> None:
    data = SA_INIT_HEADER[:17] + bytes([version]) + SA_INIT_HEADER[18:]
    with pytest.raises(InvalidMajorVersion) as info:
        peek_header(data)
    assert info.value.notify == NotifyType.INVALID_MAJOR_VERSION
    assert info.value.header is not None
    assert info.value.header.major_version == version >> 4
    assert info.value.header.spi_i == bytes(range(1, 9))


@given(st.binary(max_size=64))
def test_any_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError, InvalidMajorVersion):
        assert peek_header(data).length == len(data) >= HEADER_LENGTH


def test_push_refuses_bad_spi() -> None:
    hdr = peek_header(SA_INIT_HEADER)
    with pytest.raises(UsageError):
        _encode(IkeHeader(b"short", hdr.spi_r, 0, 2, 0, 34, 8, 0, 28))
