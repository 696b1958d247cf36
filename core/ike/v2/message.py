"""Whole IKEv2 messages: header, payload chain and the Encrypted (SK) payload.

`encode_message` and `decode_message` are pure functions over bytes.  Protection of the
SK payload (RFC 7296 3.14) is delegated to a `Protector` (the real one is
`core.crypto.cipher.IkeProtector`): this module lays out the octets, the protector turns
the inner payload chain into IV | ciphertext | ICV and back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, overload

from core.buffer import Buffer
from core.crypto.random import RandomSource
from core.errors import UsageError
from core.ike.constants import ExchangeType, NotifyType, PayloadType, name_of
from core.ike.errors import InvalidSyntax, MissingKeys
from core.ike.v2.header import (
    HEADER_LENGTH,
    MAJOR_VERSION,
    MINOR_VERSION,
    IkeHeader,
    flags_for,
    peek_header,
    push_header,
)
from core.ike.v2.payloads import (
    EncryptedPayload,
    NotifyPayload,
    Payload,
    pull_payload_chain,
    push_payload_chain,
)

# The largest IKE message one UDP/IPv4 datagram carries with the 4-octet non-ESP marker
# (65535 - 20 IPv4 - 8 UDP - 4).  We never fragment (no RFC 7383), so we refuse to build more.
MAX_MESSAGE_LENGTH = 65503
_SK_HEADER_LENGTH = 4

P = TypeVar("P", bound=Payload)


class Protector(Protocol):
    """Seals and opens the body of an SK payload for one direction of an IKE SA."""

    def sealed_length(self, plaintext_len: int) -> int:
        """Length of IV | ciphertext | ICV for an inner chain of `plaintext_len` octets."""
        ...

    def seal(self, associated: bytes, plaintext: bytes, rng: RandomSource) -> bytes:
        """IV | ciphertext | ICV; `associated` is everything before the SK body."""
        ...

    def open(self, associated: bytes, body: bytes) -> bytes:
        """The inner chain; raises `core.errors.IntegrityError` or a `DecodeError`."""
        ...


@dataclass
class Message:
    """A decoded or to-be-encoded IKEv2 message.

    `is_initiator` is the I flag (the sender is the original initiator of the IKE SA), not
    "this is a request".  `payloads` holds (payload type, body) pairs in wire order; the
    type tells IDi from IDr and TSi from TSr.  For a protected message they are the inner
    payloads.  `encrypted` is set by `decode_message` when they came out of an SK payload;
    `encode_message` ignores it (the protector argument decides).
    """

    spi_i: bytes
    spi_r: bytes
    exchange_type: ExchangeType | int
    is_initiator: bool
    is_response: bool
    message_id: int
    payloads: list[tuple[int, Payload]] = field(default_factory=list)
    encrypted: bool = False

    @overload
    def get(self, payload_type: int) -> Payload | None: ...
    @overload
    def get(self, payload_type: int, kind: type[P]) -> P | None: ...
    def get(self, payload_type: int, kind: type[Any] | None = None) -> Any:
        """The first payload of `payload_type`, or None."""
        return next(self._of_type(payload_type, kind), None)

    @overload
    def get_all(self, payload_type: int) -> list[Payload]: ...
    @overload
    def get_all(self, payload_type: int, kind: type[P]) -> list[P]: ...
    def get_all(self, payload_type: int, kind: type[Any] | None = None) -> list[Any]:
        return list(self._of_type(payload_type, kind))

    def require(self, payload_type: int, kind: type[P]) -> P:
        """The first payload of `payload_type`; InvalidSyntax when the peer left it out."""
        payload = self.get(payload_type, kind)
        if payload is None:
            raise InvalidSyntax(f"{self.describe()} lacks a {_payload_name(payload_type)}")
        return payload

    def notifies(self) -> list[NotifyPayload]:
        return self.get_all(PayloadType.NOTIFY, NotifyPayload)

    def notify(self, notify_type: NotifyType | int) -> NotifyPayload | None:
        """The first notify of `notify_type`, or None."""
        return next((n for n in self.notifies() if n.notify_type == notify_type), None)

    def describe(self) -> str:
        """One log line, like "IKE_AUTH request 1 [ IDI AUTH SA TSI TSR N(INITIAL_CONTACT) ]"."""
        names = []
        for payload_type, payload in self.payloads:
            if isinstance(payload, NotifyPayload):
                names.append(f"N({name_of(NotifyType, payload.notify_type)})")
            else:
                names.append(_payload_name(payload_type))
        kind = "response" if self.is_response else "request"
        exchange = name_of(ExchangeType, self.exchange_type)
        return f"{exchange} {kind} {self.message_id} [ {' '.join(names)} ]"

    def _of_type(self, payload_type: int, kind: type[Any] | None) -> Iterator[Payload]:
        for this_type, payload in self.payloads:
            if this_type != payload_type:
                continue
            if kind is not None and not isinstance(payload, kind):
                raise UsageError(f"payload type {payload_type} holds {type(payload).__name__}")
            yield payload


def _payload_name(payload_type: int) -> str:
    return name_of(PayloadType, payload_type)


def _header(msg: Message, next_payload: int, length: int) -> bytes:
    if length > MAX_MESSAGE_LENGTH:
        raise UsageError(f"IKE message of {length} octets exceeds {MAX_MESSAGE_LENGTH}")
    buf = Buffer()
    flags = flags_for(is_initiator=msg.is_initiator, is_response=msg.is_response)
    push_header(
        buf,
        IkeHeader(
            msg.spi_i,
            msg.spi_r,
            next_payload,
            MAJOR_VERSION,
            MINOR_VERSION,
            msg.exchange_type,
            flags,
            msg.message_id,
            length,
        ),
    )
    return buf.data()


def encode_message(
    msg: Message, protector: Protector | None = None, rng: RandomSource | None = None
) -> bytes:
    """The datagram for `msg`: a plain payload chain without a protector (IKE_SA_INIT),
    otherwise every payload inside one SK payload (RFC 7296 3.14)."""
    if any(isinstance(payload, EncryptedPayload) for _, payload in msg.payloads):
        raise UsageError("the encrypted payload is built by encode_message, not passed in")
    first_type, chain = push_payload_chain(msg.payloads)
    if protector is None:
        return _header(msg, first_type, HEADER_LENGTH + len(chain)) + chain
    if rng is None:
        raise UsageError("sealing an SK payload needs a random source for its IV")
    sealed_length = protector.sealed_length(len(chain))
    sk_length = _SK_HEADER_LENGTH + sealed_length
    if sk_length > 0xFFFF:
        raise UsageError(f"SK payload of {sk_length} octets exceeds its length field")
    header = _header(msg, PayloadType.SK, HEADER_LENGTH + sk_length)
    sk_header = bytes([first_type, 0]) + sk_length.to_bytes(2, "big")
    associated = header + sk_header
    sealed = protector.seal(associated=associated, plaintext=chain, rng=rng)
    if len(sealed) != sealed_length:
        raise UsageError(f"protector sealed {len(sealed)} octets, promised {sealed_length}")
    return associated + sealed


def decode_message(data: bytes, protector: Protector | None = None) -> Message:
    """Parse a received datagram (non-ESP marker removed) and open its SK payload.

    Raises InvalidSyntax / InvalidMajorVersion / UnsupportedCriticalPayload (IkeErrors),
    MissingKeys when an SK payload arrives without a protector, and whatever the
    protector raises (IntegrityError, DecodeError).  Unencrypted payloads beside an SK
    payload are refused: every exchange that uses SK protects all of its payloads.
    """
    header = peek_header(data)
    outer = pull_payload_chain(Buffer(data, start=HEADER_LENGTH), header.next_payload)
    payloads = outer
    encrypted = False
    if outer and isinstance(outer[-1][1], EncryptedPayload):
        sk = outer[-1][1]
        if len(outer) > 1:
            raise InvalidSyntax("unencrypted payloads beside the encrypted payload")
        if protector is None:
            raise MissingKeys("an encrypted payload arrived before keys exist")
        plaintext = protector.open(associated=data[: len(data) - len(sk.body)], body=sk.body)
        payloads = pull_payload_chain(Buffer(plaintext), sk.first_inner)
        if payloads and isinstance(payloads[-1][1], EncryptedPayload):
            raise InvalidSyntax("an encrypted payload inside the encrypted payload")
        encrypted = True
    try:
        exchange_type: ExchangeType | int = ExchangeType(header.exchange_type)
    except ValueError:
        exchange_type = header.exchange_type
    return Message(
        spi_i=header.spi_i,
        spi_r=header.spi_r,
        exchange_type=exchange_type,
        is_initiator=header.is_initiator,
        is_response=header.is_response,
        message_id=header.message_id,
        payloads=payloads,
        encrypted=encrypted,
    )
