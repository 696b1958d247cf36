"""The console app: one source, two feed workers, screens that listen.

Data flows one way.  A worker asks the source for `status`, posts `StatusUpdated`, and
schedules the next poll only after that one finished (an action can ask for an early poll);
another worker follows the event stream and posts `EventArrived`.  The app keeps the latest
snapshot, the traffic meter and the event store, and publishes them to the screens through
signals.  A lost core shows as `LinkChanged` and is retried with backoff; nothing a source
raises reaches the screens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.signal import Signal
from textual.theme import Theme

from core.errors import UsageError
from tui.commands import TunnelCommands
from tui.connection import CommandFailed, SourceUnavailable, TunnelSource
from tui.eventlog import EventRecord, EventStore, describe
from tui.messages import EventArrived, Link, LinkChanged, StatusUpdated
from tui.model import Snapshot
from tui.themes import DEFAULT_THEME, load_themes, read_state, state_file, write_state
from tui.traffic import TrafficMeter
from tui.widgets.cells import Palette

RETRY_FIRST = 1.0
RETRY_MAX = 10.0

# action: (verb for messages, needs confirmation)
TUNNEL_ACTIONS: dict[str, tuple[str, bool]] = {
    "up": ("bring up", False),
    "down": ("take down", True),
    "rekey": ("rekey the Child SAs of", False),
    "rekey-ike": ("rekey the IKE SA of", False),
    "reset": ("reset (delete and renegotiate)", True),
}


class ConsoleApp(App[int]):
    TITLE = "rbipsec"
    COMMANDS = App.COMMANDS | {TunnelCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
        Binding("f1", "help", "Help", show=False),
    ]

    def __init__(
        self,
        source: TunnelSource,
        *,
        poll_interval: float = 1.0,
        state_path: Path | None = None,
        theme_dirs: Iterable[Path] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.poll_interval = poll_interval
        self.state_path = state_path if state_path is not None else state_file()
        self.snapshot: Snapshot | None = None
        self.link = Link(connected=False, message="connecting ...")
        self.meter = TrafficMeter()
        self.events = EventStore()
        self.palette = Palette.from_variables({})
        self.polls = 0
        self.config_draft: str | None = None  # the editor's unsaved text
        self.first_frame_at: float | None = None
        self.status_signal: Signal[Snapshot] = Signal(self, "status")
        self.event_signal: Signal[EventRecord] = Signal(self, "event")
        self.link_signal: Signal[Link] = Signal(self, "link")
        self._poke = asyncio.Event()
        self._theme_dirs = list(theme_dirs) if theme_dirs is not None else None
        self._theme_names: list[str] = []
        self._startup_theme = ""
        self._theme_chosen = False

    # -- start and stop ---------------------------------------------------------------------
    def on_mount(self) -> None:
        themes, problems = load_themes(self._theme_dirs)
        for theme in themes:
            self.register_theme(theme)
        self._theme_names = [theme.name for theme in themes]
        for problem in problems:
            self.notify(problem, title="theme skipped", severity="warning")
        remembered = read_state(self.state_path).get("theme")
        wanted = remembered if isinstance(remembered, str) else DEFAULT_THEME
        if wanted in self.available_themes:
            self.theme = wanted
        elif DEFAULT_THEME in self.available_themes:
            self.theme = DEFAULT_THEME
        self._startup_theme = self.theme
        self.palette = Palette.from_variables(self.get_css_variables())
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        from tui.screens.dashboard import DashboardScreen

        self.push_screen(DashboardScreen())
        self._start_feed()

    @work(exclusive=True, group="start", exit_on_error=False)
    async def _start_feed(self) -> None:
        try:
            await self.source.start()
        except SourceUnavailable as error:
            self._set_link(Link(False, f"cannot start: {error}"))
            return
        self._poll_status()
        self._follow_events()

    async def action_quit(self) -> None:
        self.workers.cancel_all()
        try:
            await self.source.close()
        finally:
            self.exit(0)

    async def on_unmount(self) -> None:
        """However the app ends, the source is released (the embedded core cleans up)."""
        self.workers.cancel_all()
        await self.source.close()

    # -- the feed ---------------------------------------------------------------------------
    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll_status(self) -> None:
        delay = RETRY_FIRST
        attempts = 0
        while True:
            started = time.monotonic()
            try:
                snapshot = await self.source.status()
            except SourceUnavailable as error:
                attempts += 1
                self.post_message(LinkChanged(Link(False, str(error), delay, attempts)))
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except CommandFailed as error:
                self.post_message(LinkChanged(Link(False, f"status refused: {error}", delay)))
                await self._pause(delay)
                continue
            except Exception as error:  # the UI boundary: report a bug, keep the console up
                self.log.error(f"status poll failed: {error!r}")
                self.post_message(LinkChanged(Link(False, f"internal error: {error!r}", delay)))
                await self._pause(delay)
                continue
            delay, attempts = RETRY_FIRST, 0
            self.post_message(StatusUpdated(snapshot))
            await self._pause(max(0.0, self.poll_interval - (time.monotonic() - started)))

    async def _pause(self, seconds: float) -> None:
        """Sleeps until the next poll is due or an action asks for one now."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poke.wait(), seconds)
        self._poke.clear()

    def refresh_now(self) -> None:
        self._poke.set()

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _follow_events(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                async for event in self.source.events():
                    delay = RETRY_FIRST
                    self.post_message(EventArrived(event))
            except SourceUnavailable:
                pass
            except Exception as error:  # the UI boundary, as for the poll
                self.log.error(f"event stream failed: {error!r}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    def on_status_updated(self, message: StatusUpdated) -> None:
        self.polls += 1
        self.snapshot = message.snapshot
        self.meter.update(message.snapshot)
        if not self.link.connected:
            self._set_link(Link(True))
        self.status_signal.publish(message.snapshot)
        if self.first_frame_at is None:
            self.call_after_refresh(self._mark_first_frame)

    def _mark_first_frame(self) -> None:
        self.first_frame_at = time.monotonic()

    def on_event_arrived(self, message: EventArrived) -> None:
        record = describe(message.event)
        self.events.add(record)
        self.event_signal.publish(record)
        if record.type in ("ConfigReloaded", "PeerState", "IkeSaUp", "IkeSaDown"):
            self.refresh_now()

    def on_link_changed(self, message: LinkChanged) -> None:
        self._set_link(message.link)

    def _set_link(self, link: Link) -> None:
        was_connected = self.link.connected
        self.link = link
        self.link_signal.publish(link)
        if was_connected and not link.connected:
            self.notify(link.message, title="lost the core", severity="error")
        elif link.connected and not was_connected and self.polls > 1:
            self.notify("connection restored", title=self.source.description)

    # -- themes -----------------------------------------------------------------------------
    def _theme_changed(self, theme: Theme) -> None:
        self.palette = Palette.from_variables(self.get_css_variables())
        if theme.name != self._startup_theme or self._theme_chosen:
            self._theme_chosen = True  # the operator's choice, not the start-up default
            write_state(self.state_path, theme=theme.name)
        if self.snapshot is not None:
            self.status_signal.publish(self.snapshot)

    def action_next_theme(self) -> None:
        names = self._theme_names or list(self.available_themes)
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.notify(f"theme: {self.theme}")

    # -- screens ----------------------------------------------------------------------------
    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_events(self) -> None:
        from tui.screens.events import EventLogScreen

        if not isinstance(self.screen, EventLogScreen):
            self.push_screen(EventLogScreen())

    def action_editor(self) -> None:
        from tui.screens.editor import EditorScreen

        if not isinstance(self.screen, EditorScreen):
            self.push_screen(EditorScreen())

    def show_details(self, peer: str) -> None:
        from tui.screens.detail import DetailScreen

        self.push_screen(DetailScreen(peer))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Config editor", "Edit, validate and apply config.toml",
                            self.action_editor)  # fmt: skip
        yield SystemCommand("Event log", "Every event from the core", self.action_events)
        yield SystemCommand("Help", "Every key binding", self.action_help)
        yield SystemCommand("Next theme", "Cycle the rbipsec themes", self.action_next_theme)

    # -- tunnel actions ---------------------------------------------------------------------
    def tunnel_action(self, action: str, peer: str | None) -> None:
        """Runs `action` on `peer`, asking first when it interrupts traffic."""
        if peer is None:
            self.notify("no tunnel selected", severity="warning")
            return
        verb, disruptive = TUNNEL_ACTIONS[action]
        if not disruptive:
            self._run_tunnel_action(action, peer)
            return
        from tui.screens.confirm import ConfirmScreen

        def decided(confirmed: bool | None) -> None:
            if confirmed:
                self._run_tunnel_action(action, peer)

        question = f"{verb.capitalize()} {peer}?\nTraffic through its interface stops."
        self.push_screen(ConfirmScreen(question, confirm=action.capitalize()), decided)

    @work(group="actions", exit_on_error=False)
    async def _run_tunnel_action(self, action: str, peer: str) -> None:
        verb, _ = TUNNEL_ACTIONS[action]
        try:
            if action == "up":
                await self.source.up(peer)
            elif action == "down":
                await self.source.down(peer)
            elif action == "rekey":
                await self.source.rekey(peer)
            elif action == "rekey-ike":
                await self.source.rekey(peer, ike=True)
            else:
                await self.source.reset(peer)
        except (CommandFailed, SourceUnavailable) as error:
            self.notify(str(error), title=f"could not {verb} {peer}", severity="error")
            return
        self.notify(f"asked to {verb} {peer}", title=peer)
        self.refresh_now()


def build_source(args: argparse.Namespace) -> TunnelSource:
    """The source the command line asks for: --connect/--socket attaches to a daemon, -c
    embeds the core with that config; with neither, a daemon answering on the default
    socket is attached, else ./config.toml or /etc/rbipsec/config.toml is embedded."""
    from core.cli import find_config, find_socket
    from core.config import load
    from tui.connection import SocketSource

    connect = getattr(args, "connect", None) or getattr(args, "socket", None)
    if connect:
        return SocketSource(connect)
    explicit = getattr(args, "config", None)
    if explicit is None:
        socket_path = find_socket(None, None)
        if _daemon_answers(socket_path):
            return SocketSource(socket_path)
    path = find_config(explicit)
    if path is None:
        raise UsageError(
            "no daemon answers on the control socket and no config file was found: use "
            "-c FILE to run the core in the console, --connect SOCKET to attach to a "
            "daemon, or --demo for a throwaway lab"
        )
    from tui.embedded import EmbeddedSource

    return EmbeddedSource(load(path), dataplane=getattr(args, "dataplane", None))


def _daemon_answers(path: str) -> bool:
    from core.daemon.control.client import ControlClient, DaemonNotRunning

    try:
        with ControlClient(path, timeout=2.0) as client:
            client.request("ping")
    except (DaemonNotRunning, UsageError, OSError):
        return False
    return True


def run_console(args: argparse.Namespace) -> int:
    """`rbipsec console [-c FILE | --connect SOCKET | --demo]`; returns the exit code.

    Raises ConfigError (config problems) and UsageError (nothing to show) before any UI."""
    if getattr(args, "demo", False):
        from tui.demo import run_demo

        return run_demo(args)
    return run_app(build_source(args))


def run_app(source: TunnelSource, **options: Any) -> int:
    """Runs the console on `source` until it quits; the source is closed on every path."""
    return asyncio.run(_run(ConsoleApp(source, **options), source))


async def _run(app: ConsoleApp, source: TunnelSource) -> int:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.exit)
    try:
        await app.run_async()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await source.close()
    return app.return_code or 0
