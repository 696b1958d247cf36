"""Following peers that move: float links, remote host names and local address changes.

One `PeerFloatLink` runs per enabled peer with `float_link` while IPsec is on; when it
finds the peer at a new address, or a remote host name resolves elsewhere, or this
host's IKE source address changes, the peer's IKE SA is re-established toward (or from)
the new address.  All the work is queued on the daemon's worker.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.daemon.floatlink import AddressWatcher, PeerFloatLink
    from core.daemon.service import Daemon

log = logging.getLogger("rbipsec.daemon")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerFollowing:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.links: dict[str, PeerFloatLink] = {}  # by peer name
        self._address_watcher: AddressWatcher | None = None

    async def sync(self) -> None:
        """One running float link per enabled peer with `float_link` while IPsec is on."""
        daemon = self._daemon
        wanted = {
            p.name: p.config
            for p in daemon.peers.values()
            if p.config.float_link is not None and p.config.enabled and daemon.engine is not None
        }
        for name, link in list(self.links.items()):
            if wanted.get(name) != link.peer:
                del self.links[name]
                await link.stop()
        if not wanted and not self.links and self._address_watcher is None:
            return  # no float link: its DNS client is never imported (~20 ms at start)
        from core.daemon.floatlink import AddressWatcher, PeerFloatLink

        for name, config in wanted.items():
            if name not in self.links:
                link = PeerFloatLink(config, route_source=daemon.netinfo.route_source,
                                     on_peer_moved=partial(self._on_float_moved, name))  # fmt: skip
                self.links[name] = link
                link.start()
        if self.links and self._address_watcher is None:
            self._address_watcher = AddressWatcher(
                lambda: daemon._post(self.follow_local_addresses)
            )
            self._address_watcher.start()
        elif not self.links and self._address_watcher is not None:
            self._address_watcher.stop()
            self._address_watcher = None

    def _on_float_moved(self, name: str, _old: IPAddress | None, _new: IPAddress) -> None:
        self._daemon._post(partial(self.follow_float, name))

    async def follow_float(self, name: str) -> None:
        """The float link found the peer at a new address: (re-)establish toward it, with
        INITIAL_CONTACT, after removing the SAs toward the old one."""
        daemon = self._daemon
        peer, link = daemon.peers.get(name), self.links.get(name)
        if peer is None or link is None or daemon.engine is None or not peer.config.remote_floats:
            return
        address = link.resolved_address
        if address is None or not peer.wanted_up or not peer.config.enabled:
            return
        if peer.policy is not None:
            if address == peer.remote_ip:
                return
            log.info("peer %s: float link: moved from %s to %s: re-establishing", peer.name,
                     peer.remote_ip, address, extra={"peer": peer.name})  # fmt: skip
            daemon._stop_ike(peer)
        await daemon._start_ike(peer)

    async def follow_local_addresses(self) -> None:
        """An address changed on this host: float peers whose IKE source moved publish the
        new one and re-establish from it."""
        daemon = self._daemon
        for name, link in list(self.links.items()):
            peer = daemon.peers.get(name)
            float_link = peer.config.float_link if peer is not None else None
            if peer is None or float_link is None or not peer.config.local_floats:
                continue
            try:
                local = await daemon.netinfo.route_source(peer.remote_ip or float_link.server)
            except OSError as error:
                log.warning("peer %s: no local address: %s", name, error)
                continue
            link.local_address_changed(local)
            if peer.policy is not None and peer.local_ip is not None and local != peer.local_ip:
                log.info("peer %s: local address moved from %s to %s: re-establishing", name,
                         peer.local_ip, local, extra={"peer": name})  # fmt: skip
                daemon._stop_ike(peer)
                await daemon._start_ike(peer)

    async def follow_names(self) -> None:
        """Re-resolve remote host names; a peer whose name moved is re-established."""
        daemon = self._daemon
        for peer in list(daemon.peers.values()):
            remote = peer.config.remote_address
            if not isinstance(remote, str) or peer.policy is None or peer.remote_ip is None:
                continue
            try:
                family = socket.AF_INET if peer.remote_ip.version == 4 else socket.AF_INET6
                address = await daemon.netinfo.resolve(remote, family)
            except OSError as error:
                log.warning("peer %s: %s (keeping %s)", peer.name, error, peer.remote_ip)
                continue
            if address != peer.remote_ip and peer.policy is not None:
                log.info("peer %s: %s moved from %s to %s: re-establishing",
                         peer.name, remote, peer.remote_ip, address,
                         extra={"peer": peer.name})  # fmt: skip
                daemon._stop_ike(peer)
                await daemon._start_ike(peer)
