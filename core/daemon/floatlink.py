"""Float link: one peer's address kept in DNS, and the peer's followed.

A `PeerFloatLink` runs two small loops on the daemon's event loop:

- the publisher sends an RFC 2136 UPDATE of `<node>.<zone>` with the address this node uses
  for IKE: at start, every `interval`, and at once when `local_address_changed` reports a
  new one;
- the resolver looks up `<peer_node>.<zone>` at start, every `interval`, and at once after
  `peer_dead` (DPD gave up on the peer); a new address goes to `on_peer_moved(old, new)`,
  so the service re-initiates the IKE SA toward it.

A failure (server unreachable, REFUSED/NOTAUTH, NXDOMAIN, garbage) is recorded for
`status()` and logged once per new error; the loop retries after a backoff (capped at
`interval`) and keeps the last good address: tunnels that work are left alone.  Each DNS
exchange is bounded in time by the client, so neither loop can hang.

Which loops run follows the peer's addresses: a node behind NAT (`local_address =
"dynamic"`) publishes nothing (its inside address means nothing to the peer); a peer behind
NAT (`remote_address = "dynamic"`) is not looked up (it finds us and initiates).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core.config.schema import DYNAMIC, FloatFamily, FloatLink, PeerConfig
from core.daemon.dns import DnsClient, DnsError, DnsServer, TsigDnsClient
from core.daemon.timers import iso_time, wall_time

log = logging.getLogger("rbipsec.floatlink")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RouteSource = Callable[[IPAddress], Awaitable[IPAddress]]
PeerMoved = Callable[[IPAddress | None, IPAddress], None]

# Seconds before the n-th retry after consecutive failures (the last repeats), never more
# than the link's interval.
BACKOFF = (2.0, 5.0, 15.0, 30.0, 60.0)


@dataclass
class Outcome:
    """The last success of one loop: which address, and when (loop clock)."""

    address: IPAddress
    at: float


@dataclass
class Failure:
    kind: str
    message: str
    at: float
    during: str  # "publish" or "resolve"


class PeerFloatLink:
    """The float link of one peer; `start()` on the running loop, `await stop()` at the end."""

    def __init__(
        self,
        peer: PeerConfig,
        *,
        route_source: RouteSource,
        on_peer_moved: PeerMoved,
        client: DnsClient | None = None,
        backoff: tuple[float, ...] = BACKOFF,
    ) -> None:
        assert peer.float_link is not None, "a float link needs the peer's float_link"
        self.peer = peer
        self.peer_name = peer.name
        self.config: FloatLink = peer.float_link
        self.publishes = peer.local_address is not DYNAMIC
        self.resolves = peer.remote_floats
        self._fixed_local = _fixed(peer.local_address)
        self._route_source = route_source
        self._on_peer_moved = on_peer_moved
        self._client = client or TsigDnsClient(
            DnsServer(self.config.server, self.config.port), self.config.tsig_key
        )
        self._backoff = backoff
        self.published: Outcome | None = None
        self.resolved: Outcome | None = None
        self.last_error: Failure | None = None
        self.publish_failures = 0
        self.resolve_failures = 0
        self._local: IPAddress | None = None  # as told by the service
        self._publish_now = asyncio.Event()
        self._resolve_now = asyncio.Event()
        self._next_publish: float | None = None
        self._next_resolve: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ interface ---
    @property
    def resolved_address(self) -> IPAddress | None:
        return self.resolved.address if self.resolved is not None else None

    @property
    def published_address(self) -> IPAddress | None:
        return self.published.address if self.published is not None else None

    def start(self) -> None:
        """Publish and resolve at once, then every interval (needs a running loop)."""
        if self._tasks:
            return
        self._loop = asyncio.get_running_loop()
        if self.publishes:
            self._tasks.append(asyncio.ensure_future(self._run("publish")))
        if self.resolves:
            self._tasks.append(asyncio.ensure_future(self._run("resolve")))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def local_address_changed(self, address: IPAddress | None = None) -> None:
        """The address this node uses for IKE changed (None: find it again by route)."""
        if address is not None and not _family_fits(address, self.config.family):
            return
        if address is not None and address == self._local:
            return
        self._local = address
        if self.publishes and address != self.published_address:
            self._publish_now.set()

    def peer_dead(self) -> None:
        """DPD declared the peer dead: look it up again at once."""
        if self.resolves:
            self._resolve_now.set()

    def refresh(self) -> None:
        """Publish and resolve now (the operator asked, or the config was reloaded)."""
        self._publish_now.set()
        self._resolve_now.set()

    # ------------------------------------------------------------------ the loops ---
    async def _run(self, which: str) -> None:
        wake = self._publish_now if which == "publish" else self._resolve_now
        work = self._publish if which == "publish" else self._resolve
        while True:
            wake.clear()
            delay = float(self.config.interval)
            try:
                await work()
            except DnsError as error:
                delay = min(delay, self._failed(which, error.kind, str(error)))
            except OSError as error:  # the route toward the server or peer is missing
                delay = min(delay, self._failed(which, "no-route", str(error)))
            else:
                self._succeeded(which)
            self._set_next(which, self._now() + delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    async def _publish(self) -> None:
        address = await self._address_to_publish()
        name, zone = self.config.own_name, self.config.zone
        await self._client.publish(zone, name, self.config.family, address, self.config.ttl)
        if self.published_address != address:
            log.info("peer %s: published %s = %s", self.peer_name, name, address,
                     extra={"peer": self.peer_name})  # fmt: skip
        self.published = Outcome(address, self._now())

    async def _address_to_publish(self) -> IPAddress:
        if self._fixed_local is not None:
            return self._fixed_local
        if self._local is not None:
            return self._local
        toward = self.resolved_address or self.config.server
        source = await self._route_source(toward)
        if not _family_fits(source, self.config.family):
            raise DnsError(
                "no-route", f"no {self.config.family.value} address to publish (toward {toward})"
            )
        return source

    async def _resolve(self) -> None:
        name = self.config.peer_name
        addresses = await self._client.lookup(name, self.config.family)
        old = self.resolved_address
        new = old if old in addresses else addresses[0]
        self.resolved = Outcome(new, self._now())
        if new != old:
            log.info("peer %s: %s is %s%s", self.peer_name, name, new,
                     f" (was {old})" if old is not None else "",
                     extra={"peer": self.peer_name})  # fmt: skip
            self._on_peer_moved(old, new)

    def _failed(self, which: str, kind: str, message: str) -> float:
        """Records a failure; returns the delay before the next try."""
        previous = self.last_error
        if which == "publish":
            self.publish_failures += 1
            failures = self.publish_failures
        else:
            self.resolve_failures += 1
            failures = self.resolve_failures
        self.last_error = Failure(kind, message, self._now(), which)
        level = (
            logging.DEBUG
            if previous is not None and previous.message == message
            else logging.WARNING
        )
        kept = self.resolved_address if which == "resolve" else self.published_address
        keeping = f" (keeping {kept})" if kept is not None else ""
        log.log(level, "peer %s: float link %s failed: %s%s", self.peer_name, which, message,
                keeping, extra={"peer": self.peer_name})  # fmt: skip
        return self._backoff[min(failures, len(self._backoff)) - 1]

    def _succeeded(self, which: str) -> None:
        failures = self.publish_failures if which == "publish" else self.resolve_failures
        if failures:
            log.info("peer %s: float link %s works again after %d failures", self.peer_name,
                     which, failures, extra={"peer": self.peer_name})  # fmt: skip
        if which == "publish":
            self.publish_failures = 0
        else:
            self.resolve_failures = 0
        if self.last_error is not None and self.last_error.during == which:
            self.last_error = None

    def _set_next(self, which: str, at: float) -> None:
        if which == "publish":
            self._next_publish = at
        else:
            self._next_resolve = at

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    # ------------------------------------------------------------------ status ------
    def status(self) -> dict[str, Any]:
        """The float-link part of the peer's status (JSON-ready)."""
        now = self._now() if self._loop is not None else None
        config = self.config
        resolved_state = "not looked up (the peer is behind NAT)"
        if self.resolves:
            resolved_state = "resolved" if self.resolved is not None else "not resolved"
        published_state = "not published (this node is behind NAT)"
        if self.publishes:
            published_state = "published" if self.published is not None else "not published"
        return {
            "zone": config.zone,
            "name": config.own_name,
            "peer_name": config.peer_name,
            "server": str(DnsServer(config.server, config.port)),
            "interval": config.interval,
            "ttl": config.ttl,
            "published_state": published_state,
            "published": _outcome_json(self.published, now),
            "next_publish_in": _until(self._next_publish, now) if self.publishes else None,
            "resolved_state": resolved_state,
            "resolved": _outcome_json(self.resolved, now),
            "next_resolve_in": _until(self._next_resolve, now) if self.resolves else None,
            "last_error": _failure_json(self.last_error, now),
        }


