"""The TOML source scanner: lines of keys and headers, exact spans of values."""

from __future__ import annotations

import tomllib
from typing import Any

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config.source import SourceMap, scan

TRICKY = '''\
# comment with [[peer]] and key = 1
top = 1
[global]
enabled = false   # off
"quoted.key" = 'x # not a comment'
a.b = """
[[peer]]
multi = "line"
""""  # ends with a quote
[[peer]]
name = "a"
routes = [
  "10.0.0.0/24",  # first ]
  "10.1.0.0/24",
]   # tail
mtu=1400
[peer.extra]
k = {x = 1, y = [2]}
[[peer]]
name = "b"
'''


def value_text(source: SourceMap, path: tuple[Any, ...]) -> str:
    for table in source.tables:
        for entry in table.entries:
            if entry.path == path:
                start, end = entry.value_start, entry.value_end
                text = "".join(source.lines[start.line - 1 : end.line])
                offset = len("".join(source.lines[start.line - 1 : end.line - 1]))
                return text[start.column : offset + end.column]
    raise KeyError(path)


def test_headers_and_keys_are_found_with_their_lines() -> None:
    source = scan(TRICKY)
    assert [(table.path, table.header_line) for table in source.tables] == [
        ((), None),
        (("global",), 3),
        (("peer", 0), 10),
        (("peer", 0, "extra"), 17),
        (("peer", 1), 19),
    ]
    assert source.line_of(("top",)) == 2
    assert source.line_of(("global", "quoted.key")) == 5
    assert source.line_of(("global", "a", "b")) == 6
    assert source.line_of(("peer", 0, "mtu")) == 16
    assert source.line_of(("peer", 0, "routes", 1)) == 12
    assert source.line_of(("peer", 0, "extra", "k", "y")) == 18
    assert source.line_of(("peer", 1, "name")) == 20
    assert source.line_of(("peer", 1, "absent")) == 19  # falls back to the header
    assert source.line_of(("nowhere",)) == 1


def test_value_spans_are_exact() -> None:
    source = scan(TRICKY)
    assert value_text(source, ("global", "enabled")) == "false"
    assert value_text(source, ("global", "quoted.key")) == "'x # not a comment'"
    assert value_text(source, ("global", "a", "b")) == '"""\n[[peer]]\nmulti = "line"\n""""'
    assert value_text(source, ("peer", 0, "routes")).endswith('"10.1.0.0/24",\n]')
    assert value_text(source, ("peer", 0, "extra", "k")) == "{x = 1, y = [2]}"
    assert [table.path for table in source.array_elements("peer")] == [("peer", 0), ("peer", 1)]


def test_scan_matches_tomllib_on_the_tricky_text() -> None:
    document = tomllib.loads(TRICKY)
    source = scan(TRICKY)
    for table in source.tables:
        for entry in table.entries:
            reparsed = tomllib.loads("v = " + value_text(source, entry.path))["v"]
            expected: Any = document
            for part in entry.path:
                expected = expected[part]
            assert reparsed == expected


scalars = (
    st.text(max_size=12)
    | st.integers(-(2**40), 2**40)
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
keys = st.text(alphabet="abcxyz_-.# \"'=[]", min_size=1, max_size=6)
tables = st.dictionaries(keys, values, max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, tables, max_size=3), st.lists(tables, max_size=3), st.booleans())
def test_every_value_span_reparses_to_its_value(
    named: dict[str, dict[str, Any]], peers: list[dict[str, Any]], multiline: bool
) -> None:
    document: dict[str, Any] = {**named}
    if peers:
        document["peer"] = peers
    text = tomli_w.dumps(document, multiline_strings=multiline)
    source = scan(text)
    parsed = tomllib.loads(text)
    found: set[tuple[Any, ...]] = set()
    for table in source.tables:
        for entry in table.entries:
            expected: Any = parsed
            for part in entry.path:
                expected = expected[part]
            assert tomllib.loads("v = " + value_text(source, entry.path))["v"] == expected
            found.add(entry.path)
    wanted: set[tuple[Any, ...]] = {(name, key) for name, table in named.items() for key in table}
    if "[[peer]]" in text:  # tomli-w writes arrays of empty tables inline
        wanted |= {("peer", index, key) for index, peer in enumerate(peers) for key in peer}
    assert wanted <= found
