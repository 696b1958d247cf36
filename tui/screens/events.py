"""Every event from the core, newest last, filtered by level and by text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static

from tui.eventlog import LEVELS, EventRecord
from tui.screens.detail import LEVEL_ROLES
from tui.widgets.status_bars import LinkBanner

if TYPE_CHECKING:
    from tui.app import ConsoleApp


class EventLogScreen(Screen[None]):
    DEFAULT_CSS = """
    EventLogScreen #levels {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    EventLogScreen RichLog {
        height: 1fr;
        background: $surface;
    }
    EventLogScreen Input {
        dock: bottom;
        height: 3;
    }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("1", "level('debug')", "Debug+"),
        Binding("2", "level('info')", "Info+"),
        Binding("3", "level('warning')", "Warning+"),
        Binding("4", "level('error')", "Errors"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.level = "info"
        self.filter_text = ""
        self.shown = 0

    @property
    def console(self) -> ConsoleApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield LinkBanner()
        yield Static(id="levels")
        yield RichLog(id="events", wrap=True, markup=False, max_lines=5000)
        yield Input(placeholder="filter: peer name or words (enter to keep, esc to leave)",
                    id="filter")  # fmt: skip
        yield Footer()

    def on_mount(self) -> None:
        self.console.event_signal.subscribe(self, self._event)
        self._rebuild()
        self.query_one(RichLog).focus()

    def _line(self, record: EventRecord) -> Text:
        palette = self.console.palette
        return Text.assemble(
            (f"{record.clock} ", palette.muted),
            (f"{record.level:<7} ", palette.role(LEVEL_ROLES.get(record.level, "plain"))),
            (f"{record.peer or '-':<14} ", "bold"),
            record.text,
        )

    def _rebuild(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        records = self.console.events.matching(self.level, self.filter_text)
        for record in records:
            log.write(self._line(record))
        self.shown = len(records)
        self._show_levels()

    def _show_levels(self) -> None:
        palette = self.console.palette
        text = Text("level ≥ ")
        for index, level in enumerate(LEVELS, start=1):
            style = "reverse bold" if level == self.level else ""
            text.append(f" {index} {level} ", style=style)
            text.append(" ")
        text.append(f"  {self.shown} of {len(self.console.events)} events", style=palette.muted)
        if self.filter_text:
            text.append(f"  matching {self.filter_text!r}", style=palette.accent)
        self.query_one("#levels", Static).update(text)

    def _event(self, record: EventRecord) -> None:
        if not record.at_least(self.level):
            self._show_levels()
            return
        needle = self.filter_text.lower()
        if needle and needle not in f"{record.peer or ''} {record.text}".lower():
            self._show_levels()
            return
        self.query_one(RichLog).write(self._line(record))
        self.shown += 1
        self._show_levels()

    def action_level(self, level: str) -> None:
        self.level = level
        self._rebuild()

    def action_focus_filter(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Changed)
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._rebuild()

    @on(Input.Submitted)
    def _filter_kept(self) -> None:
        self.query_one(RichLog).focus()
