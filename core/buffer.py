"""A bounds-checked byte buffer for the wire codecs (IKE, ESP, netlink).

Every read checks its length first, so a short or lying packet raises
`BufferReadError` and never an `IndexError` or `struct.error`.
"""

from __future__ import annotations

import struct

from core.errors import DecodeError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class BufferReadError(DecodeError):
    """A read ran past the end of the data."""


class Buffer:
    """Reads (`pull_*`) from given bytes or writes (`push_*`) into a growing buffer."""

    __slots__ = ("_data", "_end", "_out", "_pos")

    def __init__(self, data: bytes = b"", *, start: int = 0, end: int | None = None) -> None:
        self._data = memoryview(data)
        self._pos = start
        self._end = len(data) if end is None else end
        if not 0 <= start <= self._end <= len(data):
            raise BufferReadError("buffer bounds outside the data")
        self._out = bytearray()

    # -- reading ---------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > self._end:
            raise BufferReadError(
                f"need {n} bytes at offset {self._pos}, only {self._end - self._pos} left"
            )
        view = self._data[self._pos : self._pos + n]
        self._pos += n
        return view

    def pull_bytes(self, n: int) -> bytes:
        return bytes(self._take(n))

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.remaining)

    def pull_u8(self) -> int:
        return self._take(1)[0]

    def pull_u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def pull_u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def pull_u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def sub(self, n: int) -> Buffer:
        """A reader over the next `n` bytes; this buffer skips past them."""
        start = self._pos
        self._take(n)
        return Buffer(self._data.obj, start=start, end=start + n)  # type: ignore[arg-type]

    # -- writing ---------------------------------------------------------------
    def push_bytes(self, data: bytes) -> None:
        self._out += data

    def push_u8(self, value: int) -> None:
        self._out.append(value & 0xFF)

    def push_u16(self, value: int) -> None:
        self._out += _U16.pack(value & 0xFFFF)

    def push_u32(self, value: int) -> None:
        self._out += _U32.pack(value & 0xFFFFFFFF)

    def push_u64(self, value: int) -> None:
        self._out += _U64.pack(value & 0xFFFFFFFFFFFFFFFF)

    @property
    def written(self) -> int:
        return len(self._out)

    def patch_u16(self, offset: int, value: int) -> None:
        """Overwrite a length field written earlier."""
        self._out[offset : offset + 2] = _U16.pack(value & 0xFFFF)

    def patch_u32(self, offset: int, value: int) -> None:
        self._out[offset : offset + 4] = _U32.pack(value & 0xFFFFFFFF)

    def data(self) -> bytes:
        return bytes(self._out)
