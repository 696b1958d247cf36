"""The rbipsec command line: help for every command, check, and clients without a daemon."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import cli
from core.cli import main

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["check", "daemon", "status", "up", "down", "rekey", "reload", "console"]
NO_DAEMON = [
    ["status"],
    ["status", "--json"],
    ["up", "branch1"],
    ["down", "branch1"],
    ["rekey", "branch1"],
    ["reload"],
]


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read /etc/rbipsec; ./config.toml is looked up in an empty directory."""
    monkeypatch.setattr(
        cli, "DEFAULT_CONFIG_PATHS", (Path("config.toml"), tmp_path / "etc" / "config.toml")
    )
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rbipsec {command} ")
    assert "-c FILE, --config FILE" in out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("usage: rbipsec")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("rbipsec ")


@pytest.mark.parametrize("argv", NO_DAEMON, ids=" ".join)
def test_client_commands_without_a_daemon_say_so(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--socket", "/tmp/rbipsec-test-absent.sock"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("rbipsec: the rbipsec daemon is not running")
    assert "/tmp/rbipsec-test-absent.sock" in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_daemon_without_a_config_says_where_it_looked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["daemon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rbipsec daemon: no config file found")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_client_commands_find_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "other.toml"
    config.write_text('[global]\nsocket = "/tmp/rb-test.sock"\n')
    assert main(["status", "-c", str(config)]) == 1
    assert "/tmp/rb-test.sock" in capsys.readouterr().err
    assert main(["-c", str(config), "reload"]) == 1  # -c before the command works too
    assert "/tmp/rb-test.sock" in capsys.readouterr().err
    assert main(["up", "b1", "-c", str(config), "--socket", "/tmp/explicit.sock"]) == 1
    assert "/tmp/explicit.sock" in capsys.readouterr().err
    assert main(["down", "b1"]) == 1  # no config anywhere: the default socket
    assert "/run/rbipsec/control.sock" in capsys.readouterr().err
    Path("config.toml").write_text('[global]\nsocket = "/tmp/from-cwd.sock"\n')
    assert main(["rekey", "b1"]) == 1
    assert "/tmp/from-cwd.sock" in capsys.readouterr().err


def test_a_client_with_a_broken_config_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    Path("config.toml").write_text('[global]\nsocket = "relative.sock"\n')
    assert main(["status"]) == 2
    assert capsys.readouterr().err == (
        'config.toml:2: global.socket: "relative.sock" must be an absolute path\n'
    )


def test_bad_peer_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "Not A Name"]) == 2
    assert "is not a peer name" in capsys.readouterr().err


def test_check_of_the_shipped_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(REPO / "config.toml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{REPO / 'config.toml'}: ok, 2 peers"
    assert "route-based IPsec disabled (global.enabled = false)" in out[1]
    assert out[2].startswith("  peer branch1: ipsec1, IKEv2 tunnel, 198.51.100.1 -> 203.0.113.2")
    assert out[3].startswith(
        "  peer shop7: ipsec7, IKEv1 aggressive tunnel, 198.51.100.1 -> dynamic"
    )


def test_check_finds_config_toml_in_the_current_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check"]) == 2
    assert "no config file found" in capsys.readouterr().err
    Path("config.toml").write_text((REPO / "config.toml").read_text())
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("config.toml: ok, 2 peers")


def test_the_module_runs_as_a_program() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "check", str(REPO / "config.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert ": ok, 2 peers" in result.stdout
