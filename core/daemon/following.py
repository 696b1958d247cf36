"""Following peers that move: float links, remote host names and local address changes.

One `PeerFloatLink` runs per enabled peer with `float_link` while IPsec is on; when it
finds the peer at a new address, or a remote host name resolves elsewhere, or this
host's IKE source address changes, the peer's IKE SA is re-established toward (or from)
the new address.  All the work is queued on the daemon's worker.

A peer that moved calls us from an address we do not know, and we refuse it until we look
it up.  So an IKE request from an address no peer has makes every peer that may have moved
(float link or host name) be looked up at once, each at most once per `KICK_GAP` seconds
and all together at most that often (less while kicks find nothing: see `ike_from`);
and a node whose own address changed publishes it before it calls, so that look-up finds it.
A float-link peer whose registration expired is not initiated to until it registers again.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from core.config.schema import PeerConfig

if TYPE_CHECKING:
    from core.daemon.dns import DnsClient
    from core.daemon.floatlink import AddressWatcher, PeerFloatLink
    from core.daemon.peers import PeerRuntime
    from core.daemon.service import Daemon

log = logging.getLogger("rbipsec.daemon")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
KICK_GAP = 3.0  # seconds between look-ups triggered by unknown IKE requests
KICK_MAX_GAP = 60.0  # the gap after kicks that found nothing
_NO_SPI = bytes(8)
_IKE_HEADER_SIZE = 28
_IKEV2_SA_INIT = 34
_IKEV2_INITIATOR = 0x08  # flags: sent by the original initiator
_IKEV2_RESPONSE = 0x20
_IKEV1_OPENING_EXCHANGES = (2, 4)  # Identity Protection (main mode), Aggressive


class PeerFollowing:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.links: dict[str, PeerFloatLink] = {}  # by peer name
        self._address_watcher: AddressWatcher | None = None
        self._name_kicks: dict[str, float] = {}  # host-name peers: when last looked up
        # For ike_from: peers' remote addresses (with the address object, to tell a stale
        # entry) and the peers that may move, rebuilt only when a kick is allowed.
        self._known: dict[str, list[tuple[PeerRuntime, IPAddress]]] = {}
        self._movable: list[PeerRuntime] = []
        self._last_kick: float | None = None  # daemon.now() of the last kick
        self._kick_gap = KICK_GAP
        self._moved_since_kick = False  # a look-up found a peer elsewhere since the last kick
        self.kicks = 0  # look-ups kicked by IKE requests from unknown addresses
        # The DNS client of a peer's float link (None: TSIG to its server); tests script it.
        self.client_for: Callable[[PeerConfig], DnsClient | None] = lambda config: None

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
                                     on_peer_moved=partial(self._on_float_moved, name),
                                     on_peer_expired=partial(self._on_float_expired, name),
                                     kick_gap=KICK_GAP, client=self.client_for(config))  # fmt: skip
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
        self._found_a_move()
        self._daemon._post(partial(self.follow_float, name))

    def _on_float_expired(self, name: str) -> None:
        self._daemon._post(partial(self.expire_float, name))

    def unresolved_reason(self, config: PeerConfig) -> str:
        """Why a float-link peer has no address (its error state until it has one)."""
        link = self.links.get(config.name)
        if link is not None:
            return link.unresolved_reason()
        assert config.float_link is not None
        return f"{config.float_link.peer_name} is not resolved yet (float link)"

    def ike_from(self, data: bytes, host: str) -> None:
        """An IKE datagram (non-ESP marker removed) from `host`.  When it opens an SA
        (IKEv2 IKE_SA_INIT request, IKEv1 main or aggressive mode's first message) and no
        peer has that address, peers that may have moved are looked up at once.

        Anyone can send such a datagram, so the check is cheap (a header test, a look-up
        in the known addresses, a rebuild of those only when a kick is allowed) and the
        kicks are limited daemon-wide: one per `KICK_GAP` s, the gap doubling up to
        `KICK_MAX_GAP` while kicks find no peer that moved."""
        if not _opens_an_sa(data) or self._known_host(host):
            return
        daemon = self._daemon
        now = daemon.now()
        if self._last_kick is not None and now - self._last_kick < self._kick_gap:
            return
        self._rebuild_known()
        if host in self._known or not self._movable:
            return  # (a peer stopped after its registration expired is not known)
        if self._last_kick is not None and not self._moved_since_kick:
            self._kick_gap = min(self._kick_gap * 2, KICK_MAX_GAP)
        else:
            self._kick_gap = KICK_GAP
        self._last_kick, self._moved_since_kick = now, False
        self.kicks += 1
        names: set[str] = set()
        for peer in self._movable:
            link = self.links.get(peer.name)
            if link is not None:
                if link.peer_maybe_moved():
                    log.debug("peer %s: IKE request from unknown %s: looking it up", peer.name,
                              host, extra={"peer": peer.name})  # fmt: skip
            elif isinstance(peer.config.remote_address, str):
                last = self._name_kicks.get(peer.name)
                if last is None or now - last >= KICK_GAP:
                    self._name_kicks[peer.name] = now
                    names.add(peer.name)
        if names:
            daemon._post(partial(self.follow_names, names))

    def _known_host(self, host: str) -> bool:
        """`host` is the address of a peer the engine knows, as of the last rebuild and
        still so (a peer's entry is checked against its current state)."""
        peers = self._daemon.peers
        for peer, remote in self._known.get(host, ()):
            fresh = peer.policy is not None and peer.remote_ip is remote
            if fresh and peers.get(peer.config.name) is peer:  # (a reload replaces peers)
                return True
        return False

    def _rebuild_known(self) -> None:
        self._known = {}
        self._movable = []
        for peer in self._daemon.peers.values():
            if peer.policy is not None and peer.remote_ip is not None:
                self._known.setdefault(str(peer.remote_ip), []).append((peer, peer.remote_ip))
            if _may_move(peer.config):
                self._movable.append(peer)

    def _found_a_move(self) -> None:
        """A look-up found a peer elsewhere: kicks are worth their cost again."""
        self._kick_gap = KICK_GAP
        self._moved_since_kick = True

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

    async def expire_float(self, name: str) -> None:
        """The peer's registration expired: stop initiating toward its last address.  A
        tunnel that still works is left alone (DPD tells when it stops working)."""
        daemon = self._daemon
        peer, link = daemon.peers.get(name), self.links.get(name)
        if peer is None or link is None or not link.expired:
            return
        if peer.policy is not None and daemon.state_of(peer) == "up":
            log.info("peer %s: registration expired but the tunnel is up: keeping it", name,
                     extra={"peer": name})  # fmt: skip
            return
        daemon._stop_ike(peer)
        daemon._setup_failed(peer, link.unresolved_reason())

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
            if peer.policy is not None and peer.local_ip is not None and local != peer.local_ip:
                log.info("peer %s: local address moved from %s to %s: re-establishing once "
                         "published", name, peer.local_ip, local, extra={"peer": name})  # fmt: skip
                moved = partial(self._reestablish_from, name, local)
                link.local_address_changed(local, then=partial(daemon._post, moved))
            else:
                link.local_address_changed(local)

    async def _reestablish_from(self, name: str, local: IPAddress) -> None:
        """Our address moved and is published (or publishing failed): call the peer from it."""
        daemon = self._daemon
        peer = daemon.peers.get(name)
        if peer is None or peer.policy is None or peer.local_ip == local:
            return
        daemon._stop_ike(peer)
        await daemon._start_ike(peer)

    async def follow_names(self, only: set[str] | None = None) -> None:
        """Re-resolve remote host names (of the `only` peers); a peer whose name moved is
        re-established."""
        daemon = self._daemon
        for peer in list(daemon.peers.values()):
            if only is not None and peer.name not in only:
                continue
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
                self._found_a_move()
                log.info("peer %s: %s moved from %s to %s: re-establishing",
                         peer.name, remote, peer.remote_ip, address,
                         extra={"peer": peer.name})  # fmt: skip
                daemon._stop_ike(peer)
                await daemon._start_ike(peer)


def _opens_an_sa(data: bytes) -> bool:
    """An IKE header (RFC 7296 3.1, RFC 2408 3.1) of a first message: an initiator SPI,
    no responder SPI, message ID 0, and IKEv2 IKE_SA_INIT request or IKEv1 main/aggressive mode."""
    if len(data) < _IKE_HEADER_SIZE or data[8:16] != _NO_SPI or data[20:24] != bytes(4):
        return False
    if data[:8] == _NO_SPI:  # the initiator's SPI is never zero
        return False
    major, exchange, flags = data[17] >> 4, data[18], data[19]
    if major == 2:
        return exchange == _IKEV2_SA_INIT and flags & (_IKEV2_INITIATOR | _IKEV2_RESPONSE) == (
            _IKEV2_INITIATOR)  # fmt: skip
    return major == 1 and exchange in _IKEV1_OPENING_EXCHANGES


def _may_move(config: PeerConfig) -> bool:
    """A peer whose address is found by name (float link or host name)."""
    return config.enabled and (
        (config.float_link is not None and config.remote_floats)
        or isinstance(config.remote_address, str)
    )
