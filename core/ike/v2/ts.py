"""Traffic selectors for route-based IPsec (RFC 7296 2.9, 3.13).

Route-based tunnels propose 0.0.0.0/0 both ways and let routes decide what enters the
interface.  A responder narrows what the peer proposes to what it allows; an initiator
accepts a narrower answer and reports it.
"""

from __future__ import annotations

import ipaddress

from core.ike.constants import TsType
from core.ike.errors import TsUnacceptable
from core.ike.v2.payloads import TrafficSelector

_ANY_PORTS = (0, 65535)


def from_networks(networks: tuple[ipaddress.IPv4Network, ...]) -> tuple[TrafficSelector, ...]:
    return tuple(TrafficSelector.from_network(net) for net in networks)


def _range(ts: TrafficSelector) -> tuple[int, int]:
    return int(ts.start_address), int(ts.end_address)


def narrow(proposed: tuple[TrafficSelector, ...],
           allowed: tuple[ipaddress.IPv4Network, ...]) -> tuple[TrafficSelector, ...]:
    """Intersect the peer's selectors with the networks we allow (IPv4 only)."""
    result: list[TrafficSelector] = []
    for ts in proposed:
        if ts.ts_type != TsType.IPV4_ADDR_RANGE:
            continue
        lo, hi = _range(ts)
        for net in allowed:
            start, end = max(lo, int(net.network_address)), min(hi, int(net.broadcast_address))
            if start <= end:
                result.append(TrafficSelector(
                    TsType.IPV4_ADDR_RANGE, ts.ip_protocol, ts.start_port, ts.end_port,
                    ipaddress.IPv4Address(start), ipaddress.IPv4Address(end)))
    if not result:
        raise TsUnacceptable("no overlap between the peer's traffic selectors and ours")
    return tuple(result)


def check_subset(answer: tuple[TrafficSelector, ...],
                 proposed: tuple[TrafficSelector, ...]) -> None:
    """The responder's selectors must lie within what we proposed."""
    if not answer:
        raise TsUnacceptable("responder returned no traffic selectors")
    for ts in answer:
        lo, hi = _range(ts)
        if not any(p.ts_type == ts.ts_type and _range(p)[0] <= lo and hi <= _range(p)[1]
                   for p in proposed):
            raise TsUnacceptable(f"responder returned selector {describe(ts)} we never proposed")


def describe(ts: TrafficSelector) -> str:
    start, end = ts.start_address, ts.end_address
    text = f"{start}-{end}"
    try:
        nets = list(ipaddress.summarize_address_range(start, end))
        if len(nets) == 1:
            text = str(nets[0])
    except (TypeError, ValueError):
        pass
    if ts.ip_protocol or (ts.start_port, ts.end_port) != _ANY_PORTS:
        text += f"[{ts.ip_protocol}/{ts.start_port}-{ts.end_port}]"
    return text
