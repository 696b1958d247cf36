"""Actions on a tunnel: keys, confirmation of disruptive ones, palette, notifications."""

from __future__ import annotations

from textual.command import CommandPalette

from tests.tui.helpers import AppFactory, cell_text, notifications, settle
from tui.app import ConsoleApp
from tui.fake import FakeSource
from tui.screens.confirm import ConfirmScreen
from tui.screens.dashboard import DashboardScreen
from tui.widgets.tunnel_table import TunnelTable


async def _select(app: ConsoleApp, peer: str) -> TunnelTable:
    table = app.screen.query_one(TunnelTable)
    table.move_cursor(row=table.get_row_index(peer))
    return table


def _commands(fake: FakeSource) -> list[tuple[str, dict[str, object]]]:
    return [(cmd, args) for cmd, args in fake.requests if cmd not in ("status",)]


async def test_up_runs_at_once_and_reports(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        table = await _select(app, "lab")
        await pilot.press("u")
        await settle(pilot)
        assert ("up", {"peer": "lab"}) in _commands(fake)
        assert cell_text(table, "lab", "state") == "▲ up"
        assert any("asked to bring up lab" in line for line in notifications(app))


async def test_down_asks_first_and_no_means_nothing_happens(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await _select(app, "hq")
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Take down hq?" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        assert isinstance(app.screen, DashboardScreen)
        await settle(pilot)
        assert ("down", {"peer": "hq"}) not in _commands(fake)
        await pilot.press("d", "y")
        await settle(pilot)
        assert ("down", {"peer": "hq"}) in _commands(fake)
        assert cell_text(app.screen.query_one(TunnelTable), "hq", "state") == "▼ down"


async def test_confirmation_buttons_work_with_the_mouse(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await _select(app, "hq")
        await pilot.press("x")
        await pilot.click("#yes")
        await settle(pilot)
        assert _commands(fake)[-2:] == [("down", {"peer": "hq"}), ("up", {"peer": "hq"})]


async def test_rekey_child_and_ike(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await _select(app, "partner")
        await pilot.press("r", "k")
        await settle(pilot)
        assert ("rekey", {"peer": "partner"}) in _commands(fake)
        assert ("rekey", {"peer": "partner", "ike": True}) in _commands(fake)


async def test_a_refused_action_is_an_error_notification(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await _select(app, "lab")  # connecting: nothing to rekey
        await pilot.press("r")
        await settle(pilot)
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "lab is not up" in errors[-1].message
        assert "could not rekey" in (errors[-1].title or "")


async def test_command_palette_offers_every_action_per_tunnel(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Reset: shop")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert ("down", {"peer": "shop-passive"}) in _commands(fake)


async def test_palette_opens_details_of_a_tunnel(make_app: AppFactory, fake: FakeSource) -> None:
    from tui.screens.detail import DetailScreen

    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p", *"Details: cloud")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen) and app.screen.peer == "cloud"


async def test_lost_core_is_shown_retried_and_recovered(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        banner = app.screen.query_one("LinkBanner")
        assert not banner.has_class("-lost")
        fake.fail("connection refused")
        app.refresh_now()
        for _ in range(100):
            await pilot.pause(0.02)
            if banner.has_class("-lost"):
                break
        text = str(banner.render())
        assert "No connection to the fake core" in text and "connection refused" in text
        assert "retrying in" in text and "last known state" in text
        assert app.screen.query_one(TunnelTable).row_count == 8  # the last state stays
        await pilot.press("u")  # an action while lost: an error, not a crash
        await pilot.pause(0.1)
        assert any(n.severity == "error" for n in app._notifications)
        fake.recover()
        await settle(pilot)
        assert not banner.has_class("-lost")
        assert any("connection restored" in line for line in notifications(app))


async def test_the_core_missing_from_the_start_is_said_plainly(make_app: AppFactory) -> None:
    fake = FakeSource(2)
    fake.fail("the socket does not exist")
    app = make_app(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if app.link.attempts:
                break
        assert "the socket does not exist" in str(app.screen.query_one("LinkBanner").render())
        assert app.screen.query_one(TunnelTable).row_count == 0
