"""The live tunnel table: one row per configured peer, keyed by peer name.

Rows are never rebuilt on a refresh: each cell is compared with what it shows and only
changed cells are rendered again (see grid.py), rows come and go only when peers are added
to or removed from the config (or hidden by the filter), and the order changes only when
the sort says so.  That keeps a 64-row table steady at one refresh a second.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

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
from tui.widgets.grid import Cell, Column, Grid

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


class TunnelTable(Grid):
    """The dashboard's table: rows keyed by peer name, filtered and sorted."""

    DEFAULT_CSS = """
    TunnelTable {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, id=id)
        self.sort_key = "name"
        self.sort_reverse = False
        self.filter_text = ""

    @property
    def selected_peer(self) -> str | None:
        return self.cursor_key

    def show(self, snapshot: Snapshot, meter: TrafficMeter, palette: Palette) -> None:
        """Bring the table to `snapshot`: add, remove and update rows, then sort."""
        visible = [t for t in snapshot.tunnels if matches(t, self.filter_text)]
        names = {tunnel.name for tunnel in visible}
        for name in [name for name in self.row_keys if name not in names]:
            self.remove_row(name)
        _, key_of = SORTS.get(self.sort_key, SORTS["name"])
        wanted = sorted(
            visible,
            key=lambda t: (key_of(t, meter.rates(t.name)), t.name),
            reverse=self.sort_reverse,
        )
        for tunnel in wanted:  # new rows arrive in sorted order
            self.set_row(tunnel.name, row_cells(tunnel, meter.rates(tunnel.name), palette))
        self.reorder([tunnel.name for tunnel in wanted])

    def forget_cells(self) -> None:
        """Make the next `show` repaint every cell (after a theme change)."""
        self.forget_rendering()

    def sort_by(self, key: str, *, reverse: bool | None = None) -> None:
        if key in SORTS:
            if reverse is None:
                reverse = not self.sort_reverse if key == self.sort_key else False
            self.sort_key, self.sort_reverse = key, reverse
