"""Screenshots compared with the accepted ones in __snapshots__/ (pytest-textual-snapshot).

Deterministic: the fake core's clock moves only when told, so times, countdown bars and
rates are the same on every run.  Update after a deliberate change with
`pytest tests/tui/test_tui_snapshots.py --snapshot-update` and look at the pictures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.helpers import settle
from tui.app import ConsoleApp
from tui.fake import FakeSource
from tui.screens.editor import EditorScreen

Compare = Callable[..., bool]


def _app(tmp_path: Path, source: FakeSource | None = None) -> ConsoleApp:
    return ConsoleApp(source or FakeSource(8), state_path=tmp_path / "console.json")


async def _two_polls(pilot: Pilot[Any]) -> None:
    """The first snapshot, then one second later a second one, so rates show."""
    app = pilot.app
    assert isinstance(app, ConsoleApp)
    await settle(pilot)
    source = app.source
    assert isinstance(source, FakeSource)
    source.advance(1.0)
    await settle(pilot)


@pytest.mark.parametrize("theme", ["rbipsec-dark", "rbipsec-light", "rbipsec-high-contrast"])
def test_dashboard_in_each_theme(snap_compare: Compare, tmp_path: Path, theme: str) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.theme = theme
        await _two_polls(pilot)

    assert snap_compare(_app(tmp_path), terminal_size=(150, 16), run_before=run_before)


def test_dashboard_at_80x24(snap_compare: Compare, tmp_path: Path) -> None:
    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=_two_polls)


def test_detail(snap_compare: Compare, tmp_path: Path) -> None:
    source = FakeSource(8)

    async def run_before(pilot: Pilot[Any]) -> None:
        await _two_polls(pilot)
        source.emit("DpdProbeSent", peer="dc-forced", attempt=1, of=5)
        source.emit("DpdProbeSent", peer="dc-forced", attempt=2, of=5)
        source.emit("Log", level="warning", peer="dc-forced", message="no answer to DPD")
        for _ in range(4):
            source.advance(1.0)
            await settle(pilot)
        app = pilot.app
        assert isinstance(app, ConsoleApp)
        app.show_details("dc-forced")
        await settle(pilot)

    assert snap_compare(_app(tmp_path, source), terminal_size=(110, 60), run_before=run_before)


def test_editor_with_problems(snap_compare: Compare, tmp_path: Path) -> None:
    source = FakeSource(3)

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("e")
        screen = pilot.app.screen
        assert isinstance(screen, EditorScreen)
        for _ in range(100):
            await pilot.pause(0.02)
            if screen.validated_text == screen.area.text:
                break
        broken = source.text.replace('"ipsec1"', '"ipsec0"')
        broken = broken.replace('address = "10.0.0.1/30"', 'address = "10.0.0.1/33"')
        screen.area.replace(broken, (0, 0), screen.area.document.end)
        for _ in range(100):
            await pilot.pause(0.05)
            if screen.validated_text == broken:
                break
        await pilot.press("f8")
        await pilot.pause(0.2)

    assert snap_compare(_app(tmp_path, source), terminal_size=(100, 30), run_before=run_before)
