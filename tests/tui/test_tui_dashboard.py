"""The dashboard against the fake core: rows, live updates in place, sort, filter, summary."""

from __future__ import annotations

from tests.tui.helpers import AppFactory, cell_style, cell_text, settle
from tui.fake import FakeSource
from tui.screens.dashboard import DashboardScreen
from tui.widgets.tunnel_table import TunnelTable


def _table(app: object) -> TunnelTable:
    return app.screen.query_one(TunnelTable)  # type: ignore[attr-defined,no-any-return]


async def test_one_row_per_configured_peer_with_state_in_words_and_symbol(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        assert table.row_count == 8
        states = {name: cell_text(table, name, "state") for name in fake.config.peer_names}
        assert states == {
            "hq": "▲ up",
            "branch-nat": "▲ up",
            "shop-passive": "◇ waiting",
            "dc-forced": "▲ up",
            "lab": "◐ connecting",
            "retired": "⊘ disabled",
            "partner": "▲ up",
            "cloud": "✖ error",
        }
        assert cell_text(table, "partner", "ike") == "v1 main"
        assert cell_text(table, "branch-nat", "remote") == "192.0.2.77:31874"
        assert cell_text(table, "branch-nat", "nat") == "NAT(peer)"
        assert cell_text(table, "dc-forced", "nat") == "forced"
        assert cell_text(table, "dc-forced", "dpd") == "? probing 2/5"
        assert cell_text(table, "hq", "dpd").startswith("✔ ok")
        assert cell_text(table, "lab", "ike_sa") == "-"
        summary = str(app.screen.query_one("#summary").render())
        assert "▲ 4 up" in summary and "▼ 4 down" in summary and "8/64 peers" in summary


async def test_rows_are_updated_in_place_every_poll(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        before_keys = table.row_keys
        before_uptime = cell_text(table, "hq", "uptime")
        before_in = cell_text(table, "hq", "in")
        fake.advance(125.0)
        await settle(pilot)
        assert table.row_keys == before_keys
        assert cell_text(table, "hq", "uptime") != before_uptime
        assert cell_text(table, "hq", "in") != before_in
        assert "B/s" in cell_text(table, "hq", "in")
        assert table.updates > 0
        updates = table.updates
        await settle(pilot)  # nothing changed on the fake clock: no cell is touched
        assert table.updates == updates


async def test_lifetime_bar_changes_colour_as_rekey_nears(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        palette = app.palette
        assert cell_style(table, "hq", "child_sa") == palette.success
        # hq's Child SA rekeys at 0.9 * 3600 s after it was made; walk up to that point.
        fake.advance(float(fake._cmd_status()["peers"][0]["child_sas"][0]["rekey_in"]) - 600)
        await settle(pilot)
        assert cell_style(table, "hq", "child_sa") == palette.warning
        fake.advance(570)
        await settle(pilot)
        assert cell_style(table, "hq", "child_sa") == palette.error
        assert cell_text(table, "hq", "child_sa").endswith(" 30s")


async def test_sort_cycles_reverses_and_follows_header_clicks(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)

        def order() -> list[str]:
            return table.row_keys

        assert order() == sorted(order())
        await pilot.press("s")  # by state: problems first
        assert order()[0] == "cloud" and table.sort_key == "state"
        assert order()[-1] == "retired"
        await pilot.press("S")
        assert order()[0] == "retired"
        table.sort_by("name", reverse=True)
        assert isinstance(app.screen, DashboardScreen)
        app.screen._redraw()
        assert order() == sorted(order(), reverse=True)
        await pilot.click(TunnelTable, offset=(30, 0))  # the "State" header
        assert table.sort_key == "state"


async def test_cursor_stays_on_its_tunnel_when_the_order_changes(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        table.move_cursor(row=table.get_row_index("partner"))
        await pilot.press("s")
        assert table.selected_peer == "partner"


async def test_filter_hides_rows_and_escape_brings_them_back(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        await pilot.press("slash", *"nat")
        assert table.row_keys == ["branch-nat"]
        await pilot.press("enter")
        await settle(pilot)
        assert table.row_count == 1
        assert "filter: 'nat'" in str(app.screen.query_one("#sortline").render())
        await pilot.press("slash", "escape")
        assert table.row_count == 8


async def test_filter_matches_states(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"up")
        assert sorted(_table(app).row_keys) == [
            "branch-nat", "dc-forced", "hq", "partner",
        ]  # fmt: skip


async def test_rows_follow_peers_added_and_removed_by_a_reload(
    make_app: AppFactory, fake: FakeSource
) -> None:
    from core.config import remove_peer

    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await fake.config_apply(remove_peer(fake.text, "lab"))
        await settle(pilot)
        table = _table(app)
        assert table.row_count == 7
        assert "lab" not in table.row_keys


async def test_global_off_is_said_in_every_row_and_the_summary(make_app: AppFactory) -> None:
    app = make_app(FakeSource(3, enabled=False))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        assert {cell_text(table, key, "state") for key in table.row_keys} == {"⊘ global off"}
        assert "route-based IPsec is OFF" in str(app.screen.query_one("#summary").render())


async def test_64_tunnels_fit_and_scroll(make_app: AppFactory) -> None:
    app = make_app(FakeSource(64, all_up=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = _table(app)
        assert table.row_count == 64
        assert "▲ 64 up" in str(app.screen.query_one("#summary").render())
        await pilot.press("ctrl+end")
        assert table.cursor_row == 63
        assert table.selected_peer == "site63"


async def test_the_name_column_stays_when_scrolled_right(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = _table(app)
        assert table.max_scroll_x > 0
        for _ in range(40):
            await pilot.press("right")
        await pilot.pause()
        assert table.scroll_offset.x > 0
        first_row = table.render_line(1).text
        assert first_row.startswith(" branch-nat") and "ipsec1" not in first_row
        assert table.render_line(0).text.startswith(" Name")
