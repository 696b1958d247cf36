"""A small client for strongSwan's VICI protocol (charon's control socket).

Written from the protocol description in strongSwan's `src/libcharon/plugins/vici/README.md`:
- transport: each segment is a 32-bit big-endian length followed by that many bytes;
- packet: one type byte, then for named types (CMD_REQUEST, EVENT_REGISTER,
  EVENT_UNREGISTER, EVENT) a name (8-bit length + ASCII), then a message;
- message: a flat sequence of elements: SECTION_START name, SECTION_END, KEY_VALUE name
  value, LIST_START name, LIST_ITEM value, LIST_END; names carry an 8-bit length, values
  a 16-bit big-endian length.

Messages map to Python as dicts of str -> (str | list[str] | dict).  Values are decoded as
UTF-8 with replacement: every value charon reports is text.  Streaming commands
(`list-sas`) deliver their data as events between the request and the response.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import TypeAlias

Value: TypeAlias = "str | list[str] | Message"
Message: TypeAlias = "dict[str, Value]"
InputValue: TypeAlias = "str | int | bool | Sequence[str] | Mapping[str, InputValue]"


class ViciError(Exception):
    """A malformed VICI packet, an unknown command or event, or a dead socket."""


class PacketType(IntEnum):
    CMD_REQUEST = 0
    CMD_RESPONSE = 1
    CMD_UNKNOWN = 2
    EVENT_REGISTER = 3
    EVENT_UNREGISTER = 4
    EVENT_CONFIRM = 5
    EVENT_UNKNOWN = 6
    EVENT = 7


NAMED_TYPES = {
    PacketType.CMD_REQUEST,
    PacketType.EVENT_REGISTER,
    PacketType.EVENT_UNREGISTER,
    PacketType.EVENT,
}


class Element(IntEnum):
    SECTION_START = 1
    SECTION_END = 2
    KEY_VALUE = 3
    LIST_START = 4
    LIST_ITEM = 5
    LIST_END = 6


def _name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > 255:
        raise ViciError(f"name too long for VICI: {name!r}")
    return bytes([len(raw)]) + raw


def _value(value: str | int | bool) -> bytes:
    if isinstance(value, bool):
        value = "yes" if value else "no"
    raw = str(value).encode()
    if len(raw) > 0xFFFF:
        raise ViciError("value longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def encode_message(message: Mapping[str, InputValue]) -> bytes:
    out = bytearray()
    for key, value in message.items():
        if isinstance(value, Mapping):
            out += bytes([Element.SECTION_START]) + _name(key)
            out += encode_message(value)
            out += bytes([Element.SECTION_END])
        elif isinstance(value, str | int | bool):
            out += bytes([Element.KEY_VALUE]) + _name(key) + _value(value)
        else:
            out += bytes([Element.LIST_START]) + _name(key)
            for item in value:
                out += bytes([Element.LIST_ITEM]) + _value(item)
            out += bytes([Element.LIST_END])
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, length: int) -> bytes:
        if self.offset + length > len(self.data):
            raise ViciError(f"truncated VICI data at offset {self.offset}")
        chunk = self.data[self.offset : self.offset + length]
        self.offset += length
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def name(self) -> str:
        return self.take(self.byte()).decode("ascii", "replace")

    def value(self) -> str:
        (length,) = struct.unpack("!H", self.take(2))
        return self.take(length).decode("utf-8", "replace")

    @property
    def done(self) -> bool:
        return self.offset >= len(self.data)


def decode_message(data: bytes) -> Message:
    reader = _Reader(data)
    root: Message = {}
    stack: list[Message] = [root]
    while not reader.done:
        kind = reader.byte()
        if kind == Element.SECTION_START:
            section: Message = {}
            stack[-1][reader.name()] = section
            stack.append(section)
        elif kind == Element.SECTION_END:
            if len(stack) == 1:
                raise ViciError("SECTION_END without a section")
            stack.pop()
        elif kind == Element.KEY_VALUE:
            key = reader.name()
            stack[-1][key] = reader.value()
        elif kind == Element.LIST_START:
            key = reader.name()
            items: list[str] = []
            while (item_kind := reader.byte()) == Element.LIST_ITEM:
                items.append(reader.value())
            if item_kind != Element.LIST_END:
                raise ViciError(f"element {item_kind} inside list {key!r}")
            stack[-1][key] = items
        else:
            raise ViciError(f"unknown VICI element type {kind}")
    if len(stack) != 1:
        raise ViciError("unterminated section")
    return root


def encode_packet(kind: PacketType, name: str | None, message: Mapping[str, InputValue]) -> bytes:
    body = bytes([kind])
    if kind in NAMED_TYPES:
        if name is None:
            raise ViciError(f"{kind.name} needs a name")
        body += _name(name)
    body += encode_message(message)
    return struct.pack("!I", len(body)) + body


def decode_packet(body: bytes) -> tuple[PacketType, str | None, Message]:
    reader = _Reader(body)
    try:
        kind = PacketType(reader.byte())
    except ValueError:
        raise ViciError(f"unknown VICI packet type {body[0]}") from None
    name = reader.name() if kind in NAMED_TYPES else None
    return kind, name, decode_message(body[reader.offset :])


class ViciClient:
    """One connection to a charon's vici socket; blocking, one request at a time."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(path)
        except OSError:
            self._socket.close()
            raise

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> ViciClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv_exact(self, length: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < length:
            chunk = self._socket.recv(length - len(chunks))
            if not chunk:
                raise ViciError("charon closed the vici socket")
            chunks += chunk
        return bytes(chunks)

    def _send(self, kind: PacketType, name: str | None, message: Mapping[str, InputValue]) -> None:
        self._socket.sendall(encode_packet(kind, name, message))

    def _receive(self) -> tuple[PacketType, str | None, Message]:
        (length,) = struct.unpack("!I", self._recv_exact(4))
        return decode_packet(self._recv_exact(length))

    def request(self, command: str, message: Mapping[str, InputValue] | None = None) -> Message:
        """Sends a command and returns its response (events of other streams are dropped)."""
        self._send(PacketType.CMD_REQUEST, command, message or {})
        while True:
            kind, _, reply = self._receive()
            if kind == PacketType.CMD_RESPONSE:
                return reply
            if kind == PacketType.CMD_UNKNOWN:
                raise ViciError(f"charon does not know the vici command {command!r}")
            if kind != PacketType.EVENT:
                raise ViciError(f"unexpected {kind.name} in reply to {command!r}")

    def streamed(
        self, command: str, event: str, message: Mapping[str, InputValue] | None = None
    ) -> tuple[list[Message], Message]:
        """Runs a streaming command: (the `event` messages it produced, its response)."""
        self._register(PacketType.EVENT_REGISTER, event)
        try:
            self._send(PacketType.CMD_REQUEST, command, message or {})
            events: list[Message] = []
            while True:
                kind, name, reply = self._receive()
                if kind == PacketType.EVENT and name == event:
                    events.append(reply)
                elif kind == PacketType.CMD_RESPONSE:
                    return events, reply
                elif kind == PacketType.CMD_UNKNOWN:
                    raise ViciError(f"charon does not know the vici command {command!r}")
        finally:
            self._register(PacketType.EVENT_UNREGISTER, event)

    def _register(self, kind: PacketType, event: str) -> None:
        self._send(kind, event, {})
        while True:
            reply_kind, _, _ = self._receive()
            if reply_kind == PacketType.EVENT_CONFIRM:
                return
            if reply_kind == PacketType.EVENT_UNKNOWN:
                raise ViciError(f"charon does not know the vici event {event!r}")
            if reply_kind != PacketType.EVENT:
                raise ViciError(f"unexpected {reply_kind.name} while registering {event!r}")
