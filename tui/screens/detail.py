"""One tunnel in full: the interface, the IKE SA, every Child SA, traffic, DPD and events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Sparkline, Static

from tui import format as fmt
from tui.eventlog import DPD_TYPES, EventRecord
from tui.model import ChildSaStatus, FloatLinkStatus, IkeSaStatus, Snapshot, TunnelStatus
from tui.traffic import HISTORY
from tui.widgets.cells import Palette, dpd_cell, lifetime_cell, nat_label, state_cell
from tui.widgets.keyed_table import Cell, KeyedTable
from tui.widgets.status_bars import LinkBanner

if TYPE_CHECKING:
    from tui.app import ConsoleApp

CHILD_COLUMNS = (
    ("state", "State"), ("spi_in", "SPI in"), ("spi_out", "SPI out"), ("mode", "Mode"),
    ("encap", "Ports"), ("algorithms", "Algorithms"), ("ts", "Traffic selectors"),
    ("rekey", "Rekey in"), ("expire", "Expires in"), ("in", "In"), ("out", "Out"),
)  # fmt: skip
LEVEL_ROLES = {"debug": "muted", "info": "plain", "warning": "warning", "error": "error"}
DPD_HISTORY = 8


def _fields(rows: list[tuple[str, Text | str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table


def overview(tunnel: TunnelStatus, palette: Palette) -> Table:
    local = str(tunnel.local) if tunnel.local else "-"
    remote = str(tunnel.remote) if tunnel.remote else "-"
    address = tunnel.address or f"unnumbered (source {tunnel.borrowed_source or '-'})"
    link = Text("up", style=palette.success) if tunnel.link_up else Text("down", palette.muted)
    rows: list[tuple[str, Text | str]] = [
        ("State", state_cell(tunnel, palette)),
        ("Interface", Text.assemble(f"{tunnel.interface}  {address}  link ", link)),
        ("IKE", f"IKEv{tunnel.ike_version}"
            + (f" {tunnel.exchange_mode} mode" if tunnel.ike_version == 1 else "")
            + f", {tunnel.mode} mode"
         + (", passive" if tunnel.passive else "")),
        ("Outer", f"{local} ⇄ {remote}"),
        ("NAT-T", f"{nat_label(tunnel.nat)} (configured: {tunnel.nat.configured})"),
        ("Routes", ", ".join(tunnel.routes) or "-"),
        ("Uptime", fmt.duration(tunnel.uptime)),
    ]  # fmt: skip
    if tunnel.float_link is not None:
        rows.extend(float_link_rows(tunnel.float_link, palette))
    if tunnel.traffic.dropped_while_down:
        rows.append(("Dropped while down", f"{tunnel.traffic.dropped_while_down} packets"))
    if tunnel.last_error:
        error = Text(f"{tunnel.last_error} ({tunnel.last_error_at or '?'})", style=palette.error)
        rows.append(("Last error", error))
    return _fields(rows)


def float_link_rows(link: FloatLinkStatus, palette: Palette) -> list[tuple[str, Text | str]]:
    """Our published name, the peer's looked-up one and its registration (docs/floatlink.md)."""
    published = Text(f"{link.name} = {link.published_address or '-'}  ")
    stamp = link.stamp_state
    if link.published_state != "published":
        published.append(link.published_state, palette.muted)
    elif stamp is not None and stamp != "stamped":
        published.append(stamp, palette.warning)
    else:
        published.append("published, stamped" if stamp else "published", palette.success)
    peer = Text(f"{link.peer_name} = {link.resolved_address or '-'}  ")
    if link.expired:
        peer.append(link.resolved_state, palette.error)
    elif link.resolved_state != "resolved":
        peer.append(link.resolved_state, palette.muted)
    elif link.registration_state == "current":
        expires = fmt.duration(link.registration_expires_in)
        peer.append(f"registration current, expires in {expires}", palette.success)
    elif link.registration_state == "no stamp":
        peer.append("resolved, no expiry info (the peer publishes no stamp)", palette.muted)
    else:
        peer.append(link.resolved_state, palette.success)
    rows: list[tuple[str, Text | str]] = [("Float link", published), ("Peer name", peer)]
    if link.expired and link.registration_note:
        rows.append(("Registration", Text(link.registration_note, style=palette.error)))
    if link.error:
        rows.append(("DNS error", Text(link.error, style=palette.warning)))
    return rows


