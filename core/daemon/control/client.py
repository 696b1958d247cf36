"""Clients of the control socket: blocking for the CLI, asyncio for the console.

Both raise `DaemonNotRunning` when nothing listens on the socket (missing file, refused
connection), `CommandFailed` when the daemon answers with an error (its message, plus
details such as config `problems`), and `ProtocolError` on a garbled answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from core.daemon.control.protocol import (
    MAX_LINE,
    JsonDict,
    ProtocolError,
    decode_line,
    encode_request,
)
from core.errors import UsageError

# Events are bigger than requests only when they carry status snapshots; allow 16 MiB.
MAX_ANSWER = 16 * MAX_LINE
DEFAULT_TIMEOUT = 30.0


class DaemonNotRunning(UsageError):
    """Nobody listens on the control socket."""


class CommandFailed(UsageError):
    def __init__(self, message: str, details: JsonDict) -> None:
        super().__init__(message)
        self.details = details

    @property
    def problems(self) -> list[str]:
        problems = self.details.get("problems")
        return [str(line) for line in problems] if isinstance(problems, list) else []


def _not_running(path: str, error: OSError) -> DaemonNotRunning:
    if isinstance(error, FileNotFoundError):
        why = "the socket does not exist"
    elif isinstance(error, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(error, PermissionError):
        return DaemonNotRunning(f"cannot use the control socket {path}: permission denied")
    else:
        why = error.strerror or str(error)
    return DaemonNotRunning(f"the rbipsec daemon is not running ({path}: {why})")


def _result(answer: JsonDict, request_id: int) -> Any:
    if answer.get("id") != request_id:
        raise ProtocolError(f"the daemon answered request {answer.get('id')!r}, not {request_id}")
    if answer.get("ok") is True:
        return answer.get("result")
    details = {k: v for k, v in answer.items() if k not in ("id", "ok", "error")}
    raise CommandFailed(str(answer.get("error") or "the daemon reported an error"), details)


class ControlClient:
    """A blocking client: one connection, requests answered in order."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as error:
            self._sock.close()
            raise _not_running(path, error) from None
        self._file = self._sock.makefile("rb")
        self._ids = itertools.count(1)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def request(self, cmd: str, **args: Any) -> Any:
        request_id = next(self._ids)
        try:
            self._sock.sendall(encode_request(request_id, cmd, **args))
        except OSError as error:
            raise DaemonNotRunning(f"the daemon closed the connection: {error}") from None
        return _result(self._read(), request_id)

    def events(self) -> Iterator[JsonDict]:
        """Subscribe; yields events until the daemon closes the connection."""
        self.request("subscribe")
        self._sock.settimeout(None)
        while True:
            try:
                yield self._read()
            except DaemonNotRunning:
                return

    def _read(self) -> JsonDict:
        try:
            line = self._file.readline(MAX_ANSWER)
        except TimeoutError:
            raise ProtocolError("the daemon did not answer in time") from None
        except OSError as error:
            raise DaemonNotRunning(f"the daemon closed the connection: {error}") from None
        if not line:
            raise DaemonNotRunning("the daemon closed the connection")
        return decode_line(line)


class AsyncControlClient:
    """An asyncio client.  Use one instance for requests and another for `events()`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(
                self.path, limit=MAX_ANSWER
            )
        except OSError as error:
            raise _not_running(self.path, error) from None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(self, cmd: str, **args: Any) -> Any:
        async with self._lock:
            if self._writer is None:
                await self.connect()
            assert self._writer is not None
            request_id = next(self._ids)
            try:
                self._writer.write(encode_request(request_id, cmd, **args))
                await self._writer.drain()
            except OSError as error:
                raise DaemonNotRunning(f"the daemon closed the connection: {error}") from None
            return _result(await self._read(), request_id)

    async def events(self) -> AsyncIterator[JsonDict]:
        await self.request("subscribe")
        while True:
            try:
                yield await self._read()
            except DaemonNotRunning:
                return

    async def _read(self) -> JsonDict:
        assert self._reader is not None
        try:
            line = await self._reader.readline()
        except (OSError, ValueError) as error:
            raise DaemonNotRunning(f"the daemon closed the connection: {error}") from None
        if not line:
            raise DaemonNotRunning("the daemon closed the connection")
        return decode_line(line)
