"""Detail, event log and help screens against the fake core."""

from __future__ import annotations

from textual.widgets import Markdown, RichLog, Sparkline

from tests.tui.helpers import AppFactory, settle, shown
from tui.fake import FakeSource
from tui.screens.dashboard import DashboardScreen
from tui.screens.detail import DetailScreen
from tui.screens.events import EventLogScreen
from tui.screens.help import HelpScreen, binding_sections, help_markdown
from tui.widgets.keyed_table import KeyedTable
from tui.widgets.tunnel_table import TunnelTable


def _log_lines(log: RichLog) -> list[str]:
    return [strip.text for strip in log.lines]


async def test_enter_opens_the_detail_of_the_selected_tunnel(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TunnelTable)
        table.move_cursor(row=table.get_row_index("branch-nat"))
        fake.emit("DpdProbeSent", peer="branch-nat", attempt=1, of=5)
        fake.emit("DpdAnswered", peer="branch-nat")
        fake.emit("Log", level="info", peer="hq", message="not about branch-nat")
        await pilot.pause(0.1)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DetailScreen) and screen.peer == "branch-nat"
        overview = shown(screen.query_one("#overview"))
        assert "198.51.100.1:4500 ⇄ 192.0.2.77:31874" in overview
        assert "NAT(peer)" in overview and "10.100.1.0/24" in overview
        ike = shown(screen.query_one("#ike"))
        assert "i 1000000000001111" in ike and "AES_GCM_16_256/PRF_HMAC_SHA2_256" in ike
        children = screen.query_one("#children", KeyedTable)
        assert children.row_count == 1
        row = [str(cell) for cell in children.get_row_at(0)]
        assert row[1:5] == ["c0000101", "d0000202", "tunnel", "UDP 4500⇄31874"]
        dpd = shown(screen.query_one("#dpd"))
        assert "DPD probe 1/5 sent" in dpd and "DPD answered" in dpd
        log = _log_lines(screen.query_one("#log", RichLog))
        assert any("DPD probe 1/5 sent" in line for line in log)
        assert not any("not about branch-nat" in line for line in log)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_detail_follows_the_tunnel_live(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        app.show_details("hq")
        await settle(pilot)
        for _ in range(3):
            fake.advance(1.0)
            await settle(pilot)
        screen = app.screen
        spark = screen.query_one("#spark-in", Sparkline)
        assert spark.data is not None and len(spark.data) >= 3 and max(spark.data) > 0
        assert "1.5kB/s" in shown(screen.query_one("#rate-in"))
        fake.emit("IkeSaDown", peer="hq", spi_i="1", spi_r="2", reason="peer dead (DPD)")
        await pilot.press("d", "y")
        await settle(pilot)
        assert "▼ down" in shown(screen.query_one("#title"))
        assert "no IKE SA" in shown(screen.query_one("#ike"))
        assert screen.query_one("#children", KeyedTable).row_count == 0
        log = _log_lines(screen.query_one("#log", RichLog))
        assert any("warning IKE SA down: peer dead (DPD)" in line for line in log)


async def test_detail_of_a_failing_peer_shows_its_last_error(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        app.show_details("cloud")
        await settle(pilot)
        overview = shown(app.screen.query_one("#overview"))
        assert "cannot resolve vpn.cloud.example" in overview


async def test_event_log_filters_by_level_and_text(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        fake.emit("Log", level="debug", peer="hq", message="retransmit 1")
        fake.emit("Log", level="info", peer="hq", message="IKE_AUTH done")
        fake.emit("PeerDead", peer="lab", silence=30.0)
        fake.emit("ExchangeFailed", peer="cloud", exchange="IKE_SA_INIT", message="timeout")
        await pilot.pause(0.1)
        await pilot.press("l")
        screen = app.screen
        assert isinstance(screen, EventLogScreen)
        log = screen.query_one(RichLog)
        assert screen.shown == 3  # info and above
        await pilot.press("1")
        assert screen.shown == 4
        assert any("retransmit 1" in line for line in _log_lines(log))
        await pilot.press("4")
        assert screen.shown == 1
        assert any("peer dead (DPD): silent for 30.0 s" in line for line in _log_lines(log))
        await pilot.press("2", "slash", *"cloud")
        assert screen.shown == 1
        assert any("IKE_SA_INIT failed: timeout" in line for line in _log_lines(log))
        fake.emit("Log", level="warning", peer="cloud", message="live line")
        await pilot.pause(0.1)
        assert screen.shown == 2 and "live line" in _log_lines(log)[-1]
        await pilot.press("enter", "escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_help_lists_every_binding_of_every_screen(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = help_markdown()
        for _title, bindings in binding_sections():
            for binding in bindings:
                assert (binding.description or binding.action) in text
        for words in ("Rekey IKE", "Reverse sort", "Next problem", "Command palette", "Errors"):
            assert words in text
        assert app.screen.query_one(Markdown)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
