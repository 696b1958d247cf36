"""Control commands, dispatched to the daemon (the `CommandHandler` of the server)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import save_text, validate_text
from core.daemon.bus import Subscription
from core.daemon.control.protocol import CommandError, Request
from core.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from core.daemon.service import Daemon


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._apply_lock = asyncio.Lock()

    def subscribe(self) -> Subscription:
        return self._daemon.subscribe()

    async def handle_command(self, request: Request) -> object:
        daemon = self._daemon
        args = request.args
        try:
            if request.cmd == "ping":
                return {"pong": True}
            if request.cmd == "status":
                return await daemon.status(args.get("peer"))
            if request.cmd == "up":
                return await daemon.up(args["peer"])
            if request.cmd == "down":
                return await daemon.down(args["peer"])
            if request.cmd == "rekey":
                return await daemon.rekey(args["peer"], ike=bool(args.get("ike", False)))
            if request.cmd == "reload":
                return await self._reload()
            if request.cmd == "config-get":
                return await self._config_get()
            if request.cmd == "config-validate":
                return self._config_validate(args["text"])
            if request.cmd == "config-apply":
                return await self._config_apply(args["text"])
        except ConfigError as error:
            raise _rejected(error.problems) from None
        except UsageError as error:
            if isinstance(error, CommandError):
                raise
            raise CommandError(str(error)) from None
        raise CommandError(f"command {request.cmd!r} is not handled")

    async def _reload(self) -> dict[str, Any]:
        return await self._daemon.reload()

    async def _config_get(self) -> dict[str, Any]:
        path = self._daemon.config.path
        try:
            text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read {path}: {error}") from None
        return {"path": path, "text": text}

    def _config_validate(self, text: str) -> dict[str, Any]:
        path = self._daemon.config.path
        problems = validate_text(text, path, Path(path).parent)
        return {"valid": not problems, "problems": problems}

    async def _config_apply(self, text: str) -> dict[str, Any]:
        """Validate, save atomically, reload.  With any problem nothing is written."""
        path = self._daemon.config.path
        async with self._apply_lock:
            problems = validate_text(text, path, Path(path).parent)
            if problems:
                raise _rejected(problems)
            try:
                config = await asyncio.to_thread(save_text, path, text)
            except OSError as error:
                raise CommandError(f"cannot save {path}: {error}") from None
            reload = await self._daemon.reload(config)
        return {"saved": path, "reload": reload}


def _rejected(problems: list[str]) -> CommandError:
    count = len(problems)
    return CommandError(
        f"the config has {count} problem{'s' if count != 1 else ''}; nothing was changed",
        problems=problems,
    )
