"""The dashboard: summary, the live tunnel table, a filter, and the actions on a tunnel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input

from tui.model import Snapshot
from tui.widgets.grid import Grid
from tui.widgets.status_bars import LinkBanner, SummaryBar, summary_text
from tui.widgets.tunnel_table import COLUMNS, SORTS, TunnelTable

if TYPE_CHECKING:
    from tui.app import ConsoleApp

SORT_CYCLE = ("name", "state", "iface", "child_sa", "ike_sa", "in", "out", "remote", "uptime")


class FilterInput(Input):
    DEFAULT_CSS = """
    FilterInput {
        display: none;
        dock: bottom;
        height: 3;
        border: tall $accent;
    }
    FilterInput.-open {
        display: block;
    }
    """


class DashboardScreen(Screen[None]):
    DEFAULT_CSS = """
    DashboardScreen {
        layout: vertical;
    }
    DashboardScreen #sortline {
        height: 1;
        padding: 0 1;
        color: $text-muted;
        background: $panel;
    }
    """
    BINDINGS = [
        Binding("enter", "details", "Details", show=False),
        Binding("u", "tunnel('up')", "Up"),
        Binding("d", "tunnel('down')", "Down"),
        Binding("r", "tunnel('rekey')", "Rekey"),
        Binding("k", "tunnel('rekey-ike')", "Rekey IKE", show=False),
        Binding("x", "tunnel('reset')", "Reset"),
        Binding("slash", "open_filter", "Filter"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("e", "app.editor", "Config"),
        Binding("l", "app.events", "Log"),
        Binding("t", "app.next_theme", "Theme", show=False),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield LinkBanner()
        yield SummaryBar(id="summary")
        yield SummaryBar(id="sortline")
        yield TunnelTable(id="tunnels")
        yield FilterInput(placeholder="filter: words in name, interface, state or remote",
                          id="filter")  # fmt: skip
        yield Footer()

    @property
    def console(self) -> ConsoleApp:
        return self.app  # type: ignore[return-value]

    @property
    def table(self) -> TunnelTable:
        return self.query_one(TunnelTable)

    @property
    def selected_peer(self) -> str | None:
        return self.table.selected_peer

    def on_mount(self) -> None:
        self.console.status_signal.subscribe(self, self._status)
        self._show_summary(self.console.snapshot)
        self._show_sort()
        self.table.focus()

    def on_screen_resume(self) -> None:
        if self.console.snapshot is not None:
            self._status(self.console.snapshot)

    def _status(self, snapshot: Snapshot) -> None:
        if not self.is_current:
            return  # hidden under another screen: catch up on resume
        palette = self.console.palette
        if self.table.row_count and self._palette_seen is not palette:
            self.table.forget_cells()
        self._palette_seen = palette
        self.table.show(snapshot, self.console.meter, palette)
        self._show_summary(snapshot)

    _palette_seen: object = None

    def _show_summary(self, snapshot: Snapshot | None) -> None:
        summary = summary_text(snapshot, self.console.palette, self.console.source.description)
        self.query_one("#summary", SummaryBar).update(summary)

    def _show_sort(self) -> None:
        table = self.table
        label = SORTS[table.sort_key][0]
        arrow = "↓" if table.sort_reverse else "↑"
        line = f"sort: {label} {arrow} (s, S)"
        if table.filter_text:
            line += f"   filter: {table.filter_text!r} (/ to change, esc in it to clear)"
        self.query_one("#sortline", SummaryBar).update(line)

    def _redraw(self) -> None:
        self._show_sort()
        if self.console.snapshot is not None:
            self.table.show(self.console.snapshot, self.console.meter, self.console.palette)

    # -- actions ------------------------------------------------------------------------------
    def action_tunnel(self, action: str) -> None:
        self.console.tunnel_action(action, self.selected_peer)

    def action_details(self) -> None:
        peer = self.selected_peer
        if peer is not None:
            self.console.show_details(peer)

    @on(Grid.RowSelected)
    def _row_chosen(self, event: Grid.RowSelected) -> None:
        self.console.show_details(event.row_key)

    @on(Grid.HeaderSelected)
    def _header_chosen(self, event: Grid.HeaderSelected) -> None:
        self.table.sort_by(event.column_key)
        self._redraw()

    def action_cycle_sort(self) -> None:
        table = self.table
        index = SORT_CYCLE.index(table.sort_key) if table.sort_key in SORT_CYCLE else -1
        table.sort_by(SORT_CYCLE[(index + 1) % len(SORT_CYCLE)], reverse=False)
        self._redraw()

    def action_reverse_sort(self) -> None:
        self.table.sort_reverse = not self.table.sort_reverse
        self._redraw()

    def action_open_filter(self) -> None:
        box = self.query_one(FilterInput)
        box.add_class("-open")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.filter_text = event.value.strip()
        self._redraw()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(FilterInput).remove_class("-open")
        self.table.focus()

    def key_escape(self) -> None:
        box = self.query_one(FilterInput)
        if box.has_class("-open"):
            box.value = ""
            box.remove_class("-open")
            self.table.focus()


__all__ = ["COLUMNS", "DashboardScreen"]
