"""Converters from TOML values to config values, one per key kind.

Each converter returns the parsed value or raises `FieldProblem` carrying one or more
(sub-path, message) pairs, so that a list with three bad elements reports all three.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeVar

from core.config.schema import (
    DYNAMIC,
    FLOAT,
    Dynamic,
    Float,
    IPAddress,
    TcpMss,
    parse_identity,
)
from core.config.source import KeyPath
from core.crypto.proposals import ProposalError, parse_esp_proposal, parse_ike_proposal

NAME_PATTERN = re.compile(r"[a-z0-9_-]+")
INTERFACE_PATTERN = re.compile(r"ipsec(0|[1-9][0-9]?)")
MAX_NAME_LENGTH = 32
MTU_RANGE = (576, 9000)
MSS_RANGE = (536, 9000)
LIFETIME_RANGE = (60, 365 * 86400)
DPD_INTERVAL_RANGE = (0, 86400)
DPD_RETRIES_RANGE = (0, 100)

_E = TypeVar("_E", bound=enum.Enum)


class FieldProblem(Exception):
    """One or more problems found in one value: (path below the key, message) pairs."""

    def __init__(self, *problems: tuple[KeyPath, str]) -> None:
        super().__init__("; ".join(message for _path, message in problems))
        self.problems = problems


def problem(message: str, subpath: KeyPath = ()) -> FieldProblem:
    return FieldProblem((subpath, message))


def show(value: object) -> str:
    """A value as it would be written in TOML, for messages."""
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise problem(f"must be a string, not {toml_type(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise problem(f"must be true or false, not {toml_type(value)}")
    return value


def integer(value: Any, low: int, high: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise problem(f"must be an integer, not {toml_type(value)}")
    if not low <= value <= high:
        raise problem(f"{value} is out of range {low}..{high}{unit}")
    return value


def integer_in(low: int, high: int, unit: str = "") -> Callable[[Any], int]:
    return lambda value: integer(value, low, high, unit)


def choice(enum_type: type[_E]) -> Callable[[Any], _E]:
    def convert(value: Any) -> _E:
        text = string(value)
        for member in enum_type:
            if member.value == text:
                return member
        allowed = ", ".join(show(member.value) for member in enum_type)
        raise problem(f"must be one of {allowed}, not {show(text)}")

    return convert


def name(value: Any) -> str:
    text = string(value)
    if not NAME_PATTERN.fullmatch(text) or len(text) > MAX_NAME_LENGTH:
        raise problem(
            f"{show(text)} must be 1..{MAX_NAME_LENGTH} characters of a-z, 0-9, '_' and '-'"
        )
    return text


def interface(value: Any) -> str:
    text = string(value)
    match = INTERFACE_PATTERN.fullmatch(text)
    if match is None or int(match.group(1)) > 63:
        raise problem(f"{show(text)} must be ipsec0 .. ipsec63")
    return text


def ike_version(value: Any) -> int:
    if isinstance(value, bool) or value not in (1, 2):
        raise problem(f"must be 1 or 2, not {show(value)}")
    result: int = value
    return result


def _fixed_address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text)
    if address.is_unspecified or address.is_multicast:
        raise problem(f"{show(text)} is not a usable unicast address")
    return address


def local_address(value: Any) -> IPAddress | Dynamic | Float:
    text = string(value)
    if text == DYNAMIC.value:
        return DYNAMIC
    if text == FLOAT.value:
        return FLOAT
    try:
        return _fixed_address(text)
    except ValueError:
        raise problem(f'{show(text)} must be an IP address, "dynamic" or "float"') from None


def remote_address(value: Any) -> IPAddress | str | Dynamic | Float:
    text = string(value)
    if text == DYNAMIC.value:
        return DYNAMIC
    if text == FLOAT.value:
        return FLOAT
    try:
        return _fixed_address(text)
    except ValueError:
        pass
    if not _is_hostname(text):
        raise problem(f'{show(text)} must be an IP address, a host name, "dynamic" or "float"')
    return text


def _is_hostname(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    label = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
    return 0 < len(text) <= 253 and all(label.fullmatch(part) for part in labels)


def identity(value: Any) -> str:
    text = string(value)
    if text:
        try:
            parse_identity(text)
        except ValueError as error:
            raise problem(str(error)) from None
    return text


def psk(value: Any) -> str:
    text = string(value)
    if not text:
        raise problem("must not be empty")
    return text


def path_text(value: Any) -> str:
    text = string(value)
    if not text:
        raise problem("must not be empty")
    return text


def _proposals(value: Any, parse: Callable[[str], object]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise problem(f"must be an array of proposal strings, not {toml_type(value)}")
    if not value:
        raise problem("must list at least one proposal")
    found: list[tuple[KeyPath, str]] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            found.append(((index,), f"must be a string, not {toml_type(item)}"))
            continue
        try:
            parse(item)
        except ProposalError as error:
            found.append(((index,), str(error)))
    if found:
        raise FieldProblem(*found)
    return tuple(value)


def ike_proposals(value: Any) -> tuple[str, ...]:
    return _proposals(value, parse_ike_proposal)


def esp_proposals(value: Any) -> tuple[str, ...]:
    return _proposals(value, parse_esp_proposal)


def interface_address(value: Any) -> ipaddress.IPv4Interface | None:
    text = string(value)
    if not text:
        return None
    try:
        parsed = ipaddress.ip_interface(text)
    except ValueError:
        raise problem(f"{show(text)} is not an address with prefix, like 10.255.1.1/30") from None
    if not isinstance(parsed, ipaddress.IPv4Interface):
        raise problem(f"{show(text)}: the interface carries IPv4 only (IPv6 is not forwarded)")
    network = parsed.network
    if network.prefixlen <= 30 and parsed.ip in (
        network.network_address,
        network.broadcast_address,
    ):
        raise problem(f"{show(text)} is not a host address of {network}")
    return parsed


def routes(value: Any) -> tuple[ipaddress.IPv4Network, ...]:
    if not isinstance(value, list):
        raise problem(f"must be an array of IPv4 prefixes, not {toml_type(value)}")
    found: list[tuple[KeyPath, str]] = []
    parsed: list[ipaddress.IPv4Network] = []
    for index, item in enumerate(value):
        try:
            route = _route(item)
        except FieldProblem as error:
            found.extend(((index, *subpath), message) for subpath, message in error.problems)
            continue
        if route in parsed:
            found.append(((index,), f"{route} is listed twice"))
        parsed.append(route)
    if found:
        raise FieldProblem(*found)
    return tuple(parsed)


def _route(item: Any) -> ipaddress.IPv4Network:
    text = string(item)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise problem(f"{show(text)} is not a prefix like 10.2.0.0/24") from None
    if network.version != 4:
        raise problem(f"{show(text)}: only IPv4 is routed through the interface")
    if network.network_address != ipaddress.ip_interface(text).ip:
        raise problem(f"{show(text)} has host bits set (did you mean {network}?)")
    assert isinstance(network, ipaddress.IPv4Network)
    return network


def tcp_mss(value: Any) -> int | TcpMss:
    if isinstance(value, str):
        for member in TcpMss:
            if member.value == value:
                return member
    elif isinstance(value, int) and not isinstance(value, bool):
        return integer(value, *MSS_RANGE)
    low, high = MSS_RANGE
    raise problem(f'must be "auto", "off" or an integer {low}..{high}, not {show(value)}')


def interface_name(value: Any) -> str:
    """A Linux interface name, or "" for the default-route interface."""
    text = string(value)
    if text and (len(text) > 15 or any(char in text for char in "/: \t") or text in (".", "..")):
        raise problem(f"{show(text)} is not a valid interface name")
    return text


def absolute_path(value: Any) -> str:
    text = string(value)
    if not text.startswith("/"):
        raise problem(f"{show(text)} must be an absolute path")
    return text
