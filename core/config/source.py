"""Where things are in a TOML source text: line numbers for problems, spans for edits.

tomllib gives values without positions and tomlkit attaches a comment above a table header to
the table before it, so this small scanner reads the text itself.  It understands what valid
TOML can contain (quoted and dotted keys, multi-line strings and arrays, comments) well enough
to find every table header and every `key = value` with the exact span of its value.  It is
only ever run on text that tomllib has accepted.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

PathPart = str | int
KeyPath = tuple[PathPart, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 0-based offset into the line


@dataclass
class Entry:
    """One `key = value` line (the value may span several lines)."""

    key: tuple[str, ...]  # the dotted key as written, relative to its table
    path: KeyPath  # the full path, array-of-tables elements as indexes
    line: int  # line of the key
    value_start: Position
    value_end: Position  # just after the value's last character

    @property
    def end_line(self) -> int:
        return self.value_end.line


@dataclass
class Table:
    """The root table, a [table] or one [[array]] element, with the entries under its header."""

    path: KeyPath
    header_line: int | None  # None for the root table
    is_array_element: bool
    entries: list[Entry] = field(default_factory=list)

    @property
    def last_line(self) -> int:
        """The last line holding the header or a value of this table (0 for an empty root)."""
        if self.entries:
            return self.entries[-1].end_line
        return self.header_line or 0


@dataclass
class SourceMap:
    lines: list[str]  # the source lines, line endings kept
    tables: list[Table]

    def line_of(self, path: KeyPath) -> int:
        """The line of the longest prefix of `path` that appears in the text (1 if none)."""
        known: dict[KeyPath, int] = {}
        for table in self.tables:
            if table.header_line is not None:
                known.setdefault(table.path, table.header_line)
            for entry in table.entries:
                for length in range(len(table.path) + 1, len(entry.path) + 1):
                    known.setdefault(entry.path[:length], entry.line)
        for length in range(len(path), 0, -1):
            if path[:length] in known:
                return known[path[:length]]
        return 1

    def array_elements(self, name: str) -> list[Table]:
        """The [[name]] tables of a top-level array of tables, in order."""
        return [
            table
            for table in self.tables
            if table.is_array_element and len(table.path) == 2 and table.path[0] == name
        ]

    def table(self, path: KeyPath) -> Table | None:
        for table in self.tables:
            if table.path == path:
                return table
        return None


def scan(text: str) -> SourceMap:
    """Maps a TOML text that tomllib accepted."""
    return _Scanner(text).run()


class _Scanner:
    def __init__(self, text: str) -> None:
        self.lines = _split_lines(text)
        self.root = Table(path=(), header_line=None, is_array_element=False)
        self.tables = [self.root]
        self.array_counts: dict[tuple[str, ...], int] = {}
        self.open_string: str | None = None  # '"""' or "'''" while inside one
        self.depth = 0  # open [ and { of the current value
        self.entry: Entry | None = None  # the entry whose value is still open

    def run(self) -> SourceMap:
        for number, line in enumerate(self.lines, start=1):
            if self.entry is not None:
                self._scan_value(number, line, 0)
            else:
                self._scan_statement(number, line)
        return SourceMap(lines=self.lines, tables=self.tables)

    def _scan_statement(self, number: int, line: str) -> None:
        column = _skip_space(line, 0)
        if column >= len(line) or line[column] in "#\r\n":
            return
        if line.startswith("[[", column):
            names, _end = _read_key(line, column + 2)
            self.array_counts[names] = self.array_counts.get(names, 0) + 1
            self.tables.append(Table(self._resolve(names), number, is_array_element=True))
            return
        if line[column] == "[":
            names, _end = _read_key(line, column + 1)
            self.tables.append(Table(self._resolve(names), number, is_array_element=False))
            return
        key, column = _read_key(line, column)
        column = _skip_space(line, column)
        if column < len(line) and line[column] == "=":
            column = _skip_space(line, column + 1)
        table = self.tables[-1]
        start = Position(number, column)
        self.entry = Entry(key, table.path + key, number, start, start)
        table.entries.append(self.entry)
        self._scan_value(number, line, column)

    def _resolve(self, names: tuple[str, ...]) -> KeyPath:
        """Inserts the current element index after every array-of-tables name in a header."""
        path: list[PathPart] = []
        for length in range(1, len(names) + 1):
            path.append(names[length - 1])
            count = self.array_counts.get(names[:length])
            if count:
                path.append(count - 1)
        return tuple(path)

    def _scan_value(self, number: int, line: str, column: int) -> None:
        assert self.entry is not None
        end = self.entry.value_end
        index = column
        while index < len(line):
            char = line[index]
            if self.open_string is not None:
                index = self._inside_multiline(line, index)
                end = Position(number, index)
                continue
            if char == "#":
                break
            if char in "\"'":
                index = self._string(line, index)
            elif char in "[{":
                self.depth += 1
                index += 1
            elif char in "]}":
                self.depth -= 1
                index += 1
            else:
                index += 1
                if char.isspace():
                    continue
            end = Position(number, index)
        self.entry.value_end = end
        if self.open_string is None and self.depth <= 0:
            self.entry = None
            self.depth = 0

    def _string(self, line: str, index: int) -> int:
        """Skips a string starting at `index`; returns the index after it."""
        quote = line[index]
        if line.startswith(quote * 3, index):
            self.open_string = quote * 3
            return index + 3
        index += 1
        while index < len(line) and line[index] != quote:
            index += 2 if quote == '"' and line[index] == "\\" else 1
        return index + 1

    def _inside_multiline(self, line: str, index: int) -> int:
        """Advances inside a multi-line string; closes it when its delimiter comes."""
        assert self.open_string is not None
        delimiter = self.open_string
        while index < len(line):
            if delimiter[0] == '"' and line[index] == "\\":
                index += 2
                continue
            if line.startswith(delimiter, index):
                index += 3
                # Up to two quotes right before the delimiter belong to the content.
                extra = 0
                while extra < 2 and index < len(line) and line[index] == delimiter[0]:
                    index += 1
                    extra += 1
                self.open_string = None
                return index
            index += 1
        return index


def _split_lines(text: str) -> list[str]:
    """Lines ending in "\n" only: TOML has no other line breaks (str.splitlines has many)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _skip_space(line: str, index: int) -> int:
    while index < len(line) and line[index] in " \t":
        index += 1
    return index


def _read_key(line: str, index: int) -> tuple[tuple[str, ...], int]:
    """Reads a (dotted, possibly quoted) key; returns its parts and the index after it."""
    parts: list[str] = []
    while True:
        index = _skip_space(line, index)
        if index < len(line) and line[index] in "\"'":
            quote = line[index]
            close = index + 1
            while close < len(line) and line[close] != quote:
                close += 2 if quote == '"' and line[close] == "\\" else 1
            quoted = line[index : close + 1]
            parts.append(_unescape(quoted) if quote == '"' else quoted[1:-1])
            index = close + 1
        else:
            start = index
            while index < len(line) and line[index] in _BARE_KEY_CHARS:
                index += 1
            parts.append(line[start:index])
        index = _skip_space(line, index)
        if index < len(line) and line[index] == ".":
            index += 1
            continue
        return tuple(parts), index


def _unescape(quoted: str) -> str:
    """The text of a basic-string key such as "a\\"b" (tomllib applies TOML's escapes)."""
    try:
        return next(iter(tomllib.loads(f"{quoted} = 0")))
    except (tomllib.TOMLDecodeError, StopIteration):
        return quoted[1:-1]
