"""The control socket server: a unix stream socket speaking `protocol`.

The socket is created mode 0600 (owned by root when the daemon runs as root) in a parent
directory created mode 0700 when missing.  A stale socket left by a killed daemon is
replaced; a live one (another daemon answers) stops the start.  Requests on one
connection are answered in order; `subscribe` turns the connection into an event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from typing import Protocol

from core.daemon.bus import Subscription
from core.daemon.control.protocol import (
    MAX_LINE,
    CommandError,
    ProtocolError,
    Request,
    decode_request,
    encode,
    error_response,
    ok_response,
)
from core.errors import UsageError

log = logging.getLogger("rbipsec.control")

SOCKET_MODE = 0o600
DIRECTORY_MODE = 0o700


class ControlSocketError(UsageError):
    """The control socket cannot be created (in use, bad path, permissions)."""


class CommandHandler(Protocol):
    async def handle_command(self, request: Request) -> object:
        """The command's result; raises CommandError for a clear failure."""
        ...

    def subscribe(self) -> Subscription: ...


class ControlServer:
    def __init__(self, path: str, handler: CommandHandler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._inode: int | None = None

    async def start(self) -> None:
        sock = _bind(self.path)
        self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._conversation(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _conversation(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # the line exceeded MAX_LINE: we cannot find the next one
                writer.write(error_response(None, f"request line longer than {MAX_LINE} bytes"))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = decode_request(line)
            except ProtocolError as error:
                writer.write(error_response(error.request_id, str(error)))
                await writer.drain()
                continue
            if request.cmd == "subscribe":
                writer.write(ok_response(request.id, {"subscribed": True}))
                await writer.drain()
                await self._stream_events(reader, writer)
                return
            writer.write(await self._answer(request))
            await writer.drain()

    async def _answer(self, request: Request) -> bytes:
        try:
            result = await self._handler.handle_command(request)
        except CommandError as error:
            return error_response(request.id, str(error), **error.details)
        except UsageError as error:
            return error_response(request.id, str(error))
        return ok_response(request.id, result)

    async def _stream_events(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        subscription = self._handler.subscribe()
        hangup = asyncio.ensure_future(_until_closed(reader))
        try:
            while not hangup.done():
                waiter = asyncio.ensure_future(subscription.next_event())
                done, _pending = await asyncio.wait(
                    {waiter, hangup}, return_when=asyncio.FIRST_COMPLETED
                )
                if waiter not in done:
                    waiter.cancel()
                    return
                writer.write(encode(waiter.result()))
                await writer.drain()
        finally:
            subscription.close()
            hangup.cancel()


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Returns when the subscriber closes its end (anything it sends is ignored)."""
    with contextlib.suppress(ValueError, ConnectionError):
        while await reader.read(4096):
            pass


def _bind(path: str) -> socket.socket:
    if not os.path.isabs(path):
        raise ControlSocketError(f"control socket {path}: must be an absolute path")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=DIRECTORY_MODE, exist_ok=True)
    except OSError as error:
        raise ControlSocketError(f"cannot create {parent}: {error.strerror}") from None
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as error:
        sock.close()
        raise ControlSocketError(f"cannot bind {path}: {error.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    if os.geteuid() == 0:
        os.chown(path, 0, 0)
    sock.listen(16)
    sock.setblocking(False)
    return sock


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"{path} exists and is not a socket: not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # left by a daemon that was killed
        log.info("removed the stale control socket %s", path)
        return
    except OSError as error:
        raise ControlSocketError(f"control socket {path}: {error.strerror}") from None
    finally:
        probe.close()
    raise ControlSocketError(f"another daemon is already running on {path}")
