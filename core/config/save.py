"""Saving config.toml: atomic writes, and edits that keep the operator's comments.

Edits work on the text: `core.config.source` finds the exact span of a value or the lines of
a [[peer]] table, and only those characters change; new values are rendered by tomlkit, new
[[peer]] tables by tomli-w.  Everything else (comments, blank lines, unknown keys, the order
of keys) stays byte for byte.  The edit functions return new text and do not validate it;
`save_text` and `edit_file` validate before writing and never write an invalid config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import ipaddress
import os
import stat
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from core.config.load import PEER_KEYS, load_text, syntax_problem
from core.config.schema import Config, FloatLink, PeerConfig, Secret
from core.config.source import Entry, SourceMap, Table, scan
from core.errors import ConfigError, UsageError

NEW_FILE_MODE = 0o600  # a config may hold PSKs


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replaces the file with `text` so that readers see the old or the new file, never a mix.

    Writes a temporary file in the same directory, fsyncs it, renames it over the target and
    fsyncs the directory.  An existing file's mode (and owner, when we may) is kept; a new
    file gets mode 0600.  A symlink is followed: its target is replaced.
    """
    target = Path(os.path.realpath(path))
    try:
        status: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        status = None
    _remove_dead_writers_files(target)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    # Locked until the file is renamed or removed: a temporary file that nobody holds a
    # lock on belongs to a writer that died (SIGKILL) and is removed by the next save.
    lock = os.dup(descriptor)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fchmod(handle.fileno(), stat.S_IMODE(status.st_mode) if status else NEW_FILE_MODE)
            if status is not None and (status.st_uid, status.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), status.st_uid, status.st_gid)
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    finally:
        os.close(lock)
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _remove_dead_writers_files(target: Path) -> None:
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            descriptor = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        finally:
            os.close(descriptor)


def save_text(path: str | os.PathLike[str], text: str) -> Config:
    """Validates `text` as the config at `path` and writes it atomically.

    Raises ConfigError (and leaves the file untouched) when the text has any problem.
    """
    name = os.fspath(path)
    config = load_text(text, name, Path(name).parent)
    atomic_write_text(name, text)
    return config


def edit_file(path: str | os.PathLike[str], edit: Callable[[str], str]) -> Config:
    """Reads the config, applies `edit` (e.g. `lambda t: set_peer_value(t, "b1", "mtu", 1380)`)
    and saves the result if it is valid."""
    text = Path(path).read_text(encoding="utf-8")
    return save_text(path, edit(text))


def set_peer_value(text: str, peer_name: str, key: str, value: object) -> str:
    """Sets one key of the named peer; a new key goes after the peer's last key."""
    source = _parse(text)
    return _set_in_table(source, _peer_table(text, source, peer_name), key, value)


def remove_peer_value(text: str, peer_name: str, key: str) -> str:
    """Removes one key (with its line's comment) from the named peer; no-op if absent."""
    source = _parse(text)
    entry = _entry(_peer_table(text, source, peer_name), key)
    if entry is None:
        return text
    lines = source.lines
    return "".join(lines[: entry.line - 1] + lines[entry.end_line :])


def set_global_value(text: str, key: str, value: object) -> str:
    """Sets one key of [global], creating the table before the first table if needed."""
    source = _parse(text)
    table = source.table(("global",))
    if table is not None:
        return _set_in_table(source, table, key, value)
    headers = [table.header_line for table in source.tables if table.header_line is not None]
    at = _attached_start(source, headers[0]) if headers else len(source.lines) + 1
    block = f"[global]\n{key} = {_render(value)}\n\n"
    return _insert_lines(source, at, block)


def add_peer(text: str, values: Mapping[str, object]) -> str:
    """Appends a [[peer]] table after the last peer (or at the end), rendered by tomli-w."""
    source = _parse(text)
    ordered = {key: _plain(values[key]) for key in PEER_KEYS if key in values}
    ordered.update({key: _plain(value) for key, value in values.items() if key not in ordered})
    if any(isinstance(value, dict) for value in ordered.values()):
        raise UsageError("a [[peer]] takes plain values, not tables")
    # tomli-w would write a small array of tables inline (peer = [...]): render the header here.
    block = "[[peer]]\n" + tomli_w.dumps(ordered)
    peers = source.array_elements("peer")
    at = _block_end(source, peers[-1]) if peers else len(source.lines) + 1
    block = _ensure_newline_before(source, at) + _blank_separator(source, at) + block
    if at <= len(source.lines):
        block += "\n"
    return _insert_lines(source, at, block)