def ike_fields(sa: IkeSaStatus | None, palette: Palette) -> Table | Text:
    if sa is None:
        return Text("no IKE SA", style=palette.muted)
    timers = sa.timers
    return _fields([
        ("State", f"{sa.state} ({'initiator' if sa.initiator else 'responder'})"),
        ("SPIs", f"i {sa.spi_i}  r {sa.spi_r}"),
        ("Algorithms", sa.algorithms),
        ("Peer ID", sa.peer_id or "-"),
        ("Established", f"{timers.established_at or '-'} ({fmt.ago(timers.established_ago)})"),
        ("Rekey in", lifetime_cell(timers, palette, width=20)),
        ("Expires in", f"{fmt.duration(timers.expire_in)} ({timers.expire_at or '-'})"),
    ])  # fmt: skip


def child_cells(child: ChildSaStatus, tunnel: TunnelStatus, palette: Palette) -> list[Cell]:
    ports = "-"
    if child.encap and tunnel.local and tunnel.remote:
        ports = f"UDP {tunnel.local.port}⇄{tunnel.remote.port}"
    elif not child.encap:
        ports = "ESP"
    state = child.state + ("" if child.outbound else " (in only)")
    selectors = f"{','.join(child.local_ts) or '-'} ⇄ {','.join(child.remote_ts) or '-'}"
    return [
        state, child.spi_in, child.spi_out, child.mode, ports, child.algorithms, selectors,
        lifetime_cell(child.timers, palette), fmt.duration(child.timers.expire_in),
        f"{fmt.size(child.bytes_in)} {fmt.si(child.packets_in)}p",
        f"{fmt.size(child.bytes_out)} {fmt.si(child.packets_out)}p",
    ]  # fmt: skip


def dpd_fields(tunnel: TunnelStatus, history: list[EventRecord], palette: Palette) -> Table:
    dpd = tunnel.dpd
    rows: list[tuple[str, Text | str]] = [
        ("State", dpd_cell(dpd, palette)),
        ("Settings", f"probe after {dpd.interval} s idle, {dpd.retries} retries"
         if dpd.interval else "disabled"),
        ("Last heard", fmt.ago(dpd.last_heard_ago)),
        ("Probes out", str(dpd.probes_outstanding)),
    ]  # fmt: skip
    if dpd.dead_at:
        rows.append(("Declared dead", Text(dpd.dead_at, style=palette.error)))
    for record in history[-DPD_HISTORY:]:
        rows.append((record.clock, record.text))
    return _fields(rows)


def _timeline(samples: list[float]) -> list[float]:
    """A fixed two-minute window, newest on the right, so the x axis does not stretch."""
    return [0.0] * (HISTORY - len(samples)) + samples


class Section(Static):
    DEFAULT_CSS = """
    Section {
        height: auto;
        padding: 0 1;
        margin-bottom: 1;
        border: round $primary 50%;
        border-title-color: $text;
    }
    """


