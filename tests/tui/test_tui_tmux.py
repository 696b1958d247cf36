"""The console in a real terminal: tmux runs it, keys are sent, the screen is read back.

The demo case runs `rbipsec console --demo` (real tunnels in namespaces, root) and checks
that it shows them, answers keys, quits cleanly and leaves nothing behind.  While the CLI
does not wire `console --demo` yet, it runs `python -m tui`, which calls the same
`tui.app.run_console`.  The fake case needs no root and checks the smallest supported
terminal, 80x24.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def console_command() -> list[str]:
    """`rbipsec console` when the CLI passes --demo to the console, else `python -m tui`."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["console", "--demo"])
    except SystemExit:
        return [sys.executable, "-m", "tui"]
    return [sys.executable, "-m", "core.cli", "console"]


class Terminal:
    def __init__(self, name: str, command: list[str], width: int, height: int) -> None:
        self.name = name
        # COLUMNS/LINES from the test's environment would override the terminal's size.
        command = ["env", "-u", "COLUMNS", "-u", "LINES", *command]
        shell = f"cd {shlex.quote(str(REPO))} && {shlex.join(command)}; echo EXIT=$?; sleep 30"
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", str(width),
                        "-y", str(height), shell], check=True)  # fmt: skip
        subprocess.run(["tmux", "resize-window", "-t", name, "-x", str(width), "-y", str(height)],
                       check=False, capture_output=True)  # fmt: skip

    def screen(self) -> str:
        result = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                                capture_output=True, text=True, check=False)  # fmt: skip
        return result.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)
            # A lone ESC followed at once by a key reads as Alt+key: leave a gap.
            time.sleep(0.6 if key == "Escape" else 0.15)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(
            f"{text!r} did not appear within {timeout} s; screen:\n{self.screen()}"
        )

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False,
                       capture_output=True)  # fmt: skip


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def test_fake_console_at_80x24(terminals: list[Terminal], tmp_path: Path) -> None:
    command = ["env", f"XDG_STATE_HOME={tmp_path}", sys.executable, "-m", "tui", "--fake"]
    terminal = Terminal(f"rbtui-fake-{time.monotonic_ns() % 10**6}", command, 80, 24)
    terminals.append(terminal)
    screen = terminal.wait_for("8/64 peers", 20)
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    for visible in ("Name", "State", "IKE SA", "Child SA", "▲ up", "✖ error", "^p palette"):
        assert visible in screen
    terminal.keys("Enter")
    screen = terminal.wait_for("─ Tunnel ─", 10)
    assert "branch-nat  ipsec1" in screen and "NAT(peer)" in screen
    terminal.keys("Escape")
    terminal.wait_for("8/64 peers", 10)
    terminal.keys("l")
    terminal.wait_for("level ≥", 10)
    terminal.keys("Escape")
    terminal.wait_for("8/64 peers", 10)
    terminal.keys("t")
    terminal.wait_for("theme: rbipsec-high-contrast", 10)
    terminal.keys("q")
    terminal.wait_for("EXIT=0", 10)
    assert '"theme": "rbipsec-high-contrast"' in (tmp_path / "rbipsec" / "console.json").read_text()


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.slow
def test_demo_in_a_real_terminal_shows_tunnels_and_cleans_up(
    terminals: list[Terminal], tmp_path: Path
) -> None:
    from tui.demo import PREFIX, why_not

    if why_not() is not None:
        pytest.skip(str(why_not()))
    command = ["env", f"XDG_STATE_HOME={tmp_path}", *console_command(), "--demo"]
    terminal = Terminal(f"rbtui-demo-{time.monotonic_ns() % 10**6}", command, 120, 30)
    terminals.append(terminal)
    started = time.monotonic()
    screen = terminal.wait_for("▲ 4 up", 60)
    seconds = time.monotonic() - started
    assert "4/64 peers" in screen and "embedded core" in screen
    for name in ("branch", "hq", "kiosk", "shop"):
        assert name in screen
    terminal.keys("Down", "Enter")
    screen = terminal.wait_for("installed", 20)
    assert "Child SAs" in screen and "established" in screen
    terminal.keys("Escape")
    terminal.wait_for("4/64 peers", 20)
    terminal.keys("?")
    terminal.wait_for("Dashboard", 20)
    terminal.keys("Escape")
    terminal.wait_for("4/64 peers", 20)
    terminal.keys("q")
    terminal.wait_for("EXIT=0", 60)
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in listing, f"namespaces left behind:\n{listing}"
    assert not list(Path("/tmp").glob(PREFIX + "*")), "work directory left behind"
    assert seconds < 60
