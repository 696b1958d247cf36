"""The config editor: config.toml in a TOML-highlighting TextArea, validated as you type.

The text comes from the core (`config-get`) and goes back through `config-apply`, which
saves atomically and reloads; the core refuses an invalid text, and so does this screen
before asking.  The draft survives leaving the screen (it is kept on the app).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from core.errors import UsageError
from tui.config_edit import (
    NEW_PEER_DEFAULTS,
    Problem,
    form_values,
    free_interface,
    peer_at_line,
    peer_header_line,
    preview,
)
from tui.connection import CommandFailed, SourceUnavailable
from tui.screens.peer_form import PeerFormScreen
from tui.widgets.status_bars import LinkBanner

if TYPE_CHECKING:
    from tui.app import ConsoleApp

VALIDATE_DELAY = 0.3  # seconds of quiet typing before validating


def toml_language() -> str | None:
    """ "toml" when tree-sitter and its TOML grammar are installed, else plain text."""
    found = all(importlib.util.find_spec(name) for name in ("tree_sitter", "tree_sitter_toml"))
    return "toml" if found else None


class EditorScreen(Screen[None]):
    DEFAULT_CSS = """
    EditorScreen #editor-status {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    EditorScreen TextArea {
        height: 1fr;
    }
    EditorScreen #problems {
        height: auto;
        max-height: 7;
        border-top: solid $error;
    }
    EditorScreen #problems.-empty {
        display: none;
    }
    """
    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply"),
        Binding("ctrl+n", "add_peer", "Add peer"),
        Binding("f2", "edit_peer", "Edit peer"),
        Binding("f8", "next_problem", "Next problem"),
        Binding("ctrl+r", "revert", "Revert"),
        Binding("escape", "leave", "Back", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.path = ""
        self.saved_text: str | None = None
        self.problems: list[Problem] = []
        self.validated_text: str | None = None
        self._timer: Timer | None = None
        self._problem_index = -1

    @property
    def console(self) -> ConsoleApp:
        return self.app  # type: ignore[return-value]

    @property
    def area(self) -> TextArea:
        return self.query_one(TextArea)

    def compose(self) -> ComposeResult:
        yield LinkBanner()
        yield Static("loading the config ...", id="editor-status")
        area = TextArea.code_editor("", language=toml_language(), id="config-text",
                                    soft_wrap=False)  # fmt: skip
        area.read_only = True
        yield area
        yield OptionList(id="problems", classes="-empty")
        yield Footer()

    def on_mount(self) -> None:
        self.load_config()

    @work(exclusive=True, group="editor-load", exit_on_error=False)
    async def load_config(self, *, discard_draft: bool = False) -> None:
        try:
            config = await self.console.source.config_get()
        except (SourceUnavailable, CommandFailed) as error:
            self.query_one("#editor-status", Static).update(f"✖ cannot read the config: {error}")
            self.notify(str(error), title="config", severity="error")
            return
        self.path, self.saved_text = config.path, config.text
        draft = self.console.config_draft
        text = config.text if discard_draft or draft is None else draft
        area = self.area
        area.read_only = False
        area.load_text(text)
        area.focus()
        self._validate_soon(0.0)

    # -- validation -------------------------------------------------------------------------
    @on(TextArea.Changed)
    def _edited(self) -> None:
        text = self.area.text
        self.console.config_draft = None if text == self.saved_text else text
        self._validate_soon(VALIDATE_DELAY)

    def _validate_soon(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(delay, self._validate_now)

    def _validate_now(self) -> None:
        self.validate(self.area.text)

    @work(exclusive=True, group="editor-validate", exit_on_error=False)
    async def validate(self, text: str) -> None:
        try:
            lines = await self.console.source.config_validate(text)
        except (SourceUnavailable, CommandFailed) as error:
            self._show_status(f"cannot validate: {error}")
            return
        if text != self.area.text:
            return  # typed on meanwhile; the next validation is already scheduled
        self.validated_text = text
        self.problems = [Problem.parse(line) for line in lines]
        self._show_problems()

    def _show_problems(self) -> None:
        box = self.query_one("#problems", OptionList)
        box.clear_options()
        for index, problem in enumerate(self.problems):
            where = f"line {problem.line}" if problem.line else "file"
            box.add_option(Option(f"✖ {where}: {problem.message}", id=str(index)))
        box.set_class(not self.problems, "-empty")
        self._problem_index = -1
        self._show_status()

    def _show_status(self, extra: str = "") -> None:
        palette = self.console.palette
        text = Text(self.path or "config", style="bold")
        modified = self.saved_text is not None and self.area.text != self.saved_text
        text.append("  modified" if modified else "  saved", style=palette.warning
                    if modified else palette.muted)  # fmt: skip
        if self.validated_text != self.area.text:
            text.append("  checking ...", style=palette.muted)
        elif self.problems:
            count = len(self.problems)
            text.append(f"  ✖ {count} problem{'s' if count != 1 else ''} - Apply is blocked",
                        style=palette.error)  # fmt: skip
        else:
            text.append("  ✔ valid", style=palette.success)
        if extra:
            text.append(f"  {extra}", style=palette.error)
        self.query_one("#editor-status", Static).update(text)

    @on(OptionList.OptionSelected, "#problems")
    def _problem_chosen(self, event: OptionList.OptionSelected) -> None:
        self.jump_to_problem(int(event.option.id or 0))

    def jump_to_problem(self, index: int) -> None:
        if not 0 <= index < len(self.problems):
            return
        self._problem_index = index
        line = self.problems[index].line
        area = self.area
        if line is not None:
            row = min(max(line - 1, 0), area.document.line_count - 1)
            area.cursor_location = (row, 0)
            area.scroll_cursor_visible(center=True)
        area.focus()

    def action_next_problem(self) -> None:
        if self.problems:
            self.jump_to_problem((self._problem_index + 1) % len(self.problems))

    # -- the peer form ----------------------------------------------------------------------
    def action_add_peer(self) -> None:
        text = self.area.text
        values = dict(NEW_PEER_DEFAULTS, interface=free_interface(text, self.path))
        self.app.push_screen(PeerFormScreen(text, self.path, values), self._form_done)

    def action_edit_peer(self) -> None:
        text = self.area.text
        name = peer_at_line(text, self.area.cursor_location[0] + 1)
        if name is None:
            self.notify("put the cursor inside a [[peer]] table", severity="warning")
            return
        try:
            values = form_values(text, name, self.path)
        except UsageError as error:
            self.notify(str(error), title=f"edit {name}", severity="warning")
            return
        screen = PeerFormScreen(text, self.path, values, original=name)
        self.app.push_screen(screen, self._form_done)

    def _form_done(self, new_text: str | None) -> None:
        if new_text is None:
            return
        area = self.area
        old_name = peer_at_line(area.text, area.cursor_location[0] + 1)
        area.replace(new_text, (0, 0), area.document.end)
        names = [old_name] if old_name else []
        for name in names:
            line = peer_header_line(new_text, name)
            if line is not None:
                area.cursor_location = (line - 1, 0)
                area.scroll_cursor_visible(center=True)

    # -- apply and revert -------------------------------------------------------------------
    @work(exclusive=True, group="editor-apply", exit_on_error=False)
    async def action_apply(self) -> None:
        text = self.area.text
        try:
            lines = await self.console.source.config_validate(text)
        except (SourceUnavailable, CommandFailed) as error:
            self.notify(str(error), title="cannot apply", severity="error")
            return
        if lines:
            self.validated_text, self.problems = text, [Problem.parse(line) for line in lines]
            self._show_problems()
            self.notify(f"{len(lines)} problem(s): fix them first", title="not applied",
                        severity="error")  # fmt: skip
            self.jump_to_problem(0)
            return
        from tui.screens.apply_preview import ApplyPreviewScreen

        change = preview(self.saved_text or "", text, self.path)
        confirmed = await self.app.push_screen_wait(
            ApplyPreviewScreen(change, self.console.palette, self.path)
        )
        if not confirmed:
            return
        try:
            await self.console.source.config_apply(text)
        except CommandFailed as error:
            if error.problems:
                self.validated_text = text
                self.problems = [Problem.parse(line) for line in error.problems]
                self._show_problems()
            self.notify(str(error), title="not applied", severity="error")
            return
        except SourceUnavailable as error:
            self.notify(str(error), title="not applied", severity="error")
            return
        self.saved_text = text
        self.console.config_draft = None
        self._show_status()
        self.notify(f"saved {self.path} and reloaded", title="config applied")
        self.console.refresh_now()

    @work(exclusive=True, group="editor-revert", exit_on_error=False)
    async def action_revert(self) -> None:
        if self.saved_text is not None and self.area.text != self.saved_text:
            from tui.screens.confirm import ConfirmScreen

            question = "Throw away your edits and reload the saved config?"
            if not await self.app.push_screen_wait(ConfirmScreen(question, confirm="Revert")):
                return
        self.console.config_draft = None
        self.load_config(discard_draft=True)

    def action_leave(self) -> None:
        self.app.pop_screen()