class DetailScreen(Screen[None]):
    DEFAULT_CSS = """
    DetailScreen #title {
        height: 1;
        padding: 0 1;
        background: $panel;
        text-style: bold;
    }
    DetailScreen #children {
        border: round $primary 50%;
        margin-bottom: 1;
    }
    DetailScreen #traffic {
        height: auto;
        border: round $primary 50%;
        padding: 0 1;
        margin-bottom: 1;
    }
    DetailScreen #traffic Horizontal {
        height: 3;
    }
    DetailScreen #traffic .label {
        width: 22;
    }
    DetailScreen #traffic Sparkline {
        width: 1fr;
        height: 3;
    }
    DetailScreen #log {
        height: 12;
        border: round $primary 50%;
    }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("u", "tunnel('up')", "Up"),
        Binding("d", "tunnel('down')", "Down"),
        Binding("r", "tunnel('rekey')", "Rekey"),
        Binding("k", "tunnel('rekey-ike')", "Rekey IKE", show=False),
        Binding("x", "tunnel('reset')", "Reset"),
        Binding("l", "app.events", "Log"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer
        self._logged = 0

    @property
    def console(self) -> ConsoleApp:
        return self.app  # type: ignore[return-value]

    @property
    def selected_peer(self) -> str:
        return self.peer

    def compose(self) -> ComposeResult:
        yield LinkBanner()
        yield Static(id="title")
        with VerticalScroll():
            yield Section(id="overview")
            yield Section(id="ike")
            yield KeyedTable(CHILD_COLUMNS, id="children")
            with Vertical(id="traffic"):
                with Horizontal():
                    yield Static("in", id="rate-in", classes="label")
                    yield Sparkline([], id="spark-in")
                with Horizontal():
                    yield Static("out", id="rate-out", classes="label")
                    yield Sparkline([], id="spark-out")
            yield Section(id="dpd")
            yield RichLog(id="log", wrap=True, markup=False, max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        for widget_id, title in (("overview", "Tunnel"), ("ike", "IKE SA"),
                                 ("children", "Child SAs"), ("traffic", "Traffic"),
                                 ("dpd", "Dead peer detection"), ("log", "Events")):  # fmt: skip
            self.query_one(f"#{widget_id}").border_title = title
        self.console.status_signal.subscribe(self, self._status)
        self.console.event_signal.subscribe(self, self._event)
        for record in self.console.events.for_peer(self.peer):
            self._event(record)
        if self.console.snapshot is not None:
            self._status(self.console.snapshot)

    def action_tunnel(self, action: str) -> None:
        self.console.tunnel_action(action, self.peer)

    def _status(self, snapshot: Snapshot) -> None:
        tunnel = snapshot.tunnel(self.peer)
        palette = self.console.palette
        title = self.query_one("#title", Static)
        if tunnel is None:
            title.update(f"{self.peer}: no longer configured")
            return
        title.update(Text.assemble(f"{tunnel.name}  {tunnel.interface}  ",
                                   state_cell(tunnel, palette)))  # fmt: skip
        self.query_one("#overview", Section).update(overview(tunnel, palette))
        self.query_one("#ike", Section).update(ike_fields(tunnel.ike_sa, palette))
        children = self.query_one("#children", KeyedTable)
        children.sync({
            child.spi_in: child_cells(child, tunnel, palette) for child in tunnel.child_sas
        })  # fmt: skip
        history_in, history_out = self.console.meter.history(self.peer)
        rates = self.console.meter.rates(self.peer)
        self.query_one("#spark-in", Sparkline).data = _timeline(history_in)
        self.query_one("#spark-out", Sparkline).data = _timeline(history_out)
        self.query_one("#rate-in", Static).update(
            f"in  {fmt.rate(rates.bytes_in if rates else None)}\n"
            f"    {fmt.size(tunnel.traffic.bytes_in)} {fmt.si(tunnel.traffic.packets_in)}p"
        )
        self.query_one("#rate-out", Static).update(
            f"out {fmt.rate(rates.bytes_out if rates else None)}\n"
            f"    {fmt.size(tunnel.traffic.bytes_out)} {fmt.si(tunnel.traffic.packets_out)}p"
        )
        history = [r for r in self.console.events.for_peer(self.peer) if r.type in DPD_TYPES]
        self.query_one("#dpd", Section).update(dpd_fields(tunnel, history, palette))

    def _event(self, record: EventRecord) -> None:
        if record.peer != self.peer:
            return
        palette = self.console.palette
        line = Text.assemble(
            (f"{record.clock} ", palette.muted),
            (f"{record.level:<7} ", palette.role(LEVEL_ROLES.get(record.level, "plain"))),
            record.text,
        )
        self.query_one("#log", RichLog).write(line)
        self._logged += 1
