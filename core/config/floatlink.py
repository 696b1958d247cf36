"""The `float_link` table of a peer, its TSIG key file, and the rules it adds.

A float link publishes this node's outer address as `<node>.<zone>` and looks up the peer's as
`<peer_node>.<zone>`, at one authoritative DNS server, with RFC 2136 UPDATEs and queries
signed by a TSIG key (RFC 8945).  The key file is BIND's format, as `tsig-keygen` writes it:

    key "branch1-key" {
        algorithm hmac-sha256;
        secret "base64...";
    };

The converter checks the table on its own; `check_float_link` then reads the key file (its
path is relative to the config file) and checks how the table fits the peer's other keys.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import fields as f
from core.config.schema import (
    DYNAMIC,
    FLOAT,
    ExchangeMode,
    FloatFamily,
    FloatLink,
    IPAddress,
    SaMode,
    Secret,
    TsigKey,
)
from core.config.source import KeyPath
from core.errors import RbipsecError

INTERVAL_RANGE = (10, 86400)
MAX_TTL = 7 * 86400
TSIG_ALGORITHMS = ("hmac-sha256",)
MIN_SECRET_BYTES = 16
REQUIRED_KEYS = ("zone", "node", "peer_node", "server", "tsig_key_file")
OPTIONAL_KEYS = ("interval", "ttl", "port", "family")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class FloatLinkFields:
    """A float_link table checked on its own; the key file is read later (it needs the
    config file's directory)."""

    zone: str
    node: str
    peer_node: str
    server: IPAddress
    tsig_key_file: str
    interval: int = 300
    ttl: int = 900
    port: int = 53
    family: FloatFamily | None = None  # None: not written


def float_link(value: Any) -> FloatLinkFields:
    """The `float_link` converter: every problem of the table at once."""
    if not isinstance(value, dict):
        raise f.problem(
            f"must be a table like {{ zone = ..., node = ... }}, not {f.toml_type(value)}"
        )
    converters = {
        "zone": _zone,
        "node": _label,
        "peer_node": _label,
        "server": _server,
        "tsig_key_file": f.path_text,
        "interval": f.integer_in(*INTERVAL_RANGE, " seconds"),
        "ttl": f.integer_in(INTERVAL_RANGE[0], MAX_TTL, " seconds"),
        "port": f.integer_in(1, 65535),
        "family": f.choice(FloatFamily),
    }
    found: list[tuple[KeyPath, str]] = []
    values: dict[str, Any] = {}
    for key, raw in value.items():
        convert = converters.get(key)
        if convert is None:
            found.append(((key,), f"unknown key ({_known_keys()})"))
            continue
        try:
            values[key] = convert(raw)
        except f.FieldProblem as error:
            found.extend(((key, *subpath), message) for subpath, message in error.problems)
    for key in REQUIRED_KEYS:
        if key not in value:
            found.append(((key,), "missing (required)"))
    if "node" in values and values["node"] == values.get("peer_node"):
        found.append((("peer_node",), "must differ from node (the peer has its own name)"))
    interval, ttl = values.get("interval", 300), values.get("ttl", 900)
    if "interval" in value and "ttl" in value and ttl < interval:
        found.append((("ttl",), f"{ttl} is shorter than interval {interval}: records would "
                      "expire from caches between refreshes"))  # fmt: skip
    elif "interval" in values and "ttl" not in value and interval > ttl:
        found.append((("ttl",), f"missing: the default 900 is shorter than interval {interval}"))
    if found:
        raise f.FieldProblem(*found)
    return FloatLinkFields(**values)


def _known_keys() -> str:
    return "known: " + ", ".join((*REQUIRED_KEYS, *OPTIONAL_KEYS))


def _zone(value: Any) -> str:
    text = f.string(value)
    if not text.endswith("."):
        raise f.problem(f"{f.show(text)} must be an absolute name ending with a dot, like "
                        '"vpn.example."')  # fmt: skip
    labels = text[:-1].split(".")
    if text == "." or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise f.problem(f"{f.show(text)} is not a valid DNS zone name")
    return text.lower()


def _label(value: Any) -> str:
    text = f.string(value)
    if not _LABEL.fullmatch(text):
        raise f.problem(
            f"{f.show(text)} must be one DNS label: 1..63 letters, digits and '-', "
            "not starting or ending with '-'"
        )
    return text.lower()


def _server(value: Any) -> IPAddress:
    text = f.string(value)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise f.problem(f"{f.show(text)} must be the DNS server's IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise f.problem(f"{f.show(text)} is not a usable unicast address")
    return address


# -- the key file ---------------------------------------------------------------------

_TOKEN = re.compile(r'\s+|#[^\n]*|//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[{};]|[^\s{};"]+', re.S)


class TsigKeyError(RbipsecError):
    """A TSIG key file that cannot be used; the message says why."""


def read_tsig_key_file(file: Path) -> TsigKey:
    """Reads a BIND-style key file that only its owner may read (one key in it)."""
    from core.config.rules import read_private_file

    try:
        data = read_private_file(file)
    except ValueError as error:
        raise TsigKeyError(str(error)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TsigKeyError(f"{f.show(str(file))} is not a text file") from None
    try:
        return parse_tsig_key(text)
    except TsigKeyError as error:
        raise TsigKeyError(f"{f.show(str(file))}: {error}") from None


def parse_tsig_key(text: str) -> TsigKey:
    """The key of `key "NAME" { algorithm ALG; secret "BASE64"; };`."""
    tokens = _tokens(text)
    if len(tokens) < 4 or tokens[0] != "key" or tokens[2] != "{":
        raise TsigKeyError(
            'expected a BIND key statement: key "NAME" { algorithm ...; secret ...; };'
        )
    name = tokens[1].strip('"')
    settings: dict[str, str] = {}
    index = 3
    while index < len(tokens) and tokens[index] != "}":
        statement = tokens[index : index + 3]
        if len(statement) < 3 or statement[2] != ";":
            raise TsigKeyError(f"expected '{statement[0]} VALUE;' in the key statement")
        settings[statement[0]] = statement[1].strip('"')
        index += 3
    if tokens[index:] not in (["}", ";"], ["}"]):
        raise TsigKeyError("expected one key statement ending with '};'")
    if not name or not all(_key_label(label) for label in name.rstrip(".").split(".")):
        raise TsigKeyError(f"{f.show(name)} is not a valid key name")
    algorithm = settings.get("algorithm", "").lower().rstrip(".")
    if algorithm not in TSIG_ALGORITHMS:
        allowed = ", ".join(TSIG_ALGORITHMS)
        raise TsigKeyError(f"algorithm {f.show(algorithm)} is not supported (use {allowed})")
    if "secret" not in settings:
        raise TsigKeyError("the key statement has no secret")
    try:
        secret = base64.b64decode(settings["secret"], validate=True)
    except (binascii.Error, ValueError):
        raise TsigKeyError("the secret is not base64") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise TsigKeyError(f"the secret has {len(secret)} bytes; use at least {MIN_SECRET_BYTES}")
    return TsigKey(name=name.rstrip(".").lower() + ".", algorithm=algorithm, secret=Secret(secret))


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise TsigKeyError(f"unreadable text near {text[position : position + 10]!r}")
        token = match.group()
        position = match.end()
        if token.strip() and not token.startswith(("#", "//", "/*")):
            tokens.append(token)
    return tokens


def _key_label(label: str) -> bool:
    return 0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) and label.isascii()


# -- rules between float_link and the peer's other keys --------------------------------

AddProblem = Callable[[KeyPath, str], None]


def float_defaults(table: Mapping[str, Any]) -> dict[str, object]:
    """The addresses a peer with a float_link gets for keys it leaves out."""
    if "float_link" not in table:
        return {}
    return {key: FLOAT for key in ("local_address", "remote_address") if key not in table}


def check_float_link(
    path: KeyPath, table: Mapping[str, Any], values: dict[str, Any], add: AddProblem,
    base_dir: Path,
) -> None:  # fmt: skip
    """Checks the addresses against the float link and turns its fields into a FloatLink
    (reading the key file); drops `float_link` from `values` when it is unusable."""
    fields = values.get("float_link")
    local, remote = values.get("local_address"), values.get("remote_address")
    if fields is None and "float_link" in table:
        return  # its problems are reported already
    if fields is None:
        for key, address in (("local_address", local), ("remote_address", remote)):
            if address is FLOAT:
                add((*path, key), '"float" needs a float_link table (the address is kept in DNS)')
        return
    assert isinstance(fields, FloatLinkFields)
    here: KeyPath = (*path, "float_link")
    if isinstance(remote, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
        add(
            (*path, "remote_address"),
            f"with float_link the peer's address comes from DNS ({fields.peer_node}."
            f'{fields.zone}): write "float" or leave the key out ("dynamic" if the peer sits '
            "behind NAT and finds us)",
        )
    if values.get("mode") is SaMode.TRANSPORT:
        add((*path, "mode"), "transport mode is not available with float_link (use tunnel)")
    dynamic = DYNAMIC in (local, remote)  # the general rule already reports that case
    main_mode = values.get("exchange_mode") is ExchangeMode.MAIN
    if values.get("ike_version") == 1 and main_mode and not dynamic:
        add(
            (*path, "exchange_mode"),
            'IKEv1 with float_link needs "aggressive" (main mode identifies the peer by '
            "its IP address, which changes)",
        )
    family = fields.family
    if isinstance(local, ipaddress.IPv4Address | ipaddress.IPv6Address):
        local_family = FloatFamily.IPV4 if local.version == 4 else FloatFamily.IPV6
        if family is not None and family is not local_family:
            add((*here, "family"), f'is "{family}" but local_address {local} is IPv{local.version}')
        family = local_family
    try:
        tsig_key = read_tsig_key_file(Path(base_dir, fields.tsig_key_file))
    except TsigKeyError as error:
        add((*here, "tsig_key_file"), str(error))
        del values["float_link"]
        return
    values["float_link"] = FloatLink(
        zone=fields.zone,
        node=fields.node,
        peer_node=fields.peer_node,
        server=fields.server,
        tsig_key_file=fields.tsig_key_file,
        tsig_key=tsig_key,
        interval=fields.interval,
        ttl=fields.ttl,
        port=fields.port,
        family=family or FloatFamily.IPV4,
    )
