"""The operator's commands on a running daemon: up, down, rekey and status.

`Operations` answers them for the control socket (core/daemon/control/commands.py) and
the console; it reads and steers the daemon's peers and engine, and each answer is the
JSON-ready dict the control protocol sends back.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from core.daemon.peers import PeerRuntime
from core.daemon.status import Clock, PeerCounters, peer_status
from core.daemon.timers import iso_time
from core.dataplane.api import DataplaneError
from core.dataplane.model import Direction
from core.errors import UsageError
from core.ike.engines import IkeEngines
from core.ike.v2.state import IkeState

if TYPE_CHECKING:
    from core.daemon.service import Daemon


class Operations:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def peer(self, name: str) -> PeerRuntime:
        peer = self._daemon.peers.get(name)
        if peer is None:
            known = ", ".join(self._daemon.peers) or "none"
            raise UsageError(f"unknown peer {name!r} (configured: {known})")
        return peer

    def _usable_peer(self, name: str) -> tuple[PeerRuntime, IkeEngines]:
        daemon = self._daemon
        peer = self.peer(name)
        if daemon.engine is None and daemon.enabling:
            raise UsageError("the daemon is still starting; try again in a moment")
        if daemon.engine is None:
            raise UsageError("route-based IPsec is disabled (global.enabled = false)")
        if not peer.config.enabled:
            raise UsageError(f"peer {name} is disabled in the config (enabled = false)")
        return peer, daemon.engine

    async def up(self, name: str) -> dict[str, Any]:
        daemon = self._daemon
        peer, _engine = self._usable_peer(name)
        peer.wanted_up = True
        if peer.policy is None:
            problem = await daemon._start_ike(peer)
            if problem is not None:
                raise UsageError(f"peer {name}: {problem}")
        elif peer.remote_ip is not None:
            daemon._guard(lambda: daemon._connect(peer))
            daemon._pump()
        daemon._publish_states()
        note = ""
        if peer.config.passive or peer.remote_ip is None:
            note = "waiting for the peer to initiate"
        return {"peer": name, "state": daemon.state_of(peer), "note": note}

    async def down(self, name: str) -> dict[str, Any]:
        daemon = self._daemon
        peer, engine = self._usable_peer(name)
        peer.wanted_up = False
        if peer.policy is not None:
            sa = engine.current_sa(name)
            if sa is None or sa.state == IkeState.DESTROYED:
                daemon._stop_ike(peer)
            else:
                daemon._guard(lambda: engine.disconnect(name, daemon.now()))
                daemon._pump()
        peer.setup_error = None
        daemon._publish_states()
        return {"peer": name, "state": daemon.state_of(peer)}

    async def rekey(self, name: str, ike: bool = False) -> dict[str, Any]:
        daemon = self._daemon
        # A passive peer never rekeys on its own; an operator's explicit command is not
        # spontaneous, so it is carried out (as `swanctl --rekey` does for a passive conn).
        _peer, engine = self._usable_peer(name)
        sa = engine.current_sa(name)
        if sa is None or not sa.is_established:
            raise UsageError(f"peer {name} has no established IKE SA to rekey")
        started: list[bool] = []
        daemon._guard(lambda: started.append(engine.rekey(name, daemon.now(), ike=ike)))
        daemon._pump()
        if not started or not started[0]:
            what = "IKE SA" if ike else "Child SA"
            raise UsageError(f"peer {name}: no {what} can be rekeyed right now")
        return {"peer": name, "rekeying": "ike" if ike else "child"}

    async def status(self, only: str | None = None) -> dict[str, Any]:
        daemon = self._daemon
        peers = [self.peer(only)] if only is not None else list(daemon.peers.values())
        counters: dict[str, PeerCounters] = await daemon._submit(lambda: self._read_counters(peers))
        clock = Clock(daemon.now(), daemon._to_wall)
        engine = daemon.engine
        entries = [
            peer_status(
                peer,
                engine.current_sa(peer.name) if engine is not None else None,
                counters.get(peer.name, PeerCounters()),
                clock,
                enabled=daemon.enabled,
            )
            for peer in peers
        ]
        for entry in entries:
            link = daemon.following.links.get(entry["name"])
            entry["float_link"] = link.status() if link is not None else None
        dataplane = daemon.dataplane
        return {
            "daemon": {
                "pid": os.getpid(),
                "enabled": daemon.enabled,
                "started": daemon.started,  # start finished: peers set up, IKE listening
                "dataplane": dataplane.name if dataplane is not None else None,
                "dataplane_reason": daemon.dataplane_reason or None,
                "config": daemon.config.path,
                "socket": daemon.config.global_.socket,
                "started_at": iso_time(daemon.started_at),
                "uptime": round(time.time() - daemon.started_at, 3),
                "peers": len(daemon.peers),
                "peers_up": sum(1 for entry in entries if entry["state"] == "up"),
                "engine_errors": daemon.engine_errors,
            },
            "peers": entries,
        }

    async def _read_counters(self, peers: list[PeerRuntime]) -> dict[str, PeerCounters]:
        dataplane = self._daemon.dataplane
        result: dict[str, PeerCounters] = {}
        if dataplane is None:
            return result
        for peer in peers:
            counters = PeerCounters()
            if peer.interface is not None:
                with contextlib.suppress(DataplaneError):
                    counters.interface = await dataplane.interface_counters(peer.interface.name)
            for record in peer.children.values():
                if_id = record.sas.inbound.if_id
                with contextlib.suppress(DataplaneError):
                    if record.inbound_installed:
                        counters.sa_in[record.info.spi_in] = await dataplane.sa_counters(
                            record.info.spi_in, Direction.IN, if_id
                        )
                    if record.outbound_installed:
                        counters.sa_out[record.info.spi_out] = await dataplane.sa_counters(
                            record.info.spi_out, Direction.OUT, if_id
                        )
            result[peer.name] = counters
        return result
