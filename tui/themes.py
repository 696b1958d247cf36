"""The console's themes (themes/*.toml) and the small state file that remembers the choice.

A theme file holds the fields of `textual.theme.Theme` (name, dark, primary, secondary,
accent, warning, error, success, foreground, background, surface, panel, boost,
luminosity_spread, text_alpha) and an optional [variables] table.  Files are looked for
in the source tree's themes/ and in the installed share/rbipsec/themes/; a broken file is
skipped with a message instead of stopping the console.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from textual.theme import Theme

from core.config import atomic_write_text

DEFAULT_THEME = "rbipsec-dark"
_COLOUR_KEYS = (
    "primary", "secondary", "accent", "warning", "error", "success",
    "foreground", "background", "surface", "panel", "boost",
)  # fmt: skip


def theme_dirs() -> list[Path]:
    """Where theme files live: the source tree, then the installed data directory."""
    here = Path(__file__).resolve().parent.parent / "themes"
    installed = Path(sys.prefix) / "share" / "rbipsec" / "themes"
    return [path for path in (here, installed) if path.is_dir()]


def theme_from_toml(text: str) -> Theme:
    """A Theme from a theme file's text; raises ValueError naming what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"not TOML: {error}") from None
    name, primary = data.get("name"), data.get("primary")
    if not isinstance(name, str) or not name or not isinstance(primary, str):
        raise ValueError('needs "name" and "primary" strings')
    colours = {key: data[key] for key in _COLOUR_KEYS if isinstance(data.get(key), str)}
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(value, str) for value in variables.values()
    ):
        raise ValueError("[variables] must map names to colour strings")
    extra: dict[str, float] = {}
    for key in ("luminosity_spread", "text_alpha"):
        if isinstance(data.get(key), int | float):
            extra[key] = float(data[key])
    return Theme(
        name=name,
        dark=bool(data.get("dark", True)),
        variables={str(key): str(value) for key, value in variables.items()},
        **colours,
        **extra,  # type: ignore[arg-type]
    )


def load_themes(directories: Iterable[Path] | None = None) -> tuple[list[Theme], list[str]]:
    """Every theme found (first directory wins on equal names) and the problems met."""
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    for directory in theme_dirs() if directories is None else directories:
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = theme_from_toml(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                problems.append(f"{path}: {error}")
                continue
            themes.setdefault(theme.name, theme)
    return list(themes.values()), problems


def state_file() -> Path:
    """$XDG_STATE_HOME/rbipsec/console.json (default ~/.local/state/rbipsec/console.json)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rbipsec" / "console.json"


def read_state(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_state(path: Path, **values: object) -> None:
    """Merges `values` into the state file; failures are ignored (state is a convenience)."""
    state = read_state(path)
    state.update(values)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass
