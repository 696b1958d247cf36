"""Reading config.toml: every problem at once, each as `FILE:LINE: key.path: message`."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.config import fields as f
from core.config.floatlink import check_float_link, float_defaults, float_link
from core.config.rules import check_peer_rules, ikev1_default_ike_proposals, read_secret
from core.config.schema import (
    DEFAULT_IKE_PROPOSALS,
    MAX_PEERS,
    Config,
    DataplaneChoice,
    ExchangeMode,
    GlobalSettings,
    LogLevel,
    NatTraversal,
    PeerConfig,
    SaMode,
)
from core.config.source import KeyPath, SourceMap, scan
from core.errors import ConfigError

GLOBAL_KEYS: dict[str, Callable[[Any], object]] = {
    "enabled": f.boolean,
    "dataplane": f.choice(DataplaneChoice),
    "unnumbered_source": f.interface_name,
    "socket": f.absolute_path,
    "log_level": f.choice(LogLevel),
}

PEER_KEYS: dict[str, Callable[[Any], object]] = {
    "name": f.name,
    "interface": f.interface,
    "enabled": f.boolean,
    "ike_version": f.ike_version,
    "exchange_mode": f.choice(ExchangeMode),
    "local_address": f.local_address,
    "remote_address": f.remote_address,
    "local_id": f.identity,
    "remote_id": f.identity,
    "psk": f.psk,
    "psk_file": f.path_text,
    "mode": f.choice(SaMode),
    "ike_proposals": f.ike_proposals,
    "esp_proposals": f.esp_proposals,
    "ike_lifetime": f.integer_in(*f.LIFETIME_RANGE, " seconds"),
    "child_lifetime": f.integer_in(*f.LIFETIME_RANGE, " seconds"),
    "dpd_interval": f.integer_in(*f.DPD_INTERVAL_RANGE, " seconds"),
    "dpd_retries": f.integer_in(*f.DPD_RETRIES_RANGE),
    "nat_traversal": f.choice(NatTraversal),
    "passive": f.boolean,
    "address": f.interface_address,
    "mtu": f.integer_in(*f.MTU_RANGE),
    "tcp_mss": f.tcp_mss,
    "routes": f.routes,
    "float_link": float_link,
}

REQUIRED_PEER_KEYS = ("name", "interface", "local_address", "remote_address")

_PEER_DEFAULTS: dict[str, object] = {
    field.name: field.default
    for field in dataclasses.fields(PeerConfig)
    if field.default is not dataclasses.MISSING
}

_SYNTAX_POSITION = re.compile(
    r"^(?P<message>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$"
)


def load(path: str | os.PathLike[str]) -> Config:
    """Reads and validates a config file; raises ConfigError listing every problem."""
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as error:
        raise ConfigError([f"{name}: cannot read: {error.strerror or error}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError([f"{name}:{line}: syntax error: not UTF-8 text"]) from None
    return load_text(text, name)


def load_text(
    text: str, path_for_messages: str = "config.toml", base_dir: Path | None = None
) -> Config:
    """Validates config text; relative psk_file paths resolve against `base_dir` (default: the
    directory of `path_for_messages`)."""
    if base_dir is None:
        base_dir = Path(path_for_messages).parent
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([syntax_problem(path_for_messages, text, str(error))]) from None
    problems = Problems(path_for_messages, scan(text))
    config = _build(document, problems, base_dir)
    if problems.items or config is None:
        raise ConfigError(problems.lines())
    return config


def validate_text(text: str, name: str = "config.toml", base_dir: Path | None = None) -> list[str]:
    """The problem lines of a config text; empty when it is valid."""
    try:
        load_text(text, name, base_dir)
    except ConfigError as error:
        return list(error.problems)
    return []


def syntax_problem(name: str, text: str, message: str) -> str:
    match = _SYNTAX_POSITION.match(message)
    if match:
        return (
            f"{name}:{match['line']}: syntax error: {match['message']} (column {match['column']})"
        )
    if message.endswith(" (at end of document)"):
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        reason = message.removesuffix(" (at end of document)")
        return f"{name}:{max(line, 1)}: syntax error: {reason}"
    return f"{name}:1: syntax error: {message}"


def dotted(path: KeyPath) -> str:
    """("peer", 1, "routes", 0) -> "peer[1].routes[0]"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


class Problems:
    """Collects (key path, message) pairs and renders them with their line numbers."""

    def __init__(self, name: str, source: SourceMap) -> None:
        self.name = name
        self.source = source
        self.items: list[tuple[KeyPath, str]] = []

    def add(self, path: KeyPath, message: str) -> None:
        self.items.append((path, message))

    def lines(self) -> list[str]:
        located = [(self.source.line_of(path), path, message) for path, message in self.items]
        located.sort(key=lambda item: item[0])  # stable: same line keeps the order found
        return [f"{self.name}:{line}: {dotted(path)}: {message}" for line, path, message in located]


