"""Applying a new config to a running daemon (SIGHUP, `rbipsec reload`, config-apply).

The diff decides the least that has to change: removed peers are torn down, added ones
set up, a changed peer only has its interface updated when nothing but interface keys
changed (routes, address, MTU, MSS clamping) and its IKE restarted otherwise.  Switching
`global.enabled` rebuilds everything; `socket` and `dataplane` only apply at restart.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from core.config import Config, diff, load
from core.config.diff import PeerChange
from core.daemon.peers import PeerRuntime

if TYPE_CHECKING:
    from core.daemon.service import Daemon

log = logging.getLogger("rbipsec.daemon")

INTERFACE_KEYS = frozenset({"mtu", "address", "tcp_mss", "routes"})
RESTART_KEYS = ("socket", "dataplane")  # [global] keys that only a restart applies


class Reloader:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._lock = asyncio.Lock()

    async def reload(self, new: Config | None = None) -> dict[str, Any]:
        """Apply a new config; raises ConfigError (nothing changed) when it has problems."""
        daemon = self._daemon
        async with self._lock:
            if new is None:
                new = await asyncio.to_thread(load, daemon.config.path)
            changes = diff(daemon.config, new)
            old, daemon.config = daemon.config, new
            if "log_level" in changes.global_keys:
                logging.getLogger().setLevel(new.global_.log_level.value.upper())
            restart = [key for key in RESTART_KEYS if key in changes.global_keys]
            for key in restart:
                log.warning("global.%s changed: it takes effect when the daemon restarts", key)
            summary: dict[str, Any] = {
                "added": list(changes.added),
                "removed": list(changes.removed),
                "changed": {change.name: list(change.keys) for change in changes.changed},
                "unchanged": list(changes.unchanged),
                "restart_needed": restart,
            }
            if old.global_.enabled != new.global_.enabled or daemon.engine is None:
                await self._reload_whole(new)
            else:
                await self._reload_peers(changes.removed, changes.changed, changes.added)
                if "unnumbered_source" in changes.global_keys:
                    await self._refresh_borrowed()
            daemon.peers = {
                p.name: daemon.peers[p.name] for p in new.peers if p.name in daemon.peers
            }
            await daemon.following.sync()
            log.info(
                "config reloaded: %d added, %d removed, %d changed, %d unchanged",
                len(changes.added), len(changes.removed), len(changes.changed),
                len(changes.unchanged),
            )  # fmt: skip
            daemon.bus.publish("ConfigReloaded", **summary)
            daemon._publish_states()
            return summary

    async def _reload_whole(self, new: Config) -> None:
        daemon = self._daemon
        if daemon.engine is not None:
            await daemon._disable()
        daemon.peers = {p.name: PeerRuntime(p) for p in new.peers}
        if new.global_.enabled:
            await daemon._enable()
        else:
            log.warning("route-based IPsec is disabled (global.enabled = false)")

    async def _reload_peers(
        self, removed: tuple[str, ...], changed: tuple[PeerChange, ...], added: tuple[str, ...]
    ) -> None:
        daemon = self._daemon
        glue = daemon._glue
        assert glue is not None
        for name in removed:
            peer = daemon.peers.pop(name)
            daemon._stop_ike(peer)
            await daemon._submit(partial(glue.destroy, peer, daemon.now()))
        for change in changed:
            await self._change_peer(change)
        for name in added:
            config = daemon.config.peer(name)
            assert config is not None
            peer = PeerRuntime(config)
            daemon.peers[name] = peer
            await daemon._setup_peer(peer)

    async def _change_peer(self, change: PeerChange) -> None:
        daemon = self._daemon
        glue = daemon._glue
        assert glue is not None
        peer = daemon.peers[change.name]
        keys = set(change.keys)
        if "interface" in keys:  # a different interface: rebuild the peer entirely
            daemon._stop_ike(peer)
            await daemon._submit(lambda: glue.destroy(peer, daemon.now()))
            fresh = PeerRuntime(change.new)
            daemon.peers[change.name] = fresh
            await daemon._setup_peer(fresh)
            return
        restart_ike = bool(keys - INTERFACE_KEYS)
        if restart_ike:
            daemon._stop_ike(peer)
            peer.wanted_up = True
            peer.last_error = None
        peer.config = change.new
        borrowed = await daemon._borrowed_source(change.new)
        await daemon._submit(lambda: glue.update(peer, borrowed, daemon.now()))
        if restart_ike and change.new.enabled:
            await daemon._start_ike(peer)

    async def _refresh_borrowed(self) -> None:
        daemon = self._daemon
        glue = daemon._glue
        assert glue is not None
        unnumbered = [
            peer
            for peer in daemon.peers.values()
            if peer.config.address is None and peer.interface is not None
        ]
        if not unnumbered:
            return
        borrowed = await daemon._unnumbered_source()  # once for all of them
        for peer in unnumbered:
            await daemon._submit(partial(glue.update, peer, borrowed, daemon.now()))
