"""The core embedded in the console's process: `rbipsec console -c config.toml`.

The daemon service runs on the console's own asyncio loop.  Requests go through the very
command handler the control socket uses (after the same request check), so the embedded
console and an attached one see the same answers.  The daemon's log records become `Log`
events in the console instead of lines on the terminal, and the control socket is served
too (when its path is free), so `rbipsec status` works next to the console.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from core.config import Config, DataplaneChoice
from core.daemon.bus import BusLogHandler
from core.daemon.control.client import CommandFailed
from core.daemon.control.commands import Commands
from core.daemon.control.protocol import (
    CommandError,
    JsonDict,
    ProtocolError,
    decode_request,
    encode_request,
)
from core.daemon.control.server import ControlServer
from core.daemon.service import Daemon
from core.errors import RbipsecError, UsageError
from tui.connection import SourceUnavailable, TunnelSource

log = logging.getLogger("rbipsec.console")


class EmbeddedSource(TunnelSource):
    def __init__(
        self,
        config: Config,
        *,
        dataplane: DataplaneChoice | None = None,
        serve_socket: bool = True,
        daemon: Daemon | None = None,
    ) -> None:
        self.config = config
        self.description = f"embedded core ({config.path})"
        self.daemon = daemon if daemon is not None else Daemon(config, dataplane_choice=dataplane)
        self._commands = Commands(self.daemon)
        self._serve_socket = serve_socket
        self._server: ControlServer | None = None
        self._log_handler: BusLogHandler | None = None
        self._saved_handlers: list[logging.Handler] = []
        self._started = False
        self._closed = False
        self.socket_problem: str | None = None

    async def start(self) -> None:
        self._capture_logging()
        if self._serve_socket:
            server = ControlServer(self.config.global_.socket, self._commands)
            try:
                await server.start()
            except RbipsecError as error:
                self.socket_problem = str(error)
                log.warning("the control socket is not served: %s", error)
            else:
                self._server = server
        try:
            await self.daemon.start()
        except (RbipsecError, OSError) as error:
            log.error("cannot start the core: %s", error)
            raise SourceUnavailable(f"the embedded core cannot start: {error}") from None
        self._started = True

    def _capture_logging(self) -> None:
        """Log records become events; nothing may write to the terminal under the UI."""
        root = logging.getLogger()
        self._saved_handlers = list(root.handlers)
        self._log_handler = BusLogHandler(self.daemon.bus, logging.DEBUG)
        root.handlers[:] = [self._log_handler]
        root.setLevel(self.config.global_.log_level.value.upper())
        for noisy in ("pyroute2", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._started:
                await self.daemon.stop()
        finally:
            if self._server is not None:
                await self._server.close()
            root = logging.getLogger()
            if self._log_handler is not None and self._log_handler in root.handlers:
                root.handlers[:] = self._saved_handlers

    async def request(self, cmd: str, **args: Any) -> Any:
        if self._closed or not self._started:
            raise SourceUnavailable("the embedded core is not running")
        try:
            request = decode_request(encode_request(0, cmd, **args))
        except ProtocolError as error:
            raise CommandFailed(str(error), {}) from None
        try:
            return await self._commands.handle_command(request)
        except CommandError as error:
            raise CommandFailed(str(error), dict(error.details)) from None
        except UsageError as error:
            raise CommandFailed(str(error), {}) from None

    async def events(self) -> AsyncIterator[JsonDict]:
        if self._closed:
            raise SourceUnavailable("the embedded core has stopped")
        subscription = self.daemon.subscribe()
        try:
            while True:
                yield await subscription.next_event()
        finally:
            subscription.close()
