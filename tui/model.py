"""Typed views of the daemon's `status` answer, as the console reads it.

The daemon sends JSON (core/daemon/status.py documents every key).  The console parses it
once, here, into frozen dataclasses; a missing or mistyped key becomes a neutral default
instead of an exception, so a newer or older daemon never crashes the UI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.dataplane.model import MAX_INTERFACES

CAPACITY = MAX_INTERFACES  # peers (and interfaces) one node can hold

# Peer states the daemon reports, and what the console adds for "disabled by [global]".
STATES = ("up", "connecting", "waiting", "down", "disabled", "error")
GLOBAL_OFF = "off"


def _text(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _seconds(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _flag(data: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = data.get(key)
    return value if isinstance(value, bool) else default


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _texts(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(str(item) for item in value)


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}" if self.port is not None else host

    @staticmethod
    def parse(value: object) -> Endpoint | None:
        if not isinstance(value, Mapping):
            return None
        port = value.get("port")
        return Endpoint(
            _text(value, "address", "?"),
            port if isinstance(port, int) and not isinstance(port, bool) else None,
        )


@dataclass(frozen=True)
class SaTimers:
    """When an SA was made and when it rekeys and expires, in seconds from the snapshot."""

    established_ago: float | None = None
    rekey_in: float | None = None
    expire_in: float | None = None
    established_at: str | None = None
    rekey_at: str | None = None
    expire_at: str | None = None

    @staticmethod
    def parse(data: Mapping[str, Any]) -> SaTimers:
        return SaTimers(
            established_ago=_seconds(data, "established_ago"),
            rekey_in=_seconds(data, "rekey_in"),
            expire_in=_seconds(data, "expire_in"),
            established_at=_optional_text(data, "established_at"),
            rekey_at=_optional_text(data, "rekey_at"),
            expire_at=_optional_text(data, "expire_at"),
        )

    @property
    def next_event_in(self) -> float | None:
        """Seconds until the SA is rekeyed, or expires when it is not rekeyed."""
        return self.rekey_in if self.rekey_in is not None else self.expire_in

    @property
    def fraction_left(self) -> float | None:
        """How much of the time from establishment to rekey (or expiry) is left, 0..1."""
        left = self.next_event_in
        if left is None or self.established_ago is None:
            return None
        total = self.established_ago + max(left, 0.0)
        if total <= 0:
            return 0.0
        return min(1.0, max(0.0, left / total))


@dataclass(frozen=True)
class IkeSaStatus:
    state: str
    spi_i: str
    spi_r: str
    initiator: bool
    algorithms: str
    peer_id: str | None
    timers: SaTimers

    @staticmethod
    def parse(data: Mapping[str, Any]) -> IkeSaStatus:
        return IkeSaStatus(
            state=_text(data, "state", "?"),
            spi_i=_text(data, "spi_i"),
            spi_r=_text(data, "spi_r"),
            initiator=_flag(data, "initiator"),
            algorithms=_text(data, "algorithms", "-"),
            peer_id=_optional_text(data, "peer_id"),
            timers=SaTimers.parse(data),
        )


@dataclass(frozen=True)
class ChildSaStatus:
    state: str
    spi_in: str
    spi_out: str
    mode: str
    encap: bool
    algorithms: str
    outbound: bool
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    timers: SaTimers
    bytes_in: int
    packets_in: int
    bytes_out: int
    packets_out: int
    replay_errors: int
    integrity_errors: int

    @staticmethod
    def parse(data: Mapping[str, Any]) -> ChildSaStatus:
        return ChildSaStatus(
            state=_text(data, "state", "?"),
            spi_in=_text(data, "spi_in"),
            spi_out=_text(data, "spi_out"),
            mode=_text(data, "mode", "tunnel"),
            encap=_flag(data, "encap"),
            algorithms=_text(data, "algorithms", "-"),
            outbound=_flag(data, "outbound", True),
            local_ts=_texts(data, "local_ts"),
            remote_ts=_texts(data, "remote_ts"),
            timers=SaTimers.parse(data),
            bytes_in=_int(data, "bytes_in"),
            packets_in=_int(data, "packets_in"),
            bytes_out=_int(data, "bytes_out"),
            packets_out=_int(data, "packets_out"),
            replay_errors=_int(data, "replay_errors"),
            integrity_errors=_int(data, "integrity_errors"),
        )


@dataclass(frozen=True)
class DpdStatus:
    state: str  # "off", "idle", "ok", "probing", "dead"
    interval: int
    retries: int
    last_heard_ago: float | None
    probes_outstanding: int
    dead_at: str | None

    @staticmethod
    def parse(data: Mapping[str, Any]) -> DpdStatus:
        return DpdStatus(
            state=_text(data, "state", "off"),
            interval=_int(data, "interval"),
            retries=_int(data, "retries"),
            last_heard_ago=_seconds(data, "last_heard_ago"),
            probes_outstanding=_int(data, "probes_outstanding"),
            dead_at=_optional_text(data, "dead_at"),
        )


@dataclass(frozen=True)
class NatStatus:
    configured: str  # "auto", "force", "off"
    in_use: bool
    forced: bool
    local_behind_nat: bool
    remote_behind_nat: bool

    @staticmethod
    def parse(data: Mapping[str, Any]) -> NatStatus:
        return NatStatus(
            configured=_text(data, "configured", "auto"),
            in_use=_flag(data, "in_use"),
            forced=_flag(data, "forced"),
            local_behind_nat=_flag(data, "local_behind_nat"),
            remote_behind_nat=_flag(data, "remote_behind_nat"),
        )


@dataclass(frozen=True)
class Traffic:
    bytes_in: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    packets_out: int = 0
    errors_in: int = 0
    errors_out: int = 0
    dropped_while_down: int = 0

    @staticmethod
    def parse(data: Mapping[str, Any]) -> Traffic:
        return Traffic(
            bytes_in=_int(data, "bytes_in"),
            packets_in=_int(data, "packets_in"),
            bytes_out=_int(data, "bytes_out"),
            packets_out=_int(data, "packets_out"),
            errors_in=_int(data, "errors_in"),
            errors_out=_int(data, "errors_out"),
            dropped_while_down=_int(data, "dropped_while_down"),
        )


@dataclass(frozen=True)
class FloatLinkStatus:
    """A peer's float link (docs/floatlink.md#status): our published name and address,
    the peer's, and how fresh the peer's registration is."""

    name: str
    peer_name: str
    published_state: str  # "published", "not published", "not published (... NAT)"
    published_address: str | None
    stamp_state: str | None  # "stamped", "not stamped (...)", None
    resolved_state: str  # "resolved", "not resolved", "not resolved (registration expired)"
    resolved_address: str | None
    registration_state: str | None  # "current", "expired", "no stamp"; None: not looked up
    registration_note: str | None
    registration_expires_in: float | None
    error: str | None

    @staticmethod
    def parse(data: Mapping[str, Any]) -> FloatLinkStatus:
        registration = _mapping(data, "registration")
        return FloatLinkStatus(
            name=_text(data, "name", "?"),
            peer_name=_text(data, "peer_name", "?"),
            published_state=_text(data, "published_state", "not published"),
            published_address=_optional_text(_mapping(data, "published"), "address"),
            stamp_state=_optional_text(data, "stamp_state"),
            resolved_state=_text(data, "resolved_state", "not resolved"),
            resolved_address=_optional_text(_mapping(data, "resolved"), "address"),
            registration_state=_optional_text(registration, "state"),
            registration_note=_optional_text(registration, "note"),
            registration_expires_in=_seconds(registration, "expires_in"),
            error=_optional_text(_mapping(data, "last_error"), "message"),
        )

    @property
    def expired(self) -> bool:
        return self.registration_state == "expired" or "expired" in self.resolved_state


@dataclass(frozen=True)
class TunnelStatus:
    """One configured peer and its tunnel, as of one snapshot."""

    name: str
    interface: str
    state: str  # one of STATES, or GLOBAL_OFF when [global] enabled = false
    enabled: bool
    passive: bool
    ike_version: int
    exchange_mode: str
    mode: str
    local: Endpoint | None
    remote: Endpoint | None
    nat: NatStatus
    link_up: bool
    address: str | None
    borrowed_source: str | None
    routes: tuple[str, ...]
    ike_sa: IkeSaStatus | None
    child_sas: tuple[ChildSaStatus, ...]
    dpd: DpdStatus
    traffic: Traffic
    last_error: str | None
    last_error_at: str | None
    float_link: FloatLinkStatus | None = None

    @staticmethod
    def parse(data: Mapping[str, Any], *, globally_enabled: bool = True) -> TunnelStatus:
        state = _text(data, "state", "error")
        enabled = _flag(data, "enabled", True)
        if state == "disabled" and enabled and not globally_enabled:
            state = GLOBAL_OFF
        ike = data.get("ike_sa")
        children = data.get("child_sas")
        error = _mapping(data, "last_error")
        float_link = data.get("float_link")
        return TunnelStatus(
            name=_text(data, "name", "?"),
            interface=_text(data, "interface", "?"),
            state=state,
            enabled=enabled,
            passive=_flag(data, "passive"),
            ike_version=_int(data, "ike_version", 2),
            exchange_mode=_text(data, "exchange_mode", "ikev2"),
            mode=_text(data, "mode", "tunnel"),
            local=Endpoint.parse(data.get("local")),
            remote=Endpoint.parse(data.get("remote")),
            nat=NatStatus.parse(_mapping(data, "nat")),
            link_up=_flag(data, "link_up"),
            address=_optional_text(data, "address"),
            borrowed_source=_optional_text(data, "borrowed_source"),
            routes=_texts(data, "routes"),
            ike_sa=IkeSaStatus.parse(ike) if isinstance(ike, Mapping) else None,
            child_sas=tuple(
                ChildSaStatus.parse(child)
                for child in (children if isinstance(children, list) else [])
                if isinstance(child, Mapping)
            ),
            dpd=DpdStatus.parse(_mapping(data, "dpd")),
            traffic=Traffic.parse(_mapping(data, "traffic")),
            last_error=_optional_text(error, "message"),
            last_error_at=_optional_text(error, "at"),
            float_link=FloatLinkStatus.parse(float_link)
            if isinstance(float_link, Mapping)
            else None,
        )

    @property
    def ike_label(self) -> str:
        """IKE version and mode, e.g. "v2", "v1 main", "v1 aggr"."""
        if self.ike_version == 1:
            mode = "aggr" if self.exchange_mode == "aggressive" else self.exchange_mode
            return f"v1 {mode}"
        return f"v{self.ike_version}"

    @property
    def uptime(self) -> float | None:
        if self.state != "up" or self.ike_sa is None:
            return None
        return self.ike_sa.timers.established_ago

    @property
    def newest_child(self) -> ChildSaStatus | None:
        """The Child SA that carries outbound traffic (the newest one during a rekey)."""
        outbound = [child for child in self.child_sas if child.outbound]
        candidates = outbound or list(self.child_sas)
        if not candidates:
            return None
        return min(candidates, key=lambda child: child.timers.established_ago or 0.0)


@dataclass(frozen=True)
class Snapshot:
    """Every configured peer at one moment; `taken_at` is on the source's clock."""

    tunnels: tuple[TunnelStatus, ...]
    taken_at: float
    enabled: bool = True  # [global] enabled
    capacity: int = CAPACITY
    extra: Mapping[str, Any] = field(default_factory=dict)

    def tunnel(self, name: str) -> TunnelStatus | None:
        for tunnel in self.tunnels:
            if tunnel.name == name:
                return tunnel
        return None

    @property
    def daemon(self) -> Mapping[str, Any]:
        value = self.extra.get("daemon")
        return value if isinstance(value, Mapping) else {}

    def count(self, *states: str) -> int:
        return sum(1 for tunnel in self.tunnels if tunnel.state in states)


def parse_status(result: object, taken_at: float) -> Snapshot:
    """The answer of the `status` command: {"daemon": {"enabled": ..., ...}, "peers": [...]}
    (a bare list of peers is accepted too)."""
    peers: Sequence[object]
    enabled = True
    capacity = CAPACITY
    extra: Mapping[str, Any] = {}
    if isinstance(result, Mapping):
        raw_peers = result.get("peers")
        peers = raw_peers if isinstance(raw_peers, list) else []
        daemon = _mapping(result, "daemon")
        enabled = _flag(daemon, "enabled", _flag(result, "enabled", True))
        capacity = _int(result, "capacity", CAPACITY) or CAPACITY
        extra = {key: value for key, value in result.items() if key != "peers"}
    elif isinstance(result, list):
        peers = result
    else:
        peers = []
    tunnels = tuple(
        TunnelStatus.parse(peer, globally_enabled=enabled)
        for peer in peers
        if isinstance(peer, Mapping)
    )
    return Snapshot(tunnels, taken_at, enabled, capacity, extra)
