"""Where the console's data comes from: a `TunnelSource`.

Every source speaks the daemon's control protocol (core/daemon/control/protocol.py): a
request is a command name plus arguments and answers with a JSON result, and `events()`
yields the daemon's event stream.  Implementations:

- `SocketSource`: a running daemon, over its unix control socket;
- `tui.embedded.EmbeddedSource`: the daemon service running in the console's own process;
- `tui.fake.FakeSource`: a scripted core for tests, the benchmark and screenshots.

Because all of them answer the same commands with the same JSON, the console shows the
same thing whichever is used.  Failures reach the UI as two exceptions only:
`SourceUnavailable` (no daemon, connection lost: retry later) and `CommandFailed` (the
daemon refused a command; its message and details such as config problems).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.daemon.control.client import AsyncControlClient, CommandFailed, DaemonNotRunning
from core.daemon.control.protocol import JsonDict, ProtocolError
from core.errors import UsageError
from tui.model import Snapshot, parse_status

__all__ = [
    "CommandFailed",
    "ConfigText",
    "SocketSource",
    "SourceUnavailable",
    "TunnelSource",
]


class SourceUnavailable(UsageError):
    """The core cannot be reached right now (not running, connection lost, garbled answer)."""


@dataclass(frozen=True)
class ConfigText:
    path: str
    text: str


def _problems(value: object) -> list[str]:
    if isinstance(value, Mapping):
        value = value.get("problems")
    if isinstance(value, list):
        return [str(line) for line in value]
    return []


class TunnelSource(abc.ABC):
    """The console's one door to the core."""

    description = "core"  # shown in the summary line, e.g. "daemon at /run/rbipsec/..."

    async def start(self) -> None:
        """Prepare the source (the embedded one starts its daemon here)."""
        return None

    async def close(self) -> None:
        """Release the source; the embedded one stops its daemon and cleans up."""
        return None

    @abc.abstractmethod
    async def request(self, cmd: str, **args: Any) -> Any:
        """One command's result; raises SourceUnavailable or CommandFailed."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[JsonDict]:
        """The event stream; ends or raises SourceUnavailable when the core goes away."""

    def clock(self) -> float:
        """The clock snapshots are stamped with (rates are computed on it)."""
        return time.monotonic()

    async def status(self) -> Snapshot:
        result = await self.request("status")
        return parse_status(result, self.clock())

    async def up(self, peer: str) -> None:
        await self.request("up", peer=peer)

    async def down(self, peer: str) -> None:
        await self.request("down", peer=peer)

    async def rekey(self, peer: str, *, ike: bool = False) -> None:
        if ike:
            await self.request("rekey", peer=peer, ike=True)
        else:
            await self.request("rekey", peer=peer)

    async def reset(self, peer: str) -> None:
        """Tear the tunnel down (DELETE to the peer) and negotiate it afresh."""
        await self.down(peer)
        await self.up(peer)

    async def config_get(self) -> ConfigText:
        result = await self.request("config-get")
        if isinstance(result, Mapping):
            return ConfigText(str(result.get("path", "")), str(result.get("text", "")))
        return ConfigText("", str(result))

    async def config_validate(self, text: str) -> list[str]:
        """The problem lines of `text` as the core would load it; empty when valid."""
        try:
            result = await self.request("config-validate", text=text)
        except CommandFailed as error:
            if error.problems:
                return error.problems
            raise
        return _problems(result)

    async def config_apply(self, text: str) -> object:
        """Saves `text` atomically and reloads; raises CommandFailed (with `problems`) and
        changes nothing when the text is invalid."""
        return await self.request("config-apply", text=text)


class SocketSource(TunnelSource):
    """A daemon reached over its control socket.  Reconnects on the next request after a
    loss; each `events()` call opens its own subscription connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"daemon at {path}"
        self._client: AsyncControlClient | None = None

    async def request(self, cmd: str, **args: Any) -> Any:
        if self._client is None:
            self._client = AsyncControlClient(self.path)
        try:
            return await self._client.request(cmd, **args)
        except (DaemonNotRunning, ProtocolError, OSError) as error:
            await self._drop()
            raise SourceUnavailable(str(error)) from None

    async def events(self) -> AsyncIterator[JsonDict]:
        client = AsyncControlClient(self.path)
        try:
            async for event in client.events():
                yield event
        except (DaemonNotRunning, ProtocolError, OSError) as error:
            raise SourceUnavailable(str(error)) from None
        finally:
            await client.close()
        raise SourceUnavailable("the daemon closed the event stream")

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError):
                await client.close()

    async def close(self) -> None:
        await self._drop()
