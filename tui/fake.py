"""A scripted core: answers the control protocol from an in-memory config and made-up
tunnel state.  Used by the console's tests, the benchmark and the snapshot screenshots.

Its clock is fake unless `live=True`: time moves only by `advance()`, so every screen
renders the same way on every run.  Peers get a state by their position (see
`SCENARIO`), counters grow while a tunnel is up, and the actions (up, down, rekey,
config-apply) change the state and publish events as the daemon would.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from core.config import PeerConfig, diff, load_text
from core.daemon.control.client import CommandFailed
from core.daemon.control.protocol import JsonDict
from core.errors import ConfigError
from tui.connection import SourceUnavailable, TunnelSource

WALL_EPOCH = datetime.datetime(2026, 11, 2, 10, 0, 0, tzinfo=datetime.UTC).timestamp()
FAKE_PATH = "/etc/rbipsec/config.toml"
NAMES = ("hq", "branch-nat", "shop-passive", "dc-forced", "lab", "retired", "partner", "cloud")
# What the peer at position i % 8 is doing.
SCENARIO = ("up", "up-nat", "waiting", "up-probing", "connecting", "disabled", "up-v1", "error")


def _peer_block(index: int, kind: str) -> str:
    name = NAMES[index] if index < len(NAMES) else f"site{index:02d}"
    lines = [
        f"# {kind} tunnel",
        "[[peer]]",
        f'name = "{name}"',
        f'interface = "ipsec{index}"',
        'local_address = "198.51.100.1"',
        f'remote_address = "203.0.113.{index + 10}"',
        f'psk = "fake-only-{index}"',
        f'address = "10.{index // 64}.{index % 64 * 4}.1/30"',
        f'routes = ["10.{100 + index // 200}.{index % 200}.0/24"]',
    ]
    if kind == "waiting":
        lines.append("passive = true")
    if kind == "up-probing":
        lines.append('nat_traversal = "force"')
    if kind == "disabled":
        lines.append("enabled = false")
    if kind == "up-v1":
        lines += ["ike_version = 1", 'ike_proposals = ["aes256-sha256-modp2048"]']
    if kind == "error":
        lines[5] = 'remote_address = "vpn.cloud.example"'
    return "\n".join(lines) + "\n"


def fake_config_text(peers: int, *, all_up: bool = False, enabled: bool = True) -> str:
    head = (
        "# rbipsec configuration (fake core for the console)\n"
        "[global]\n"
        f"enabled = {'true' if enabled else 'false'}\n"
        'dataplane = "userspace"\n'
    )
    blocks = [
        _peer_block(index, "up" if all_up else SCENARIO[index % len(SCENARIO)])
        for index in range(peers)
    ]
    return head + "\n" + "\n".join(blocks)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class _Runtime:
    index: int
    state: str
    since: float  # when the IKE SA came up (or the state began)
    child_since: float
    probes: int = 0
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    updated: float = 0.0

    @property
    def rate_in(self) -> float:
        return 1500.0 * (1 + self.index % 5)

    @property
    def rate_out(self) -> float:
        return 900.0 * (1 + self.index % 3)


_LOST = {"type": "__lost__"}


class FakeSource(TunnelSource):
    def __init__(
        self,
        peers: int = 8,
        *,
        live: bool = False,
        all_up: bool = False,
        enabled: bool = True,
        text: str | None = None,
    ) -> None:
        self.description = "fake core (demo data)"
        self.fake_clock = FakeClock()
        self._live = live
        self._all_up = all_up
        self.path = FAKE_PATH
        self.text = (
            text if text is not None else fake_config_text(peers, all_up=all_up, enabled=enabled)
        )
        self.config = load_text(self.text, self.path)
        self._runtime: dict[str, _Runtime] = {}
        self._events: asyncio.Queue[JsonDict] = asyncio.Queue()
        self.failing: str | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._sync_runtime()

    # -- the clock -----------------------------------------------------------------------
    def clock(self) -> float:
        return time.monotonic() if self._live else self.fake_clock()

    def advance(self, seconds: float) -> None:
        self.fake_clock.advance(seconds)

    def _iso(self, instant: float) -> str:
        moment = datetime.datetime.fromtimestamp(WALL_EPOCH + instant - 1000.0, datetime.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    # -- failure injection ---------------------------------------------------------------
    def fail(self, message: str = "connection refused") -> None:
        """Requests raise SourceUnavailable and the event stream ends until `recover()`."""
        self.failing = message
        self._events.put_nowait(_LOST)

    def recover(self) -> None:
        self.failing = None

    def emit(self, event_type: str, **fields: Any) -> None:
        now = self.clock()
        self._events.put_nowait({"type": event_type, "time": self._iso(now), **fields})

    # -- the protocol --------------------------------------------------------------------
    async def request(self, cmd: str, **args: Any) -> Any:
        self.requests.append((cmd, dict(args)))
        if self.failing is not None:
            raise SourceUnavailable(f"the rbipsec daemon is not running ({self.failing})")
        await asyncio.sleep(0)
        handler = getattr(self, "_cmd_" + cmd.replace("-", "_"), None)
        if handler is None:
            raise CommandFailed(f"unknown command {cmd!r}", {})
        return handler(**args)

    async def events(self) -> AsyncIterator[JsonDict]:
        if self.failing is not None:
            raise SourceUnavailable(self.failing)
        while True:
            event = await self._events.get()
            if event is _LOST:
                raise SourceUnavailable(self.failing or "lost")
            yield event

    def _cmd_ping(self) -> JsonDict:
        return {"pong": True}

    def _cmd_status(self, peer: str | None = None) -> JsonDict:
        now = self.clock()
        peers = [self._peer_json(config, now) for config in self.config.peers]
        if peer is not None:
            peers = [item for item in peers if item["name"] == peer]
        up = sum(1 for item in peers if item["state"] == "up")
        daemon = {
            "enabled": self.config.global_.enabled,
            "dataplane": "fake",
            "peers_up": up,
            "config": self.path,
            "peers": len(peers),
        }
        return {"daemon": daemon, "peers": peers}

    def _known(self, peer: str) -> _Runtime:
        runtime = self._runtime.get(peer)
        if runtime is None:
            raise CommandFailed(f"unknown peer {peer!r}", {})
        return runtime

    def _cmd_up(self, peer: str) -> JsonDict:
        runtime = self._known(peer)
        now = self.clock()
        runtime.state, runtime.since, runtime.child_since, runtime.probes = "up", now, now, 0
        runtime.updated = now
        self.emit(
            "IkeSaUp",
            info={
                "peer": peer,
                "remote": {"address": "203.0.113.10", "port": 500},
                "algorithms": "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519",
            },
        )
        self.emit(
            "ChildSaInstalled",
            info={"peer": peer, "spi_in": "c0ffee01", "spi_out": "c0ffee02"},
            outbound=True,
        )
        return {"peer": peer, "state": "up"}

    def _cmd_down(self, peer: str) -> JsonDict:
        runtime = self._known(peer)
        runtime.state, runtime.since = "down", self.clock()
        self.emit("IkeSaDown", peer=peer, spi_i="", spi_r="", reason="deleted", detail="")
        return {"peer": peer, "state": "down"}

    def _cmd_rekey(self, peer: str, ike: bool = False) -> JsonDict:
        runtime = self._known(peer)
        if runtime.state != "up":
            raise CommandFailed(f"{peer} is not up", {})
        now = self.clock()
        runtime.child_since = now
        if ike:
            runtime.since = now
            self.emit(
                "IkeSaRekeyed",
                old={"peer": peer, "spi_i": "1111"},
                new={"peer": peer, "spi_i": "2222"},
            )
        self.emit(
            "ChildSaInstalled",
            info={"peer": peer, "spi_in": "c0ffee03", "spi_out": "c0ffee04"},
            replaces_spi_in="c0ffee01",
        )
        return {"peer": peer, "rekeying": "ike" if ike else "child"}

    def _cmd_reload(self) -> JsonDict:
        return {"unchanged": list(self.config.peer_names)}

    def _cmd_config_get(self) -> JsonDict:
        return {"path": self.path, "text": self.text}

    def _cmd_config_validate(self, text: str) -> JsonDict:
        try:
            load_text(text, self.path)
        except ConfigError as error:
            return {"valid": False, "problems": list(error.problems)}
        return {"valid": True, "problems": []}

    def _cmd_config_apply(self, text: str) -> JsonDict:
        try:
            new = load_text(text, self.path)
        except ConfigError as error:
            raise CommandFailed("the config has problems", {"problems": error.problems}) from None
        change = diff(self.config, new)
        self.text, self.config = text, new
        self._sync_runtime()
        summary = {
            "added": list(change.added),
            "removed": list(change.removed),
            "changed": [item.name for item in change.changed],
            "unchanged": list(change.unchanged),
        }
        self.emit("ConfigReloaded", **summary)
        return summary

    # -- made-up state ----------------------------------------------------------------------
    def _sync_runtime(self) -> None:
        now = self.clock()
        names = set(self.config.peer_names)
        for name in set(self._runtime) - names:
            del self._runtime[name]
        for index, peer in enumerate(self.config.peers):
            if peer.name not in self._runtime:
                self._runtime[peer.name] = self._initial(index, peer, now)

    def _initial(self, index: int, peer: PeerConfig, now: float) -> _Runtime:
        kind = "up" if self._all_up else SCENARIO[index % len(SCENARIO)]
        if not peer.enabled:
            kind = "disabled"
        if peer.passive:
            kind = "waiting"
        state = "up" if kind.startswith("up") else kind
        ago = 3600.0 * (1 + index % 7) + 61.0 * index
        runtime = _Runtime(index, state, now - ago, now - ago % 3000.0, updated=now)
        runtime.probes = 2 if kind == "up-probing" else 0
        if index % len(SCENARIO) == 0 and index:
            runtime.child_since = now - 3100.0  # close to its rekey
        if state == "up":
            runtime.bytes_in = runtime.rate_in * ago * 0.2
            runtime.bytes_out = runtime.rate_out * ago * 0.2
        return runtime

    def _advance_counters(self, runtime: _Runtime, now: float) -> None:
        elapsed = max(0.0, now - runtime.updated)
        runtime.updated = now
        if runtime.state == "up":
            runtime.bytes_in += runtime.rate_in * elapsed
            runtime.bytes_out += runtime.rate_out * elapsed

    def _peer_json(self, config: PeerConfig, now: float) -> JsonDict:
        runtime = self._runtime[config.name]
        self._advance_counters(runtime, now)
        enabled = self.config.global_.enabled
        state = runtime.state if enabled and config.enabled else "disabled"
        up = state == "up"
        nat = runtime.index % len(SCENARIO) == 1 and not self._all_up
        forced = config.nat_traversal.value == "force"
        remote = str(config.remote_address)
        return {
            "name": config.name,
            "interface": config.interface,
            "state": state,
            "enabled": config.enabled,
            "passive": config.passive,
            "ike_version": config.ike_version,
            "exchange_mode": "ikev2" if config.ike_version == 2 else config.exchange_mode.value,
            "mode": config.mode.value,
            "local": {
                "address": str(config.local_address),
                "port": 4500 if nat or forced else 500 if up else None,
            },
            "remote": {
                "address": "192.0.2.77" if nat and up else remote,
                "port": 31874 if nat and up else 4500 if forced and up else 500 if up else None,
            },
            "nat": {
                "configured": config.nat_traversal.value,
                "in_use": up and (nat or forced),
                "forced": up and forced,
                "local_behind_nat": False,
                "remote_behind_nat": up and nat,
            },
            "link_up": up,
            "address": str(config.address) if config.address else None,
            "borrowed_source": None,
            "routes": [str(route) for route in config.routes],
            "ike_sa": self._ike_json(config, runtime, now) if up else None,
            "child_sas": [self._child_json(config, runtime, now, nat or forced)] if up else [],
            "dpd": self._dpd_json(config, runtime, now, up),
            "traffic": {
                "bytes_in": int(runtime.bytes_in),
                "packets_in": int(runtime.bytes_in) // 1000,
                "bytes_out": int(runtime.bytes_out),
                "packets_out": int(runtime.bytes_out) // 800,
                "errors_in": 0,
                "errors_out": 0,
                "dropped_while_down": 0 if up else 3 * runtime.index,
            },
            "last_error": {
                "message": f"cannot resolve {remote}: Name or service not known",
                "at": self._iso(now - 12.0),
            }
            if state == "error"
            else None,
        }

    def _timers(self, since: float, lifetime: int, now: float) -> JsonDict:
        rekey_at = since + lifetime * 0.9
        expire_at = since + lifetime
        return {
            "established_at": self._iso(since),
            "established_ago": round(now - since, 3),
            "rekey_at": self._iso(rekey_at),
            "rekey_in": round(rekey_at - now, 3),
            "expire_at": self._iso(expire_at),
            "expire_in": round(expire_at - now, 3),
        }

    def _ike_json(self, config: PeerConfig, runtime: _Runtime, now: float) -> JsonDict:
        index = runtime.index
        return {
            "state": "established",
            "spi_i": f"{0x1000_0000_0000_0000 + index * 0x1111:016x}",
            "spi_r": f"{0x2000_0000_0000_0000 + index * 0x2222:016x}",
            "initiator": not config.passive,
            "algorithms": "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"
            if config.ike_version == 2
            else "AES_CBC_256/HMAC_SHA2_256_128/MODP_2048",
            "peer_id": str(config.remote_address),
            **self._timers(runtime.since, config.ike_lifetime, now),
        }

    def _child_json(
        self, config: PeerConfig, runtime: _Runtime, now: float, encap: bool
    ) -> JsonDict:
        index = runtime.index
        return {
            "state": "installed",
            "spi_in": f"{0xC000_0000 + index * 0x101:08x}",
            "spi_out": f"{0xD000_0000 + index * 0x202:08x}",
            "mode": config.mode.value,
            "encap": encap,
            "algorithms": "AES_GCM_16_256",
            "outbound": True,
            "local_ts": ["0.0.0.0/0"],
            "remote_ts": ["0.0.0.0/0"],
            **self._timers(runtime.child_since, min(config.child_lifetime, 3600), now),
            "bytes_in": int(runtime.bytes_in),
            "packets_in": int(runtime.bytes_in) // 1000,
            "bytes_out": int(runtime.bytes_out),
            "packets_out": int(runtime.bytes_out) // 800,
            "replay_errors": 0,
            "integrity_errors": 0,
        }

    def _dpd_json(self, config: PeerConfig, runtime: _Runtime, now: float, up: bool) -> JsonDict:
        enabled = config.dpd_interval > 0 and not config.passive
        state = "off" if not enabled else ("probing" if runtime.probes else "ok") if up else "idle"
        heard = now - (5.0 + runtime.index % 10) - config.dpd_interval * runtime.probes
        return {
            "state": state,
            "interval": config.dpd_interval,
            "retries": config.dpd_retries,
            "last_heard_at": self._iso(heard) if up else None,
            "last_heard_ago": round(now - heard, 3) if up else None,
            "probes_outstanding": runtime.probes if up else 0,
            "dead_at": None,
        }
