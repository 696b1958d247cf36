"""The live tunnel table: one row per configured peer, keyed by peer name.

Rows are never rebuilt on a refresh: each cell is compared with what it shows and only
changed cells are updated (`update_cell`), rows come and go only when peers are added to
or removed from the config (or hidden by the filter), and the order changes only when the
sort says so.  That keeps a 64-row table steady at one refresh a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from tui import format as fmt
from tui.model import GLOBAL_OFF, Snapshot, TunnelStatus
from tui.traffic import Rates, TrafficMeter
from tui.widgets.cells import (
    Palette,
    dpd_cell,
    lifetime_cell,
    nat_label,
    remote_label,
    state_cell,
    traffic_cells,
)

Cell = Text | str


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


# Most telling first, so an 80-column terminal shows name, state, lifetimes and DPD.
COLUMNS = (
    Column("name", "Name", 12),
    Column("iface", "Iface", 7),
    Column("state", "State", 12),
    Column("ike_sa", "IKE SA", 11),
    Column("child_sa", "Child SA", 11),
    Column("dpd", "DPD", 13),
    Column("in", "In (bytes pkts rate)", 20),
    Column("out", "Out (bytes pkts rate)", 21),
    Column("remote", "Remote", 21),
    Column("nat", "NAT-T", 9),
    Column("ike", "IKE", 7),
    Column("uptime", "Uptime", 7),
)
STATE_ORDER = {"error": 0, "connecting": 1, "waiting": 2, "down": 3, "up": 4, "disabled": 5,
               GLOBAL_OFF: 6}  # fmt: skip


def _left(value: float | None) -> float:
    return value if value is not None else float("inf")


# sort key name: (label, key function); None values sort last.
SORTS: dict[str, tuple[str, Callable[[TunnelStatus, Rates | None], object]]] = {
    "name": ("name", lambda t, r: t.name),
    "state": ("state", lambda t, r: (STATE_ORDER.get(t.state, 9), t.name)),
    "iface": ("interface", lambda t, r: (len(t.interface), t.interface)),
    "child_sa": ("Child SA rekey", lambda t, r: _left(
        t.newest_child.timers.next_event_in if t.newest_child else None)),
    "ike_sa": ("IKE SA rekey", lambda t, r: _left(
        t.ike_sa.timers.next_event_in if t.ike_sa else None)),
    "in": ("rate in", lambda t, r: -(r.bytes_in if r else 0.0)),
    "out": ("rate out", lambda t, r: -(r.bytes_out if r else 0.0)),
    "remote": ("remote", lambda t, r: remote_label(t)),
    "uptime": ("uptime", lambda t, r: -(t.uptime or -1.0)),
}  # fmt: skip


def matches(tunnel: TunnelStatus, needle: str) -> bool:
    """The filter: every word must appear in the name, interface, state or remote."""
    haystack = f"{tunnel.name} {tunnel.interface} {tunnel.state} {remote_label(tunnel)}".lower()
    return all(word in haystack for word in needle.lower().split())


def row_cells(tunnel: TunnelStatus, rates: Rates | None, palette: Palette) -> dict[str, Cell]:
    traffic_in, traffic_out = traffic_cells(tunnel, rates)
    child = tunnel.newest_child
    return {
        "name": Text(tunnel.name, no_wrap=True),
        "iface": tunnel.interface,
        "state": state_cell(tunnel, palette),
        "ike_sa": lifetime_cell(tunnel.ike_sa.timers if tunnel.ike_sa else None, palette),
        "child_sa": lifetime_cell(child.timers if child else None, palette),
        "dpd": dpd_cell(tunnel.dpd, palette),
        "in": traffic_in,
        "out": traffic_out,
        "remote": remote_label(tunnel),
        "nat": nat_label(tunnel.nat),
        "ike": tunnel.ike_label,
        "uptime": fmt.duration(tunnel.uptime),
    }


def _signature(cell: Cell) -> object:
    if isinstance(cell, Text):
        return (cell.plain, str(cell.style), tuple(cell.spans))
    return cell


class TunnelTable(DataTable[Cell]):
    DEFAULT_CSS = """
    TunnelTable {
        height: 1fr;
        background: $surface;
    }
    TunnelTable > .datatable--header {
        text-style: bold;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.fixed_columns = 1
        self._shown: dict[tuple[str, str], object] = {}
        self._order: list[str] = []
        self.sort_key = "name"
        self.sort_reverse = False
        self.filter_text = ""
        self.updates = 0  # cells updated in place since mount (the benchmark reads it)

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column.label, width=column.width, key=column.key)

    @property
    def selected_peer(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:  # the cursor is outside the rows (the table was just emptied)
            return None
        return str(row_key.value) if row_key.value is not None else None

    def show(self, snapshot: Snapshot, meter: TrafficMeter, palette: Palette) -> None:
        """Bring the table to `snapshot`: add, remove and update rows, then sort."""
        selected = self.selected_peer
        visible = [t for t in snapshot.tunnels if matches(t, self.filter_text)]
        names = {tunnel.name for tunnel in visible}
        for name in [name for name in self._order if name not in names]:
            self.remove_row(name)
            self._order.remove(name)
            for column in COLUMNS:
                self._shown.pop((name, column.key), None)
        for tunnel in visible:
            cells = row_cells(tunnel, meter.rates(tunnel.name), palette)
            if tunnel.name not in self._order:
                self.add_row(*(cells[c.key] for c in COLUMNS), key=tunnel.name)
                self._order.append(tunnel.name)
                for key, cell in cells.items():
                    self._shown[(tunnel.name, key)] = _signature(cell)
                continue
            self._update_row(tunnel.name, cells)
        self._sort(visible, meter, selected)

    def _update_row(self, name: str, cells: dict[str, Cell]) -> None:
        for key, cell in cells.items():
            signature = _signature(cell)
            if self._shown.get((name, key)) != signature:
                self._shown[(name, key)] = signature
                self.update_cell(name, key, cell)
                self.updates += 1

    def _sort(self, visible: list[TunnelStatus], meter: TrafficMeter, selected: str | None) -> None:
        _, key_of = SORTS.get(self.sort_key, SORTS["name"])
        wanted = sorted(
            visible,
            key=lambda t: (key_of(t, meter.rates(t.name)), t.name),
            reverse=self.sort_reverse,
        )
        order = [tunnel.name for tunnel in wanted]
        current = [str(row.key.value) for row in self.ordered_rows]
        if order == current:
            return
        rank = {name: index for index, name in enumerate(order)}
        self.sort(
            "name",
            key=lambda cell: rank.get(cell.plain if isinstance(cell, Text) else str(cell), 0),
        )
        if selected is not None and selected in rank:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def forget_cells(self) -> None:
        """Make the next `show` repaint every cell (after a theme change)."""
        self._shown.clear()

    def sort_by(self, key: str, *, reverse: bool | None = None) -> None:
        if key in SORTS:
            if reverse is None:
                reverse = not self.sort_reverse if key == self.sort_key else False
            self.sort_key, self.sort_reverse = key, reverse

    @staticmethod
    def column_key(column: ColumnKey) -> str:
        return str(column.value)

    @staticmethod
    def row_name(row: RowKey) -> str:
        return str(row.value)