class AddressWatcher:
    """Calls `on_change()` when an address is added to or removed from any interface of
    this network namespace (rtnetlink RTM_NEWADDR/RTM_DELADDR), at most once per `settle`
    seconds: re-addressing a link is a burst of events.

    A plain non-blocking netlink socket read by the event loop: the messages are not
    parsed, since any of them means "look at the routes again".
    """

    GROUPS = 0x10 | 0x100  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

    def __init__(self, on_change: Callable[[], None], settle: float = 0.5) -> None:
        self._on_change = on_change
        self._settle = settle
        self._socket: socket.socket | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, self.GROUPS))
        sock.setblocking(False)
        self._socket = sock
        self._loop.add_reader(sock.fileno(), self._readable)

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._socket is not None and self._loop is not None:
            self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
        self._socket = None

    def _readable(self) -> None:
        assert self._socket is not None and self._loop is not None
        try:
            while self._socket.recv(65536):
                pass
        except BlockingIOError:
            pass
        except OSError as error:  # ENOBUFS: events were lost; look anyway
            log.debug("address events: %s", error)
        if self._pending is None:
            self._pending = self._loop.call_later(self._settle, self._fire)

    def _fire(self) -> None:
        self._pending = None
        self._on_change()


def _fixed(address: object) -> IPAddress | None:
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    return None


def _family_fits(address: IPAddress, family: FloatFamily) -> bool:
    return (address.version == 4) == (family is FloatFamily.IPV4)


def _at(instant: float, now: float | None) -> dict[str, Any]:
    if now is None:
        return {"at": None, "ago": None}
    return {"at": iso_time(wall_time(instant, now)), "ago": round(now - instant, 3)}


def _until(instant: float | None, now: float | None) -> float | None:
    if instant is None or now is None:
        return None
    return round(max(0.0, instant - now), 3)


def _outcome_json(outcome: Outcome | None, now: float | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    return {"address": str(outcome.address), **_at(outcome.at, now)}


def _failure_json(failure: Failure | None, now: float | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {"kind": failure.kind, "message": failure.message, "during": failure.during,
            **_at(failure.at, now)}  # fmt: skip