def remove_peer(text: str, name: str) -> str:
    """Removes the named peer: its header, keys, comments between them, and the comment lines
    directly above its header (up to the first blank line)."""
    source = _parse(text)
    table = _peer_table(text, source, name)
    assert table.header_line is not None
    start = _attached_start(source, table.header_line)
    end = _block_end(source, table)
    lines = source.lines[: start - 1] + source.lines[end - 1 :]
    if end > len(source.lines):  # it was the last block: drop the blank lines it leaves
        while lines and not lines[-1].strip():
            lines.pop()
    return "".join(lines)


def peer_values(peer: PeerConfig, *, with_defaults: bool = False) -> dict[str, object]:
    """A peer as TOML values (for `add_peer`): the keys that differ from their defaults, the
    required ones, and the PSK inline unless it came from psk_file."""
    values: dict[str, object] = {}
    for field in dataclasses.fields(PeerConfig):
        value = getattr(peer, field.name)
        if field.name == "psk" and peer.psk_file is not None:
            continue
        if value is None:
            continue
        if with_defaults or field.default is dataclasses.MISSING or value != field.default:
            values[field.name] = _plain(value)
    return values


def _parse(text: str) -> SourceMap:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([syntax_problem("config.toml", text, str(error))]) from None
    return scan(text)


def _peer_table(text: str, source: SourceMap, name: str) -> Table:
    peers = tomllib.loads(text).get("peer", [])
    tables = source.array_elements("peer")
    if not isinstance(peers, list) or len(tables) != len(peers):
        raise UsageError("the peers must be written as [[peer]] tables to be edited")
    for index, peer in enumerate(peers):
        if isinstance(peer, dict) and peer.get("name") == name:
            return tables[index]
    raise UsageError(f'no peer named "{name}"')


def _entry(table: Table, key: str) -> Entry | None:
    for entry in table.entries:
        if entry.key == (key,):
            return entry
    return None


def _set_in_table(source: SourceMap, table: Table, key: str, value: object) -> str:
    rendered = _render(value)
    entry = _entry(table, key)
    lines = source.lines
    if entry is not None:
        start, end = entry.value_start, entry.value_end
        head = lines[start.line - 1][: start.column]
        tail = lines[end.line - 1][end.column :]
        return "".join([*lines[: start.line - 1], head, rendered, tail, *lines[end.line :]])
    indent = ""
    if table.entries:
        first = lines[table.entries[0].line - 1]
        indent = first[: len(first) - len(first.lstrip(" \t"))]
    at = table.last_line + 1
    return _insert_lines(
        source, at, _ensure_newline_before(source, at) + f"{indent}{key} = {rendered}\n"
    )


def _insert_lines(source: SourceMap, at: int, block: str) -> str:
    """Inserts `block` before line `at` (1-based; len + 1 appends)."""
    return "".join([*source.lines[: at - 1], block, *source.lines[at - 1 :]])


def _ensure_newline_before(source: SourceMap, at: int) -> str:
    if at > 1 and not source.lines[at - 2].endswith("\n"):
        return "\n"
    return ""


def _attached_start(source: SourceMap, header_line: int) -> int:
    """The first of the comment lines directly above a header (no blank line between)."""
    floor = max((t.last_line for t in source.tables if t.last_line < header_line), default=0)
    start = header_line
    while start - 1 > floor and source.lines[start - 2].lstrip().startswith("#"):
        start -= 1
    return start


def _block_end(source: SourceMap, table: Table) -> int:
    """The line after a table's block: where the next table's attached comments begin."""
    assert table.header_line is not None
    later = [t.header_line for t in source.tables if (t.header_line or 0) > table.header_line]
    headers = [line for line in later if line is not None]
    if not headers:
        return len(source.lines) + 1
    return _attached_start(source, min(headers))


def _blank_separator(source: SourceMap, at: int) -> str:
    """A blank line before line `at`, unless it starts the file or follows a blank line."""
    if at == 1 or not source.lines[at - 2].strip():
        return ""
    return "\n"


def _render(value: object) -> str:
    import tomlkit  # only edits need it: the daemon's start does not pay its import

    rendered: str = tomlkit.item(_plain(value)).as_string()
    return rendered


def _plain(value: object) -> Any:
    """Config values as TOML values: enums by value, addresses and prefixes as text."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Secret):
        return value.value.decode("utf-8")
    if isinstance(value, FloatLink):
        return value.toml_value()
    if isinstance(
        value,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Interface
        | ipaddress.IPv4Network,
    ):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value
