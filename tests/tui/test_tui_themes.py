"""Themes from themes/*.toml: registered, switchable at runtime, remembered across runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tui.helpers import AppFactory, cell_style, settle
from tui.fake import FakeSource
from tui.themes import load_themes, read_state, state_file, theme_dirs, theme_from_toml
from tui.widgets.tunnel_table import TunnelTable

REPO_THEMES = Path(__file__).resolve().parents[2] / "themes"
SHIPPED = {"rbipsec-dark", "rbipsec-light", "rbipsec-high-contrast"}


def test_the_shipped_theme_files_load() -> None:
    themes, problems = load_themes([REPO_THEMES])
    assert problems == []
    assert {theme.name for theme in themes} == SHIPPED
    light = next(theme for theme in themes if theme.name == "rbipsec-light")
    assert light.dark is False and light.success == "#1a7f37"
    assert REPO_THEMES in theme_dirs()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = ", "not TOML"),
        ('primary = "#ffffff"', '"name" and "primary"'),
        ('name = "x"\nprimary = "#fff"\n[variables]\nborder = 3', "[variables]"),
    ],
)
def test_a_broken_theme_file_is_named_not_fatal(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        theme_from_toml(text)
    (tmp_path / "broken.toml").write_text(text)
    (tmp_path / "good.toml").write_text('name = "good"\nprimary = "#123456"\n')
    themes, problems = load_themes([tmp_path])
    assert [theme.name for theme in themes] == ["good"]
    assert len(problems) == 1 and "broken.toml" in problems[0]


def test_the_state_file_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_file() == tmp_path / "rbipsec" / "console.json"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_file() == tmp_path / ".local" / "state" / "rbipsec" / "console.json"


async def test_themes_switch_at_runtime_recolour_and_are_remembered(
    make_app: AppFactory, tmp_path: Path
) -> None:
    state = tmp_path / "console.json"
    app = make_app(FakeSource(8), state_path=state)
    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        assert app.theme == "rbipsec-dark"
        assert set(app.available_themes) >= SHIPPED
        table = app.screen.query_one(TunnelTable)
        dark_up = cell_style(table, "hq", "state")
        await pilot.press("t")
        await settle(pilot)
        assert app.theme == "rbipsec-high-contrast"
        assert cell_style(table, "hq", "state") != dark_up
        assert str(cell_style(table, "hq", "state")) == "#00ff00"
        app.theme = "rbipsec-light"
        await settle(pilot)
        assert str(cell_style(table, "hq", "state")) == "#1a7f37"
    assert json.loads(state.read_text())["theme"] == "rbipsec-light"
    again = make_app(FakeSource(8), state_path=state)
    async with again.run_test(size=(140, 30)) as pilot:
        await settle(pilot)
        assert again.theme == "rbipsec-light"


async def test_an_unknown_remembered_theme_falls_back(make_app: AppFactory, tmp_path: Path) -> None:
    state = tmp_path / "console.json"
    state.write_text('{"theme": "gone"}')
    app = make_app(state_path=state)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.theme == "rbipsec-dark"
    assert read_state(state)["theme"] == "gone"  # untouched until the operator picks one
