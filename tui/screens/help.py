"""Every key binding of every screen, read from the screens themselves so it never drifts."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown

INTRO = """\
# rbipsec console

Keys work on the screen named above them.  **ctrl+p** opens the command palette: every
action on every tunnel, the screens, and the themes.  The mouse works too: click a row
for its details, a column header to sort.
"""


def _key_text(binding: Binding) -> str:
    names = {"question_mark": "?", "slash": "/", "escape": "esc", "enter": "enter"}
    return " / ".join(names.get(key, key) for key in binding.key.split(","))


def _bindings(bindings: list[BindingType]) -> list[Binding]:
    return [binding for binding in bindings if isinstance(binding, Binding)]


def binding_sections() -> list[tuple[str, list[Binding]]]:
    from tui.app import ConsoleApp
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.dashboard import DashboardScreen
    from tui.screens.detail import DetailScreen
    from tui.screens.editor import EditorScreen
    from tui.screens.events import EventLogScreen
    from tui.screens.peer_form import PeerFormScreen

    return [
        ("Dashboard", _bindings(DashboardScreen.BINDINGS)),
        ("Tunnel details", _bindings(DetailScreen.BINDINGS)),
        ("Config editor", _bindings(EditorScreen.BINDINGS)),
        ("Peer form", _bindings(PeerFormScreen.BINDINGS)),
        ("Event log", _bindings(EventLogScreen.BINDINGS)),
        ("Questions", _bindings(ConfirmScreen.BINDINGS)),
        ("Everywhere", [*_bindings(ConsoleApp.BINDINGS), Binding("ctrl+p", "", "Command palette")]),
        ("This help", _bindings(HelpScreen.BINDINGS)),
    ]


def help_markdown() -> str:
    parts = [INTRO]
    for title, bindings in binding_sections():
        parts.append(f"\n## {title}\n\n| key | does |\n|---|---|")
        for binding in bindings:
            parts.append(f"| `{_key_text(binding)}` | {binding.description or binding.action} |")
    return "\n".join(parts) + "\n"


class HelpScreen(Screen[None]):
    DEFAULT_CSS = """
    HelpScreen VerticalScroll {
        padding: 0 2;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(help_markdown())
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
