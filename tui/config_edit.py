"""The config editor's logic, apart from its widgets: problems with their lines, the peer
under the cursor, the peer form's values and edits, and the preview of what Apply changes.

Edits go through core.config's text edits (set_peer_value, add_peer, remove_peer ...), so
the operator's comments and layout survive every form save.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.config import (
    add_peer,
    diff,
    load_text,
    peer_values,
    remove_peer_value,
    set_peer_value,
)
from core.config.source import scan
from core.errors import ConfigError, UsageError

_PROBLEM = re.compile(r"^(?P<file>[^\n]*?):(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    line: int | None  # 1-based, None when the problem has no line
    message: str
    text: str  # the whole problem line as the core wrote it

    @staticmethod
    def parse(text: str) -> Problem:
        match = _PROBLEM.match(text)
        if match is None:
            return Problem(None, text, text)
        return Problem(int(match["line"]), match["message"], text)


def base_dir(path: str) -> Path:
    return Path(path).parent if path else Path(".")


def peer_at_line(text: str, line: int) -> str | None:
    """The name of the [[peer]] whose table holds 1-based `line`; None outside peers or when
    the text is not TOML."""
    try:
        document = tomllib.loads(text)
        source = scan(text)
    except tomllib.TOMLDecodeError:
        return None
    peers = document.get("peer")
    if not isinstance(peers, list):
        return None
    name: str | None = None
    for index, table in enumerate(source.array_elements("peer")):
        header = table.header_line or 0
        if header <= line and index < len(peers) and isinstance(peers[index], dict):
            value = peers[index].get("name")
            name = value if isinstance(value, str) else None
        elif header > line:
            break
    return name


def peer_header_line(text: str, name: str) -> int | None:
    try:
        document = tomllib.loads(text)
        tables = scan(text).array_elements("peer")
    except tomllib.TOMLDecodeError:
        return None
    peers = document.get("peer")
    if not isinstance(peers, list):
        return None
    for table, peer in zip(tables, peers, strict=False):
        if isinstance(peer, dict) and peer.get("name") == name:
            return table.header_line
    return None


# The fields the peer form edits, in order: (key, label, kind).  kind: "text", "int",
# "bool", "list" (comma separated), "secret", or "a|b|c" (a choice).
FORM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("name", "Name", "text"),
    ("interface", "Interface (ipsec0..63)", "text"),
    ("enabled", "Enabled", "bool"),
    ("ike_version", "IKE version", "2|1"),
    ("exchange_mode", "IKEv1 exchange", "main|aggressive"),
    ("local_address", "Local address", "text"),
    ("remote_address", "Remote address", "text"),
    ("local_id", "Local ID", "text"),
    ("remote_id", "Remote ID", "text"),
    ("psk", "Pre-shared key", "secret"),
    ("mode", "Mode", "tunnel|transport"),
    ("nat_traversal", "NAT traversal", "auto|force|off"),
    ("passive", "Passive", "bool"),
    ("address", "Interface address (empty: unnumbered)", "text"),
    ("routes", "Routes (comma separated)", "list"),
    ("dpd_interval", "DPD interval (s, 0 = off)", "int"),
    ("dpd_retries", "DPD retries", "int"),
    ("mtu", "MTU", "int"),
)
OPTIONAL_WHEN_EMPTY = frozenset({"address", "psk"})
REQUIRED_KEYS = frozenset({"name", "interface", "local_address", "remote_address", "psk"})

NEW_PEER_DEFAULTS: dict[str, object] = {
    "name": "",
    "interface": "",
    "enabled": True,
    "ike_version": 2,
    "exchange_mode": "main",
    "local_address": "",
    "remote_address": "",
    "local_id": "",
    "remote_id": "",
    "psk": "",
    "mode": "tunnel",
    "nat_traversal": "auto",
    "passive": False,
    "address": "",
    "routes": [],
    "dpd_interval": 20,
    "dpd_retries": 5,
    "mtu": 1400,
}


def free_interface(text: str, path: str) -> str:
    """The first ipsecN not used in `text` (when it parses), for a new peer's default."""
    try:
        used = {peer.interface for peer in load_text(text, path, base_dir(path)).peers}
    except ConfigError:
        return "ipsec0"
    for index in range(64):
        if f"ipsec{index}" not in used:
            return f"ipsec{index}"
    return ""


def form_values(text: str, name: str, path: str) -> dict[str, object]:
    """The current values of peer `name` for the form; raises UsageError when the text must
    be fixed first (the form edits a valid config)."""
    try:
        config = load_text(text, path, base_dir(path))
    except ConfigError as error:
        raise UsageError(
            f"fix the {len(error.problems)} problem(s) first: the form edits a valid config"
        ) from None
    peer = config.peer(name)
    if peer is None:
        raise UsageError(f"no peer named {name!r}")
    values = dict(NEW_PEER_DEFAULTS)
    values.update(peer_values(peer, with_defaults=True))
    if peer.psk_file is not None:
        values["psk"] = ""  # the key stays in its file
    return values


def _changed(old: object, new: object) -> bool:
    return old != new and not (old in (None, "", []) and new in (None, "", []))


def apply_form(
    text: str, original: str | None, values: dict[str, object], old: dict[str, object]
) -> str:
    """`text` with the form's values: a new peer appended, or the changed keys of peer
    `original` edited in place.  Empty optional keys are left out (or removed)."""
    if original is None:
        kept = {
            key: value
            for key, value in values.items()
            if key in REQUIRED_KEYS or value != NEW_PEER_DEFAULTS.get(key, object())
        }
        return add_peer(text, kept)
    name = original
    for key, value in values.items():
        if not _changed(old.get(key), value):
            continue
        if key == "psk" and value == "" and "psk_file" in old:
            continue
        if value in ("", None) and key in OPTIONAL_WHEN_EMPTY:
            text = remove_peer_value(text, name, key)
        else:
            text = set_peer_value(text, name, key, value)
        if key == "name" and isinstance(value, str):
            name = value
    return text


@dataclass(frozen=True)
class ApplyPreview:
    """What applying the new text does to the tunnels."""

    added: tuple[str, ...]
    restarted: tuple[tuple[str, tuple[str, ...]], ...]  # name and the keys that changed
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]
    global_keys: tuple[str, ...]
    note: str = ""

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.restarted or self.removed or self.global_keys)


def preview(old_text: str, new_text: str, path: str) -> ApplyPreview:
    """Compares the saved config with the edited one.  The new text must be valid (the
    caller validated it); an invalid saved file counts as having no peers."""
    directory = base_dir(path)
    new = load_text(new_text, path, directory)
    note = ""
    try:
        old = load_text(old_text, path, directory)
    except ConfigError:
        note = "the saved file has problems: every peer counts as added"
        return ApplyPreview(new.peer_names, (), (), (), (), note)
    change = diff(old, new)
    restarted = tuple((item.name, item.keys) for item in change.changed)
    if "enabled" in change.global_keys:
        note = "[global] enabled changes: every tunnel is started or stopped"
    return ApplyPreview(
        change.added, restarted, change.removed, change.unchanged, change.global_keys, note
    )
