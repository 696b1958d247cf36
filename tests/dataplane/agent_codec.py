"""JSON for the dataplane API's values, between the e2e scenario and its agents.

Dataclasses, enums, bytes and ipaddress values from core.dataplane.model travel tagged,
so both sides rebuild the same objects.  Only the public API's types are known here.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from typing import Any

from core.dataplane import model

_DATACLASSES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        model.SaSpec,
        model.InterfaceSpec,
        model.UdpEncap,
        model.Lifetime,
        model.SaCounters,
        model.InterfaceCounters,
        model.SaExpired,
        model.TrafficWhileDown,
    )
}
_ENUMS: dict[str, type[enum.Enum]] = {
    cls.__name__: cls
    for cls in (
        model.SaMode,
        model.Direction,
        model.EspAlgorithm,
        model.EspIntegrity,
        model.ExpiryKind,
    )
}


def encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return {"enum": type(value).__name__, "value": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"dataclass": type(value).__name__, "fields": fields}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return {"interface": str(value)}
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return {"network": str(value)}
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return {"address": str(value)}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {name: encode(item) for name, item in value.items()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "enum" in value:
        return _ENUMS[value["enum"]](value["value"])
    if "dataclass" in value:
        fields = {name: decode(item) for name, item in value["fields"].items()}
        return _DATACLASSES[value["dataclass"]](**fields)
    if "bytes" in value:
        return bytes.fromhex(value["bytes"])
    if "interface" in value:
        return ipaddress.ip_interface(value["interface"])
    if "network" in value:
        return ipaddress.ip_network(value["network"])
    if "address" in value:
        return ipaddress.ip_address(value["address"])
    return {name: decode(item) for name, item in value.items()}  # a plain mapping
