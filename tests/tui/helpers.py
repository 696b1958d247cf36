"""Small helpers shared by the console tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from tui.app import ConsoleApp

AppFactory = Callable[..., ConsoleApp]


async def settle(pilot: Pilot[int], polls: int = 1) -> None:
    """Waits until the app has taken `polls` more status snapshots and drawn them."""
    app = pilot.app
    assert isinstance(app, ConsoleApp)
    target = app.polls + polls
    for _ in range(200):
        if app.polls >= target:
            break
        app.refresh_now()
        await pilot.pause(0.02)
    await pilot.pause()
    assert app.polls >= target, "the console took no status snapshot"


class HasCells(Protocol):
    def get_cell(self, row: str, column: str) -> Any: ...


def cell_text(table: HasCells, row: str, column: str) -> str:
    value = table.get_cell(row, column)
    return value.plain if isinstance(value, Text) else str(value)


def cell_style(table: HasCells, row: str, column: str) -> Style | str:
    """The colour of a cell: its first span's style, else the style of the whole text."""
    value = table.get_cell(row, column)
    assert isinstance(value, Text), f"{row}/{column} is not styled text"
    return value.spans[0].style if value.spans else value.style


def notifications(app: ConsoleApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def shown(widget: Widget) -> str:
    """What a widget shows on screen, as plain text lines."""
    region = Region(0, 0, widget.outer_size.width, widget.outer_size.height)
    return "\n".join(strip.text for strip in widget.render_lines(region))
