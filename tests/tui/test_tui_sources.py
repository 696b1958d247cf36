"""The real sources without root: the daemon service embedded with route-based IPsec off
(it touches nothing), its control socket, and the console attached to that socket."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from core.config import load
from core.daemon.control.client import CommandFailed
from core.errors import UsageError
from tests.tui.helpers import AppFactory, cell_text, settle
from tui.app import build_source
from tui.connection import SocketSource, SourceUnavailable
from tui.embedded import EmbeddedSource
from tui.widgets.tunnel_table import TunnelTable

CONFIG = """\
# a console test config: route-based IPsec stays off, so nothing is touched
[global]
enabled = false
socket = "{socket}"

# the first peer
[[peer]]
name = "alpha"
interface = "ipsec1"
local_address = "198.51.100.1"
remote_address = "203.0.113.2"
psk = "console test alpha"

[[peer]]
name = "beta"
interface = "ipsec2"
local_address = "198.51.100.1"
remote_address = "dynamic"
remote_id = "fqdn:beta.example"
psk = "console test beta"
enabled = false
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(socket=tmp_path / "control.sock"))
    return path


async def test_embedded_and_attached_consoles_show_the_same(
    make_app: AppFactory, config_path: Path
) -> None:
    embedded = EmbeddedSource(load(config_path))
    app = make_app(embedded)
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(TunnelTable)
        assert table.row_count == 2
        assert cell_text(table, "alpha", "state") == "⊘ global off"
        assert cell_text(table, "beta", "state") == "⊘ disabled"
        assert embedded.socket_problem is None
        attached = SocketSource(str(config_path.parent / "control.sock"))
        snapshot = await attached.status()
        direct = await embedded.status()
        assert [t.name for t in snapshot.tunnels] == [t.name for t in direct.tunnels]
        assert snapshot.tunnels == direct.tunnels and not snapshot.enabled
        config = await attached.config_get()
        assert config.path == str(config_path) and config.text == config_path.read_text()
        assert await attached.config_validate("[global]\nenabled = 3\n") != []
        with pytest.raises(CommandFailed, match="disabled"):
            await attached.up("alpha")
        await attached.close()
    assert not (config_path.parent / "control.sock").exists()  # closed with the console


async def test_apply_through_the_embedded_core_saves_atomically_and_reloads(
    make_app: AppFactory, config_path: Path
) -> None:
    embedded = EmbeddedSource(load(config_path), serve_socket=False)
    app = make_app(embedded)
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        text = config_path.read_text().replace('"console test alpha"', '"a changed secret"')
        with pytest.raises(CommandFailed) as refused:
            await embedded.config_apply(text + "\nbogus = 1\n")
        assert refused.value.problems and "bogus" in refused.value.problems[0]
        assert "a changed secret" not in config_path.read_text()  # nothing was written
        result = await embedded.config_apply(text)
        assert isinstance(result, dict) and result["reload"]["changed"] == {"alpha": ["psk"]}
        assert config_path.read_text() == text
        assert "# the first peer" in config_path.read_text()
        await settle(pilot)
        reloads = [record for record in app.events if record.type == "ConfigReloaded"]
        assert reloads, "the reload event reached the console"


async def test_an_unreachable_socket_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    source = SocketSource(str(tmp_path / "nothing.sock"))
    with pytest.raises(SourceUnavailable, match="not running"):
        await source.status()
    with pytest.raises(SourceUnavailable):
        async for _event in source.events():
            pass


def test_the_command_line_picks_the_source(config_path: Path, tmp_path: Path) -> None:
    attach = build_source(argparse.Namespace(connect=str(tmp_path / "x.sock"), config=None))
    assert isinstance(attach, SocketSource) and attach.path == str(tmp_path / "x.sock")
    embed = build_source(argparse.Namespace(connect=None, config=str(config_path)))
    assert isinstance(embed, EmbeddedSource) and embed.config.path == str(config_path)


def test_nothing_to_show_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("core.cli.DEFAULT_CONFIG_PATHS", (tmp_path / "none.toml",))
    monkeypatch.setattr("core.cli.DEFAULT_SOCKET", str(tmp_path / "none.sock"))
    with pytest.raises(UsageError, match="--demo"):
        build_source(argparse.Namespace(connect=None, config=None))


async def test_attached_console_survives_the_daemon_going_away_and_coming_back(
    make_app: AppFactory, config_path: Path
) -> None:
    socket_path = str(config_path.parent / "control.sock")
    daemon = EmbeddedSource(load(config_path))
    await daemon.start()
    app = make_app(SocketSource(socket_path))
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        banner = app.screen.query_one("LinkBanner")
        assert app.screen.query_one(TunnelTable).row_count == 2
        await daemon.close()
        for _ in range(150):
            await pilot.pause(0.02)
            if banner.has_class("-lost"):
                break
        assert banner.has_class("-lost")
        assert "not running" in str(banner.render()) or "closed" in str(banner.render())
        assert app.screen.query_one(TunnelTable).row_count == 2
        again = EmbeddedSource(load(config_path))
        await again.start()
        try:
            for _ in range(300):
                await pilot.pause(0.05)
                if not banner.has_class("-lost"):
                    break
            assert not banner.has_class("-lost"), "the console did not reconnect"
            events_before = len(app.events)
            again.daemon.bus.publish("Log", level="info", peer="alpha", message="after restart")
            for _ in range(100):
                await pilot.pause(0.05)
                if len(app.events) > events_before:
                    break
            assert any(record.text == "after restart" for record in app.events)
        finally:
            await again.close()