def _convert(
    table: Mapping[str, Any],
    converters: Mapping[str, Callable[[Any], object]],
    path: KeyPath,
    problems: Problems,
) -> dict[str, object]:
    """Converts every known key; records unknown keys and bad values; returns the good ones."""
    values: dict[str, object] = {}
    for key, raw in table.items():
        convert = converters.get(key)
        if convert is None:
            close = difflib.get_close_matches(key, list(converters), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.add((*path, key), f"unknown key{hint}")
            continue
        try:
            values[key] = convert(raw)
        except f.FieldProblem as error:
            for subpath, message in error.problems:
                problems.add((*path, key, *subpath), message)
    return values


def _build(document: dict[str, Any], problems: Problems, base_dir: Path) -> Config | None:
    for key in document:
        if key not in ("global", "peer"):
            problems.add((key,), "unknown key (expected the [global] table and [[peer]] tables)")
    settings = _check_global(document.get("global", {}), problems)
    raw_peers = document.get("peer", [])
    if not isinstance(raw_peers, list):
        problems.add(("peer",), "must be an array of tables ([[peer]])")
        raw_peers = []
    checked = [_check_peer(index, raw, problems, base_dir) for index, raw in enumerate(raw_peers)]
    _check_peer_set([values for values, _peer in checked], problems)
    peers = [peer for _values, peer in checked if peer is not None]
    if settings is None or len(peers) != len(checked):
        return None
    return Config(path=problems.name, global_=settings, peers=tuple(peers))


def _check_global(table: Any, problems: Problems) -> GlobalSettings | None:
    if not isinstance(table, dict):
        problems.add(("global",), "must be a table ([global])")
        return None
    values = _convert(table, GLOBAL_KEYS, ("global",), problems)
    if len(values) != len(table):
        return None
    return GlobalSettings(**values)  # type: ignore[arg-type]


def _check_peer(
    index: int, table: Any, problems: Problems, base_dir: Path
) -> tuple[dict[str, object], PeerConfig | None]:
    """Returns the peer's effective values (defaults filled in, bad keys left out) and the
    PeerConfig when the peer has no problem of its own."""
    path: KeyPath = ("peer", index)
    if not isinstance(table, dict):
        problems.add(path, "must be a table ([[peer]])")
        return {}, None
    found_before = len(problems.items)
    values = _convert(table, PEER_KEYS, path, problems)
    defaults = _PEER_DEFAULTS | float_defaults(table)
    for key in REQUIRED_PEER_KEYS:
        if key not in table and key not in defaults:
            problems.add((*path, key), "missing (required)")
    effective = {key: value for key, value in defaults.items() if key not in table}
    effective.update(values)
    check_float_link(path, table, effective, problems.add, base_dir)
    if effective.get("ike_version") == 1 and "ike_proposals" not in table:
        effective["ike_proposals"] = ikev1_default_ike_proposals(DEFAULT_IKE_PROPOSALS)
    check_peer_rules(path, effective, problems.add)
    secret = read_secret(path, table, effective, problems.add, base_dir)
    if len(problems.items) != found_before or secret is None:
        return effective, None
    effective.pop("psk", None)
    return effective, PeerConfig(psk=secret, **effective)  # type: ignore[arg-type]


def _check_peer_set(peers: list[dict[str, object]], problems: Problems) -> None:
    """Rules across peers: unique names, interfaces and routes; at most 64 peers."""
    if len(peers) > MAX_PEERS:
        problems.add(
            ("peer", MAX_PEERS),
            f"more than {MAX_PEERS} peers (one interface each, ipsec0..ipsec63)",
        )
    owners: dict[tuple[str, object], int] = {}
    labels = [
        f'peer "{values["name"]}"' if "name" in values else f"peer[{index}]"
        for index, values in enumerate(peers)
    ]
    for index, values in enumerate(peers):
        for key in ("name", "interface"):
            if key not in values:
                continue
            owner = owners.setdefault((key, values[key]), index)
            if owner != index:
                message = f"{f.show(values[key])} is already used by {labels[owner]}"
                problems.add(("peer", index, key), message)
        routes = values.get("routes", ())
        assert isinstance(routes, tuple)
        for route_index, route in enumerate(routes):
            owner = owners.setdefault(("route", route), index)
            if owner != index:
                message = f"{route} is already routed to {labels[owner]}"
                problems.add(("peer", index, "routes", route_index), message)
