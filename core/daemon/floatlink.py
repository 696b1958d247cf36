"""Float link: one peer's address kept in DNS, and the peer's followed.

A `PeerFloatLink` runs two small loops on the daemon's event loop:

- the publisher sends an RFC 2136 UPDATE of `<node>.<zone>` with the address this node uses
  for IKE: at start, every `interval`, and at once when `local_address_changed` reports a
  new one;
- the resolver looks up `<peer_node>.<zone>` at start, every `interval`, and at once after
  `peer_dead` (DPD gave up on the peer) or `peer_maybe_moved` (an IKE request came from an
  address no peer has; at most once per `kick_gap` seconds); a new address goes to
  `on_peer_moved(old, new)`, so the service re-initiates the IKE SA toward it.

Registrations expire: every UPDATE also writes a `Stamp` (TXT) saying when it was made and
for how long it holds (`ttl`).  An address whose stamp is older than its ttl (plus
`CLOCK_TOLERANCE` for clock skew) counts as not resolved: `on_peer_expired()` tells the
service to stop initiating toward it, until a fresh stamp appears.  An address without a
stamp (an older peer, or a record set by hand) never expires, as before.

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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core.config.schema import DYNAMIC, FloatFamily, FloatLink, PeerConfig
from core.daemon.dns import DnsClient, DnsError, DnsServer, Stamp, TsigDnsClient
from core.daemon.timers import iso_time, wall_time

log = logging.getLogger("rbipsec.floatlink")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RouteSource = Callable[[IPAddress], Awaitable[IPAddress]]
PeerMoved = Callable[[IPAddress | None, IPAddress], None]
Then = Callable[[], None]

# Seconds before the n-th retry after consecutive failures (the last repeats), never more
# than the link's interval.
BACKOFF = (2.0, 5.0, 15.0, 30.0, 60.0)
# Seconds a stamp may be older than its ttl before it counts as expired: the nodes' clocks
# are assumed NTP-synchronised (TSIG itself fails beyond 300 s of skew to the server).
CLOCK_TOLERANCE = 60.0
# Seconds between look-ups triggered by IKE requests from unknown addresses (per peer), so
# that a scanner cannot make us flood the DNS server.
KICK_GAP = 3.0
STAMP_REFUSED = ("not stamped (the server refused the TXT record: allow TXT for this name "
                 "in its update-policy)")  # fmt: skip


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
        on_peer_expired: Then | None = None,
        client: DnsClient | None = None,
        backoff: tuple[float, ...] = BACKOFF,
        wall: Callable[[], float] = time.time,
        kick_gap: float = KICK_GAP,
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
        self._on_peer_expired = on_peer_expired
        self._wall = wall
        self._kick_gap = kick_gap
        self._last_kick: float | None = None
        self.stamp: Stamp | None = None  # the peer's stamp for the resolved address
        self.expired = False  # the resolved address's registration expired
        self.stamp_refused = False  # the server took our address but not our stamp
        self._then_pending: list[Then] = []  # to call after the next publish attempt
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
        """The peer's address to use; None before the first look-up and while expired."""
        if self.resolved is None or self.expired:
            return None
        return self.resolved.address

    def unresolved_reason(self) -> str:
        """Why `resolved_address` is None, for the peer's error state."""
        name = self.config.peer_name
        if self.expired and self.stamp is not None:
            return (f"{name} is not resolved (registration expired: {self.stamp.address} was "
                    f"published by {self.stamp.node} at {iso_time(self.stamp.published)} "
                    f"with ttl {self.stamp.ttl} s; float link)")  # fmt: skip
        return f"{name} is not resolved yet (float link)"

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

    def local_address_changed(self, address: IPAddress | None = None, then: Then | None = None
                              ) -> None:  # fmt: skip
        """The address this node uses for IKE changed (None: find it again by route).
        `then()` runs once the new address is published (or publishing failed), at once when
        nothing is to be published: the peer looks us up when our IKE request comes in."""
        fits = address is None or _family_fits(address, self.config.family)
        if fits and (address is None or address != self._local):
            self._local = address
            if self.publishes and (address is None or address != self.published_address):
                if then is not None:
                    self._then_pending.append(then)
                self._publish_now.set()
                return
        if then is not None:
            then()

    def peer_dead(self) -> None:
        """DPD declared the peer dead: look it up again at once."""
        if self.resolves:
            self._resolve_now.set()

    def peer_maybe_moved(self) -> bool:
        """An IKE request came from an address no peer has: it may be this peer from a new
        address.  Look it up at once, unless that was done less than `kick_gap` s ago."""
        if not self.resolves or self._loop is None:
            return False
        now = self._now()
        if self._last_kick is not None and now - self._last_kick < self._kick_gap:
            return False
        self._last_kick = now
        self._resolve_now.set()
        return True

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
            waiting: list[Then] = []
            if which == "publish":
                waiting, self._then_pending = self._then_pending, []
            delay = float(self.config.interval)
            try:
                await work()
            except DnsError as error:
                delay = min(delay, self._failed(which, error.kind, str(error)))
            except OSError as error:  # the route toward the server or peer is missing
                delay = min(delay, self._failed(which, "no-route", str(error)))
            except Exception as error:  # a bug must not end the loop: keep trying, slower
                log.debug("peer %s: float link %s failed", self.peer_name, which,
                          exc_info=True, extra={"peer": self.peer_name})  # fmt: skip
                message = f"internal error: {type(error).__name__}: {error}"
                delay = min(delay, self._failed(which, "internal", message))
            else:
                self._succeeded(which)
                if which == "resolve":
                    delay = min(delay, self._until_expiry())
            finally:
                for then in waiting:
                    then()
            self._set_next(which, self._now() + delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    async def _publish(self) -> None:
        address = await self._address_to_publish()
        config = self.config
        name, zone = config.own_name, config.zone
        stamp = Stamp(config.node, config.family, address, int(self._wall()), config.ttl)
        stamped = await self._client.publish(zone, name, config.family, address, config.ttl,
                                             stamp)  # fmt: skip
        if not stamped and not self.stamp_refused:
            log.warning("peer %s: %s: published %s %s; the peer cannot tell when it expires",
                        self.peer_name, name, address, STAMP_REFUSED,
                        extra={"peer": self.peer_name})  # fmt: skip
        self.stamp_refused = not stamped
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
        stamps = await self._client.lookup_stamps(name)
        old = self.resolved_address  # None while expired: a fresh stamp counts as a move
        new = old if old in addresses else addresses[0]
        self.resolved = Outcome(new, self._now())
        self.stamp = _stamp_for(stamps, new, self.config.family)
        if self._stamp_age() > self._stamp_ttl() + CLOCK_TOLERANCE:
            if not self.expired:
                log.warning("peer %s: %s: not initiating", self.peer_name,
                            self._expired_text(), extra={"peer": self.peer_name})  # fmt: skip
            self.expired = True
            # Every time, not only the first: a tunnel kept up while expired may have
            # died since (DPD asked for this look-up), and now is the time to stop calling.
            if self._on_peer_expired is not None:
                self._on_peer_expired()
            return
        if self.expired:
            log.info("peer %s: %s was registered again", self.peer_name, name,
                     extra={"peer": self.peer_name})  # fmt: skip
        self.expired = False
        if new != old:
            log.info("peer %s: %s is %s%s", self.peer_name, name, new,
                     f" (was {old})" if old is not None else "",
                     extra={"peer": self.peer_name})  # fmt: skip
            self._on_peer_moved(old, new)

    def _stamp_age(self) -> float:
        """Seconds since the peer's stamp was made (by our clock); -inf without a stamp."""
        return self._wall() - self.stamp.published if self.stamp is not None else -float("inf")

    def _stamp_ttl(self) -> float:
        return float(self.stamp.ttl) if self.stamp is not None else float("inf")

    def _until_expiry(self) -> float:
        """Seconds until the current stamp expires (look again then), at least 1."""
        left = self._stamp_ttl() + CLOCK_TOLERANCE - self._stamp_age()
        return max(1.0, left + 1.0) if not self.expired else float("inf")

    def _expired_text(self) -> str:
        stamp = self.stamp
        assert stamp is not None
        return (f"the registration of {stamp.address} expired (published by {stamp.node} "
                f"{self._stamp_age():.0f} s ago, ttl {stamp.ttl} s)")  # fmt: skip

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
            if self.expired:
                resolved_state = "not resolved (registration expired)"
        published_state = "not published (this node is behind NAT)"
        stamp_state = None
        if self.publishes:
            published_state = "published" if self.published is not None else "not published"
            if self.published is not None:
                stamp_state = STAMP_REFUSED if self.stamp_refused else "stamped"
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
            "stamp_state": stamp_state,
            "resolved_state": resolved_state,
            "resolved": _outcome_json(self.resolved, now),
            "registration": self._registration_json(),
            "next_resolve_in": _until(self._next_resolve, now) if self.resolves else None,
            "last_error": _failure_json(self.last_error, now),
        }

    def _registration_json(self) -> dict[str, Any] | None:
        """How fresh the peer's registration is (null before the first look-up)."""
        if not self.resolves or self.resolved is None:
            return None
        stamp = self.stamp
        if stamp is None:
            return {"state": "no stamp", "node": None, "published_at": None, "age": None,
                    "ttl": None, "expires_in": None,
                    "note": "the peer publishes no stamp: no expiry info"}  # fmt: skip
        age = self._stamp_age()
        left = stamp.ttl + CLOCK_TOLERANCE - age
        return {"state": "expired" if self.expired else "current", "node": stamp.node,
                "published_at": iso_time(stamp.published), "age": round(age, 3),
                "ttl": stamp.ttl, "expires_in": round(max(0.0, left), 3),
                "note": self._expired_text() if self.expired else None}  # fmt: skip


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


def _stamp_for(stamps: list[Stamp], address: IPAddress, family: FloatFamily) -> Stamp | None:
    """The newest stamp of `family` that names `address` (None: no expiry info for it)."""
    mine = [s for s in stamps if s.family is family and s.address == address]
    return max(mine, key=lambda s: s.published) if mine else None


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
