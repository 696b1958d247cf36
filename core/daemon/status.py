"""The `status` answer: every configured peer as a JSON-ready dict.

Times are given twice: as ISO wall-clock timestamps (`*_at`) and as seconds relative to
now (`*_in` until a future instant, `*_ago` since a past one), so a console can count
down without knowing the daemon's clock.  ESP SPIs are 8 hex digits, IKE SPIs 16.

Peer states: "disabled" (global or peer `enabled = false`), "down" (the operator took it
down), "waiting" (passive, or the peer's address is dynamic: it must initiate),
"connecting" (negotiating or about to retry), "up" (IKE SA and a Child SA installed),
"error" (we could not even start, e.g. the remote name does not resolve).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.daemon.bus import address_json, esp_spi
from core.daemon.peers import PeerRuntime
from core.daemon.timers import iso_time
from core.dataplane.model import InterfaceCounters, SaCounters
from core.ike.v2.child import ChildSa
from core.ike.v2.state import IkeState
from core.ike.v2.ts import describe

if TYPE_CHECKING:  # annotations only: a daemon without IKEv1 peers never imports IKEv1
    from core.ike.engines import AnySa
    from core.ike.v1.child import ChildSa as IpsecSa

JsonDict = dict[str, Any]


@dataclass
class PeerCounters:
    """Counters read from the dataplane for one peer (absent ones stay zero)."""

    interface: InterfaceCounters = field(default_factory=InterfaceCounters)
    sa_in: dict[int, SaCounters] = field(default_factory=dict)  # by inbound SPI
    sa_out: dict[int, SaCounters] = field(default_factory=dict)  # by outbound SPI


@dataclass(frozen=True)
class Clock:
    """The loop clock's `now` and the conversion of its instants to Unix time."""

    now: float
    to_wall: Callable[[float], float]

    def at(self, instant: float | None) -> str | None:
        return iso_time(self.to_wall(instant)) if instant is not None else None

    def until(self, instant: float | None) -> float | None:
        if instant is None or instant == float("inf"):
            return None
        return round(instant - self.now, 3)

    def since(self, instant: float | None) -> float | None:
        return round(self.now - instant, 3) if instant is not None else None


def peer_state(peer: PeerRuntime, sa: AnySa | None, enabled: bool) -> str:
    if not enabled or not peer.config.enabled:
        return "disabled"
    if not peer.wanted_up:
        return "down"
    if sa is not None and sa.is_established and peer.children:
        return "up"
    if sa is not None and sa.state != IkeState.DESTROYED:
        return "connecting"
    if peer.setup_error is not None:
        return "error"
    if peer.config.passive or peer.config.remote_is_dynamic:
        return "waiting"
    return "connecting"


def peer_status(
    peer: PeerRuntime,
    sa: AnySa | None,
    counters: PeerCounters,
    clock: Clock,
    *,
    enabled: bool,
) -> JsonDict:
    config = peer.config
    state = peer_state(peer, sa, enabled)
    live = sa if sa is not None and sa.state != IkeState.DESTROYED else None
    nat_in_use = bool(live and live.uses_nat_t)
    return {
        "name": config.name,
        "interface": config.interface,
        "state": state,
        "enabled": config.enabled,
        "passive": config.passive,
        "ike_version": config.ike_version,
        "exchange_mode": "ikev2" if config.ike_version == 2 else config.exchange_mode.value,
        "mode": config.mode.value,
        "local": address_json(live.local) if live else _configured(config.local_address),
        "remote": address_json(live.remote) if live else _configured(config.remote_address),
        "nat": {
            "configured": config.nat_traversal.value,
            "in_use": nat_in_use,
            "forced": bool(live and live.nat_forced),
            "local_behind_nat": bool(live and live.nat_local),
            "remote_behind_nat": bool(live and live.nat_remote),
        },
        "link_up": peer.link_up,
        "address": str(config.address) if config.address else None,
        "borrowed_source": _borrowed(peer),
        "routes": [str(prefix) for prefix in config.routes],
        "ike_sa": _ike_json(live, clock) if live else None,
        "child_sas": [_child_json(child, counters, clock) for child in live.children]
        if live
        else [],
        "dpd": _dpd_json(peer, live, clock),
        "traffic": {
            "bytes_in": counters.interface.rx_bytes,
            "packets_in": counters.interface.rx_packets,
            "bytes_out": counters.interface.tx_bytes,
            "packets_out": counters.interface.tx_packets,
            "errors_in": counters.interface.rx_errors,
            "errors_out": counters.interface.tx_errors,
            "dropped_while_down": counters.interface.tx_dropped_down,
        },
        "last_error": (
            {"message": peer.last_error, "at": clock.at(peer.last_error_at)}
            if peer.last_error
            else None
        ),
    }


