"""ISAKMP messages: the header (RFC 2408 3.1) and the payload chain, optionally encrypted.

Encryption covers everything after the header (RFC 2408 3.1, RFC 2409 appendix B): the
payload chain padded with zero bytes to the cipher block, CBC with an IV the caller keeps
per exchange.  `Message.next_iv` is the last cipher block of an encrypted message: the IV
of the next message of the same exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from core.crypto.ikev1 import CbcCipher
from core.ike.v1.constants import (
    HEADER_SIZE,
    ISAKMP_VERSION,
    ExchangeType,
    Flag,
    PayloadType,
    name_of,
)
from core.ike.v1.errors import (
    EncryptedBodyError,
    InvalidFlags,
    InvalidMajorVersion,
    MalformedMessage,
    MissingKeys,
)
from core.ike.v1.payloads import NotifyPayload, Payload, PayloadList, decode_chain, encode_chain

P = TypeVar("P")
_KNOWN_FLAGS = int(Flag.ENCRYPTION | Flag.COMMIT | Flag.AUTH_ONLY)


@dataclass(frozen=True)
class Header:
    cky_i: bytes
    cky_r: bytes
    next_payload: int
    version: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)


def peek_header(data: bytes) -> Header:
    """The header of a received datagram, with its version and length checked."""
    if len(data) < HEADER_SIZE:
        raise MalformedMessage(f"{len(data)} bytes are too short for an ISAKMP header")
    version = data[17]
    if version >> 4 != ISAKMP_VERSION >> 4:
        raise InvalidMajorVersion(f"ISAKMP major version {version >> 4}")
    flags = data[19]
    if flags & ~_KNOWN_FLAGS:
        raise InvalidFlags(f"unknown header flags {flags:#04x}")
    length = int.from_bytes(data[24:28], "big")
    if not HEADER_SIZE <= length <= len(data):
        raise MalformedMessage(f"header length {length} for a {len(data)}-byte datagram")
    return Header(data[0:8], data[8:16], data[16], version, data[18], flags,
                  int.from_bytes(data[20:24], "big"), length)


@dataclass
class Message:
    cky_i: bytes
    cky_r: bytes
    exchange: int
    message_id: int
    payloads: PayloadList
    flags: int = 0
    raw: list[bytes] = field(default_factory=list, repr=False)  # each payload, on the wire
    next_iv: bytes = field(default=b"", repr=False)

    @overload
    def get(self, kind: int) -> Payload | None: ...
    @overload
    def get(self, kind: int, cls: type[P]) -> P | None: ...
    def get(self, kind: int, cls: type[Any] | None = None) -> Any:
        return next(iter(self.get_all(kind, cls or object)), None)

    def get_all(self, kind: int, cls: type[P]) -> list[P]:
        return [p for k, p in self.payloads if k == kind and isinstance(p, cls)]

    def require(self, kind: int, cls: type[P]) -> P:
        found = self.get(kind, cls)
        if found is None:
            raise MalformedMessage(f"{self.describe()} lacks a {name_of(PayloadType, kind)} "
                                   "payload")
        return found

    def raw_body(self, kind: int) -> bytes:
        """The body of the first payload of `kind` as received (generic header removed)."""
        return self.raw[self.types().index(kind)][4:]

    def types(self) -> list[int]:
        return [k for k, _ in self.payloads]

    def notifies(self) -> list[NotifyPayload]:
        return self.get_all(PayloadType.NOTIFY, NotifyPayload)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)

    def describe(self) -> str:
        names = " ".join(name_of(PayloadType, k) for k in self.types())
        return f"{name_of(ExchangeType, self.exchange)} {self.message_id:#x} [ {names} ]"


def encode_message(message: Message, cipher: CbcCipher | None = None, iv: bytes = b"") -> bytes:
    """The datagram; with `cipher` the body is padded and encrypted under `iv`."""
    body = encode_chain(message.payloads)
    flags = message.flags & ~int(Flag.ENCRYPTION) & 0xFF
    if cipher is not None:
        body += bytes(-len(body) % cipher.block_size)
        body = cipher.encrypt(iv, body)
        flags |= Flag.ENCRYPTION
    first = message.payloads[0][0] if message.payloads else PayloadType.NONE
    header = (message.cky_i + message.cky_r
              + bytes((first, ISAKMP_VERSION, message.exchange, flags))
              + message.message_id.to_bytes(4, "big")
              + (HEADER_SIZE + len(body)).to_bytes(4, "big"))
    return header + body


def last_block(datagram: bytes, cipher: CbcCipher) -> bytes:
    """The IV that follows an encrypted message we built or received."""
    return datagram[-cipher.block_size:]


def decode_message(data: bytes, cipher: CbcCipher | None = None, iv: bytes = b"") -> Message:
    """Parses a datagram (non-ESP marker removed), decrypting it with `cipher` and `iv` when
    the header says it is encrypted."""
    header = peek_header(data)
    body = data[HEADER_SIZE:header.length]
    next_iv = b""
    if header.encrypted:
        if cipher is None:
            raise MissingKeys("encrypted message without keys to open it")
        if not body or len(body) % cipher.block_size:
            raise EncryptedBodyError(f"encrypted body of {len(body)} bytes is not a whole "
                                     f"number of {cipher.block_size}-byte blocks")
        next_iv = body[-cipher.block_size:]
        body = cipher.decrypt(iv, body)
    payloads, raw = decode_chain(header.next_payload, body, trailing_ok=header.encrypted)
    return Message(header.cky_i, header.cky_r, header.exchange, header.message_id, payloads,
                   header.flags, raw, next_iv)
