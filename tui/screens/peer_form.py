"""A form to add a peer or edit one; it hands the editor the new config text.

The form checks its result with the same validation as the core and stays open, showing
the problems it would add, until they are fixed or the operator cancels.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, Switch

from core.config import validate_text
from core.errors import UsageError
from tui.config_edit import FORM_FIELDS, apply_form, base_dir


def _choices(kind: str) -> list[str]:
    return kind.split("|") if "|" in kind else []


class PeerFormScreen(ModalScreen[str | None]):
    """Dismisses with the new config text, or None when cancelled."""

    DEFAULT_CSS = """
    PeerFormScreen {
        align: center middle;
        background: $background 60%;
    }
    PeerFormScreen > Vertical {
        width: 76;
        max-width: 100%;
        height: 95%;
        border: thick $primary;
        background: $surface;
    }
    PeerFormScreen #form-title {
        padding: 0 1;
        text-style: bold;
        background: $panel;
        width: 100%;
    }
    PeerFormScreen .row {
        height: auto;
        padding: 0 1;
    }
    PeerFormScreen .row Label {
        width: 24;
        padding-top: 1;
    }
    PeerFormScreen .row Input, PeerFormScreen .row Select {
        width: 1fr;
    }
    PeerFormScreen #form-problems {
        height: auto;
        max-height: 6;
        padding: 0 1;
        color: $error;
    }
    PeerFormScreen #form-buttons {
        height: auto;
        align-horizontal: right;
        padding: 0 1;
    }
    PeerFormScreen #form-buttons Button {
        margin-left: 1;
    }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save to the editor"),
    ]

    def __init__(
        self, text: str, path: str, values: dict[str, object], *, original: str | None = None
    ) -> None:
        super().__init__()
        self.text = text
        self.path = path
        self.old = dict(values)
        self.original = original

    def compose(self) -> ComposeResult:
        title = f"Edit peer {self.original}" if self.original else "Add a peer"
        with Vertical():
            yield Static(f"{title}  (ctrl+s save, esc cancel)", id="form-title")
            with VerticalScroll():
                for key, label, kind in FORM_FIELDS:
                    with Horizontal(classes="row"):
                        yield Label(label)
                        yield self._field(key, kind)
            yield Static(id="form-problems")
            with Horizontal(id="form-buttons"):
                if self.original:
                    yield Button("Remove peer", id="remove", variant="error")
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def _field(self, key: str, kind: str) -> Input | Select[str] | Switch:
        value = self.old.get(key)
        widget_id = f"field-{key}"
        if kind == "bool":
            return Switch(value=bool(value), id=widget_id)
        choices = _choices(kind)
        if choices:
            current = str(value) if str(value) in choices else choices[0]
            return Select([(choice, choice) for choice in choices], value=current,
                          allow_blank=False, id=widget_id)  # fmt: skip
        if kind == "list":
            text = ", ".join(str(item) for item in value) if isinstance(value, list) else ""
        else:
            text = "" if value is None else str(value)
        restrict = r"[0-9]*" if kind == "int" else None
        return Input(text, id=widget_id, password=kind == "secret", restrict=restrict)

    def on_mount(self) -> None:
        self.query_one("#field-name", Input).focus()

    def values(self) -> dict[str, object]:
        """The form as TOML values (ints for numbers, lists for routes)."""
        result: dict[str, object] = {}
        for key, _label, kind in FORM_FIELDS:
            widget = self.query_one(f"#field-{key}")
            if isinstance(widget, Switch):
                result[key] = widget.value
            elif isinstance(widget, Select):
                choice = str(widget.value)
                result[key] = int(choice) if key == "ike_version" else choice
            elif isinstance(widget, Input):
                raw = widget.value.strip()
                if kind == "int":
                    result[key] = int(raw) if raw else self.old.get(key, 0)
                elif kind == "list":
                    result[key] = [item.strip() for item in raw.split(",") if item.strip()]
                else:
                    result[key] = raw
        return result

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        try:
            new_text = apply_form(self.text, self.original, self.values(), self.old)
        except UsageError as error:
            self._show_problems([str(error)])
            return
        before = set(validate_text(self.text, self.path, base_dir(self.path)))
        added = [p for p in validate_text(new_text, self.path, base_dir(self.path))
                 if p not in before]  # fmt: skip
        if added:
            self._show_problems(added)
            return
        self.dismiss(new_text)

    def _show_problems(self, problems: list[str]) -> None:
        shown = "\n".join(f"✖ {problem}" for problem in problems[:5])
        if len(problems) > 5:
            shown += f"\n... and {len(problems) - 5} more"
        self.query_one("#form-problems", Static).update(shown)

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#remove")
    def _remove_pressed(self) -> None:
        from core.config import remove_peer

        assert self.original is not None
        self.dismiss(remove_peer(self.text, self.original))