def _borrowed(peer: PeerRuntime) -> str | None:
    """The source address an unnumbered interface uses (None when numbered)."""
    spec = peer.interface
    if peer.config.address is not None or spec is None:
        return None
    if spec.borrowed_source is not None:
        return str(spec.borrowed_source)
    return str(spec.address.ip) if spec.address is not None else None


def _configured(address: object) -> JsonDict:
    return {"address": str(address), "port": None}


def _ike_json(sa: AnySa, clock: Clock) -> JsonDict:
    established = sa.established_at
    return {
        "state": sa.state.value,
        "spi_i": sa.spi_i.hex(),
        "spi_r": sa.spi_r.hex(),
        "initiator": sa.initiator,
        "algorithms": sa.negotiated.describe() if sa.negotiated else None,
        "peer_id": sa.peer_id_text or None,
        "established_at": clock.at(established),
        "established_ago": clock.since(established),
        "rekey_at": clock.at(sa.rekey_at),
        "rekey_in": clock.until(sa.rekey_at),
        "expire_at": clock.at(sa.expire_at),
        "expire_in": clock.until(sa.expire_at),
    }


def _child_json(child: ChildSa | IpsecSa, counters: PeerCounters, clock: Clock) -> JsonDict:
    sa_in = counters.sa_in.get(child.spi_in, SaCounters())
    sa_out = counters.sa_out.get(child.spi_out, SaCounters())
    expire = child.expire_at if child.expire_at != float("inf") else None
    return {
        "state": child.state.value,
        "spi_in": esp_spi(child.spi_in),
        "spi_out": esp_spi(child.spi_out),
        "mode": child.mode,
        "encap": child.encap,
        "algorithms": child.negotiated.describe(),
        "outbound": child.outbound_installed and not child.redundant,
        "local_ts": [describe(ts) for ts in child.local_ts],
        "remote_ts": [describe(ts) for ts in child.remote_ts],
        "established_at": clock.at(child.created_at),
        "established_ago": clock.since(child.created_at),
        "rekey_at": clock.at(child.rekey_at),
        "rekey_in": clock.until(child.rekey_at),
        "expire_at": clock.at(expire),
        "expire_in": clock.until(expire),
        "bytes_in": sa_in.bytes,
        "packets_in": sa_in.packets,
        "bytes_out": sa_out.bytes,
        "packets_out": sa_out.packets,
        "replay_errors": sa_in.replay_errors,
        "integrity_errors": sa_in.integrity_errors,
    }


def _dpd_json(peer: PeerRuntime, sa: AnySa | None, clock: Clock) -> JsonDict:
    config = peer.config
    enabled = config.dpd_interval > 0 and not config.passive
    if not enabled:
        state = "off"
    elif sa is None or not sa.is_established:
        state = "dead" if peer.dead_at is not None else "idle"
    elif sa.dpd_probes:
        state = "probing"
    else:
        state = "ok"
    return {
        "state": state,
        "interval": config.dpd_interval,
        "retries": config.dpd_retries,
        "last_heard_at": clock.at(sa.last_heard) if sa and sa.is_established else None,
        "last_heard_ago": clock.since(sa.last_heard) if sa and sa.is_established else None,
        "probes_outstanding": sa.dpd_probes if sa else 0,
        "dead_at": clock.at(peer.dead_at),
    }
