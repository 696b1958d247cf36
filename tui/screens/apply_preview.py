"""Before Apply: which tunnels will be added, restarted, removed or left alone."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui.config_edit import ApplyPreview
from tui.widgets.cells import Palette


def preview_text(change: ApplyPreview, palette: Palette) -> Text:
    text = Text()

    def section(title: str, names: list[str], style: object) -> None:
        text.append(f"{title} ({len(names)})\n", style="bold")
        for name in names:
            text.append(f"  {name}\n", style=style)  # type: ignore[arg-type]

    section("+ added", list(change.added), palette.success)
    section("~ restarted", [f"{name}: {', '.join(keys)}" for name, keys in change.restarted],
            palette.warning)  # fmt: skip
    section("- removed", list(change.removed), palette.error)
    text.append(f"= left alone ({len(change.unchanged)})\n", style="bold")
    if change.unchanged:
        text.append("  " + ", ".join(change.unchanged) + "\n", style=palette.muted)
    if change.global_keys:
        text.append(f"[global] changes: {', '.join(change.global_keys)}\n", style=palette.warning)
    if change.note:
        text.append(change.note + "\n", style=palette.warning)
    if change.is_empty:
        text.append("Nothing changes for the tunnels (comments or layout only).\n")
    return text


class ApplyPreviewScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ApplyPreviewScreen {
        align: center middle;
        background: $background 60%;
    }
    ApplyPreviewScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 90%;
        border: thick $warning;
        background: $surface;
        padding: 0 1;
    }
    ApplyPreviewScreen VerticalScroll {
        height: auto;
        max-height: 18;
    }
    ApplyPreviewScreen Horizontal {
        height: auto;
        align-horizontal: right;
    }
    ApplyPreviewScreen Button {
        margin-left: 1;
    }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Apply"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, change: ApplyPreview, palette: Palette, path: str) -> None:
        super().__init__()
        self.change = change
        self.palette = palette
        self.path = path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"Apply to {self.path or 'the config'} and reload?\n",
                              style="bold"))  # fmt: skip
            with VerticalScroll():
                yield Static(preview_text(self.change, self.palette), id="preview")
            with Horizontal():
                yield Button("Cancel (n)", id="no")
                yield Button("Save and reload (y)", id="yes", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
