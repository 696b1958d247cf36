"""The daemon runtime: the sans-IO IKE engine, the dataplane and the sockets on one loop.

The loop is: datagrams, timers, dataplane events and operator commands go into the
engine; after each, `_pump` takes the engine's events and datagrams and posts them, as
one job, to a single worker that applies the events to the dataplane and then sends the
datagrams -- so a responder's SAs are installed before its IKE_AUTH answer leaves, and
every dataplane call happens one at a time, in the engine's order.

The operator's commands are in operations.py, config reloads in reload.py, following
moving peers (float links, host names) in following.py, the worker in worker.py.

With `global.enabled = false` the daemon serves its control socket and touches nothing
else: no dataplane, no UDP ports, no interfaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from core.config import Config, DataplaneChoice, PeerConfig
from core.config.schema import FLOAT
from core.crypto.random import RandomSource, SystemRandomSource
from core.daemon import probe
from core.daemon.activity import DataplaneActivity
from core.daemon.bus import EventBus, Subscription, engine_event_json
from core.daemon.following import PeerFollowing
from core.daemon.netinfo import NetInfo, NetInfoError, SystemNetInfo
from core.daemon.operations import Operations
from core.daemon.peers import Glue, PeerRuntime
from core.daemon.policy import peer_policy
from core.daemon.reactions import apply_event, event_peer
from core.daemon.reload import Reloader
from core.daemon.status import peer_state
from core.daemon.timers import DeadlineTimer, Periodic, wall_time
from core.daemon.transport import IKE_PORT, Transport, UdpTransport
from core.daemon.warmup import warm_up_crypto
from core.daemon.worker import Job, JobWorker, nothing
from core.dataplane.api import Dataplane, DataplaneError
from core.dataplane.model import DataplaneEvent
from core.errors import ConfigError, UsageError
from core.ike.constants import NAT_KEEPALIVE, NAT_T_PORT, NON_ESP_MARKER
from core.ike.engines import IkeEngines
from core.ike.events import (
    Address,
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaOutboundReady,
    DownReason,
    IkeEvent,
    IkeSaDown,
    LogMessage,
)
from core.ike.policy import Timing
from core.ike.v2.sa import Datagram
from core.ike.v2.state import IkeState

log = logging.getLogger("rbipsec.daemon")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DELETE_GRACE = 1.0  # seconds the engine gets to send DELETEs (and hear answers) at shutdown
SETUP_RETRY = 10.0  # seconds between attempts for peers whose addresses could not be found
RESOLVE_INTERVAL = 60.0  # seconds between look-ups of remote host names (float links)
_SA_EVENTS = (ChildSaInstalled, ChildSaOutboundReady, ChildSaDeleted)
# An IKE SA down for these reasons makes a float link look the peer up again at once.
_PEER_GONE = (DownReason.PEER_DEAD, DownReason.TIMEOUT)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        dataplane: Dataplane | None = None,
        dataplane_choice: DataplaneChoice | None = None,
        transport_factory: Callable[[], Transport] = UdpTransport,
        netinfo: NetInfo | None = None,
        rng: RandomSource | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.config = config
        self.bus = EventBus()
        self.peers: dict[str, PeerRuntime] = {p.name: PeerRuntime(p) for p in config.peers}
        self.engine: IkeEngines | None = None
        self.dataplane: Dataplane | None = None
        self.dataplane_reason = ""
        self._injected_dataplane = dataplane
        self._dataplane_choice = dataplane_choice
        self._transport_factory = transport_factory
        self.transport: Transport | None = None
        self.netinfo: NetInfo = netinfo if netinfo is not None else SystemNetInfo()
        self._rng: RandomSource = rng if rng is not None else SystemRandomSource()
        self._timing = timing
        self._glue: Glue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.worker = JobWorker()
        self._timer: DeadlineTimer | None = None
        self._periodic: list[Periodic] = []
        self._stop_requested: asyncio.Event | None = None
        self._states: dict[str, str] = {}
        self.started_at = time.time()
        self.engine_errors = 0
        self._stopping = False
        self.enabling = False  # between the start of `_enable` and its end
        self._ordered_batches = 0  # queued batches whose datagrams must keep their order
        self._reschedule_pending = False  # a call of _reschedule is queued on the loop
        self._publish_pending = False  # a call of _publish_states is queued on the loop
        self.started = False  # start() has finished: peers set up, the IKE ports open
        self.operations = Operations(self)
        self.reloader = Reloader(self)
        self.following = PeerFollowing(self)
        self.activity = DataplaneActivity(self)

    # ------------------------------------------------------------------ lifecycle ---
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the daemon is not started"
        return self._loop

    @property
    def enabled(self) -> bool:
        """Route-based IPsec is on (or being switched on: status then shows peers as
        connecting or waiting rather than disabled)."""
        return self.engine is not None or (self.enabling and self.config.global_.enabled)

    def now(self) -> float:
        return self.loop.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self.worker.start()
        if self.config.global_.enabled:
            await self._enable()
        else:
            log.warning(
                "route-based IPsec is disabled (global.enabled = false): no interfaces, SAs "
                "or UDP ports are touched; the control socket still answers"
            )
        self._publish_states()
        self.started = True
        if self.engine is not None:  # before the first peer's IKE_SA_INIT, if it is late
            self.loop.call_soon(warm_up_crypto)

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait_stop_requested(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()

    async def stop(self) -> None:
        if self.engine is not None:
            await self._disable()
        await self.worker.stop()

    async def _enable(self) -> None:
        self.enabling = True
        try:
            await self._switch_on()
        finally:
            self.enabling = False

    async def _switch_on(self) -> None:
        settings = self.config.global_
        if self._injected_dataplane is not None:
            self.dataplane = self._injected_dataplane
            self.dataplane_reason = "given"
        else:
            choice = await probe.choose(self._dataplane_choice or settings.dataplane)
            self.dataplane = probe.build(choice.backend)
            self.dataplane_reason = choice.reason
        log.info("dataplane: %s (%s)", self.dataplane.name, self.dataplane_reason)
        await self.dataplane.start(self._on_dataplane_event)
        self._glue = Glue(self.dataplane)
        self.engine = IkeEngines([], self._rng)
        self._timer = DeadlineTimer(self.loop, self._on_timer)
        # Interfaces are created by the worker while IKE runs: a Child SA's installation
        # queues behind its interface.  Every peer is known to the engine before the
        # ports open, so no early IKE_SA_INIT is refused for a peer not added yet.
        await self._create_interfaces(list(self.peers.values()))
        wanted = [p for p in self.peers.values() if p.config.enabled and p.wanted_up]
        for peer in wanted:
            await self._start_ike(peer, initiate=False)
        transport = self._transport_factory()
        try:
            await transport.open(self)
        except OSError:
            self.engine = None
            self._timer.cancel()
            await self.dataplane.stop()
            raise
        self.transport = transport
        for sock in transport.encap_sockets():
            self.dataplane.register_encap_socket(sock)
        self._periodic = [
            Periodic(self.loop, self._activity_interval(), self.activity.poll),
            Periodic(self.loop, SETUP_RETRY, self._retry_setups),
            Periodic(self.loop, RESOLVE_INTERVAL, lambda: self._post(self.following.follow_names)),
        ]
        for peer in wanted:
            if peer.policy is not None and peer.remote_ip is not None:
                self._guard(partial(self._connect, peer))
                self._pump()  # each IKE_SA_INIT leaves as soon as it is built
        self._pump()
        await self.following.sync()
        log.info("route-based IPsec is enabled: %d peers", len(self.peers))

    async def _disable(self) -> None:
        """DELETE to every peer, then remove everything from the dataplane."""
        engine = self.engine
        assert engine is not None and self.dataplane is not None
        self._stopping = True
        for name in engine.peer_names():
            self._guard(partial(engine.disconnect, name, self.now()))
        self._pump()
        deadline = self.now() + DELETE_GRACE
        while self.now() < deadline and self._any_sa_alive():
            await asyncio.sleep(0.05)
        await self._submit(nothing)  # the DELETE answers' events are applied
        for periodic in self._periodic:
            periodic.cancel()
        self._periodic = []
        if self._timer is not None:
            self._timer.cancel()
        self.engine = None
        await self.following.sync()  # stops them all
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        try:
            await self.dataplane.stop()
        except DataplaneError as error:
            log.error("dataplane cleanup failed: %s", error)
        for peer in self.peers.values():
            peer.policy = None
            peer.interface = None
            peer.children.clear()
            peer.routes.clear()
            peer.link_up = False
        self._glue = None
        self.dataplane = None
        self._stopping = False
        self._publish_states()

    def _any_sa_alive(self) -> bool:
        engine = self.engine
        if engine is None:
            return False
        for name in engine.peer_names():
            sa = engine.current_sa(name)
            if sa is not None and sa.state != IkeState.DESTROYED:
                return True
        return False

    def _activity_interval(self) -> float:
        intervals = [p.dpd_interval for p in self.config.peers if p.dpd_interval > 0]
        return min(10.0, max(1.0, min(intervals, default=30) / 3))

    # ------------------------------------------------------------------ the worker ---
    def _post(self, job: Job) -> None:
        self.worker.post(job)

    async def _submit(self, job: Job) -> Any:
        return await self.worker.submit(job)

    # ------------------------------------------------------------------ the engine ---
    def _guard(self, call: Callable[[], object]) -> None:
        """Run an engine call; an exception there is an engine bug, logged, never fatal."""
        try:
            call()
        except Exception:  # the boundary between the daemon and the engine
            self.engine_errors += 1
            log.exception("IKE engine error (please report this)")

    def _pump(self) -> None:
        engine = self.engine
        if engine is None:
            return
        while True:
            events = engine.pop_events()
            datagrams = engine.pop_datagrams()
            if not events and not datagrams:
                break
            events = _installs_first(events)
            batch = [(self.peers.get(event_peer(event)), event) for event in events]
            if self._ordered_batches or any(isinstance(e, _SA_EVENTS) for e in events):
                # SAs go in before the datagrams that let the peer use them leave, and
                # later datagrams wait behind those so that nothing overtakes.
                self._ordered_batches += 1
                self._post(partial(self._apply, batch, datagrams, ordered=True))
            else:
                self._send(datagrams)
                if batch:
                    self._post(partial(self._apply, batch, []))
            for peer, event in batch:
                if peer is not None and isinstance(event, IkeSaDown):
                    self._after_ike_down(peer, event)
                    link = self.following.links.get(peer.name)
                    if link is not None and event.reason in _PEER_GONE:
                        link.peer_dead()
        self._reschedule_soon()

    def _reschedule_soon(self) -> None:
        """Move the engine timer once per loop pass, however many pumps the pass made:
        the engine's next deadline is a scan of all its SAs."""
        if not self._reschedule_pending:
            self._reschedule_pending = True
            self.loop.call_soon(self._reschedule)

    def _reschedule(self) -> None:
        self._reschedule_pending = False
        engine = self.engine
        if engine is not None and self._timer is not None:
            self._timer.schedule(engine.next_timer())

    def _after_ike_down(self, peer: PeerRuntime, event: IkeSaDown) -> None:
        """Keep `down` down (forget the peer once its DELETE is through, so it cannot
        come back in), and honour an `up` given while that DELETE was in flight."""
        engine = self.engine
        if engine is None or peer.policy is None or self._stopping:
            return
        sa = engine.current_sa(peer.name)
        if sa is not None and sa.state != IkeState.DESTROYED:
            return
        if not peer.wanted_up:
            peer.policy = None
            self._guard(lambda: engine.remove_peer(peer.name, self.now()))
        elif (
            event.reason is DownReason.DELETED_BY_US
            and peer.remote_ip is not None
            and (not peer.config.passive)
        ):
            self._guard(lambda: self._connect(peer))

    async def _apply(
        self,
        batch: list[tuple[PeerRuntime | None, IkeEvent]],
        datagrams: list[Datagram],
        ordered: bool = False,
    ) -> None:
        glue = self._glue
        try:
            for peer, event in batch:
                if isinstance(event, LogMessage):
                    _log_engine_message(peer, event)
                    continue
                if peer is not None and glue is not None:
                    await apply_event(glue, peer, event, self.now())
                self.bus.publish_made(partial(engine_event_json, event, self._to_wall))
            self._send(datagrams)
        finally:
            if ordered:
                self._ordered_batches -= 1
        self._publish_states_soon()

    def _send(self, datagrams: list[Datagram]) -> None:
        if self.transport is not None:
            for datagram in datagrams:
                self.transport.send(datagram.data, datagram.local, datagram.remote)

    def _on_timer(self) -> None:
        engine = self.engine
        if engine is not None:
            self._guard(lambda: engine.handle_timer(self.now()))
            self._pump()

    def datagram_received(self, data: bytes, local: Address, remote: Address) -> None:
        """From the transport: demultiplex port 4500 (RFC 3948 2.2) and feed the engine."""
        engine = self.engine
        if engine is None:
            return
        if local.port == NAT_T_PORT:
            if data == NAT_KEEPALIVE:
                return
            if data[:4] != NON_ESP_MARKER:
                if len(data) > 8 and self.dataplane is not None:
                    self.dataplane.handle_encapsulated_esp(data, local, remote)
                return
            data = data[4:]
        elif data == NAT_KEEPALIVE:
            return
        self.following.ike_from(data, remote.host)  # a moved peer calling: look it up
        self._guard(lambda: engine.receive(data, local, remote, self.now()))
        self._pump()

    def _to_wall(self, instant: float) -> float:
        return wall_time(instant, self.now())

    # ------------------------------------------------------------------ peers --------
    async def _setup_peer(self, peer: PeerRuntime) -> None:
        """Interface, policies and routes; then IKE when the peer is enabled and wanted."""
        await self._create_interface(peer)
        if peer.config.enabled and peer.wanted_up:
            await self._start_ike(peer)

    async def _create_interface(self, peer: PeerRuntime) -> None:
        await self._create_interfaces([peer])

    async def _create_interfaces(self, peers: list[PeerRuntime]) -> None:
        """Queue the creation of the peers' interfaces (the worker runs them in order);
        the address the unnumbered ones borrow is looked up once for all of them."""
        glue = self._glue
        assert glue is not None
        shared = None
        if any(peer.config.address is None for peer in peers):
            shared = await self._unnumbered_source()
        for peer in peers:
            borrowed = shared if peer.config.address is None else None
            self._post(partial(glue.create, peer, borrowed, self.now()))

    async def _borrowed_source(self, config: PeerConfig) -> ipaddress.IPv4Address | None:
        return None if config.address is not None else await self._unnumbered_source()

    async def _unnumbered_source(self) -> ipaddress.IPv4Address | None:
        """The IPv4 address unnumbered interfaces borrow (None: the lookup failed)."""
        try:
            return await self.netinfo.unnumbered_source(self.config.global_.unnumbered_source)
        except OSError as error:
            log.warning("no source address for unnumbered interfaces to borrow: %s", error)
            return None

    async def _start_ike(self, peer: PeerRuntime, *, initiate: bool = True) -> str | None:
        """Add the peer to the engine and initiate unless it waits.  Returns the problem."""
        engine = self.engine
        if engine is None or peer.policy is not None:
            return None
        try:
            local, remote = await self._addresses(peer.config)
            policy = peer_policy(peer.config, local=local, remote=remote, timing=self._timing)
        except (OSError, UsageError) as error:
            return self._setup_failed(peer, str(error))
        if self.engine is not engine or peer.policy is not None:
            return None  # disabled or started meanwhile
        peer.setup_error = None
        peer.policy = policy
        peer.local_ip, peer.remote_ip = local, remote
        if policy.ike_version == 1 and policy.exchange_mode == "aggressive":
            log.warning(
                "peer %s: IKEv1 aggressive mode with a pre-shared key: anyone who captures "
                "one exchange can attack the PSK offline; use a long random PSK, or IKEv2",
                peer.name, extra={"peer": peer.name},
            )  # fmt: skip
        self._guard(lambda: engine.add_peer(policy))
        if remote is not None and initiate:
            self._guard(lambda: self._connect(peer))
        self._pump()
        return None

    def _setup_failed(self, peer: PeerRuntime, message: str) -> str:
        if peer.setup_error != message:
            log.error("peer %s: cannot start: %s", peer.name, message, extra={"peer": peer.name})
        peer.setup_error = message
        peer.error(message, self.now())
        return message

    def _connect(self, peer: PeerRuntime) -> None:
        assert self.engine is not None and peer.remote_ip is not None
        local_host = str(peer.local_ip) if peer.local_ip is not None else "0.0.0.0"
        self.engine.connect(
            peer.name,
            Address(local_host, IKE_PORT),
            Address(str(peer.remote_ip), IKE_PORT),
            self.now(),
        )

    def _stop_ike(self, peer: PeerRuntime) -> None:
        engine = self.engine
        known = peer.policy is not None
        peer.policy = None
        peer.setup_error = None
        if engine is not None and known:
            self._guard(lambda: engine.remove_peer(peer.name, self.now()))
            self._pump()

    async def _addresses(self, config: PeerConfig) -> tuple[IPAddress | None, IPAddress | None]:
        """(local, remote): remote None when dynamic; local None only when both are."""
        local: IPAddress | None = None
        if isinstance(config.local_address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            local = config.local_address
        remote_setting = config.remote_address
        remote: IPAddress | None = None
        if isinstance(remote_setting, ipaddress.IPv4Address | ipaddress.IPv6Address):
            remote = remote_setting
        elif remote_setting is FLOAT:
            link = self.following.links.get(config.name)
            remote = link.resolved_address if link is not None else None
            if remote is None:
                raise NetInfoError(self.following.unresolved_reason(config))
        elif isinstance(remote_setting, str):
            family = (
                None
                if local is None
                else (socket.AF_INET if local.version == 4 else socket.AF_INET6)
            )
            remote = await self.netinfo.resolve(remote_setting, family)
        if local is None and remote is not None:
            local = await self.netinfo.route_source(remote)
        elif local is None and config.local_floats and config.float_link is not None:
            local = await self.netinfo.route_source(config.float_link.server)
        return local, remote

    def _retry_setups(self) -> None:
        for peer in self.peers.values():
            if (
                peer.setup_error is not None
                and peer.wanted_up
                and peer.config.enabled
                and peer.config.ike_version == 2
            ):
                self._post(partial(self._start_ike, peer))

    # ------------------------------------------------------------------ dataplane ---
    # Its events and the inbound-traffic polling are handled in activity.py.
    def _on_dataplane_event(self, event: DataplaneEvent) -> None:
        self.activity.on_dataplane_event(event)

    # ------------------------------------------------------------------ commands -----
    # The operator's commands live in operations.py, reloading in reload.py.
    def subscribe(self) -> Subscription:
        return self.bus.subscribe()

    def peer(self, name: str) -> PeerRuntime:
        return self.operations.peer(name)

    async def up(self, name: str) -> dict[str, Any]:
        return await self.operations.up(name)

    async def down(self, name: str) -> dict[str, Any]:
        return await self.operations.down(name)

    async def rekey(self, name: str, ike: bool = False) -> dict[str, Any]:
        return await self.operations.rekey(name, ike=ike)

    async def status(self, only: str | None = None) -> dict[str, Any]:
        return await self.operations.status(only)

    async def reload(self, new: Config | None = None) -> dict[str, Any]:
        """Apply a new config; raises ConfigError (nothing changed) when it has problems."""
        return await self.reloader.reload(new)

    async def _follow_names(self) -> None:
        await self.following.follow_names()

    def state_of(self, peer: PeerRuntime) -> str:
        sa = self.engine.current_sa(peer.name) if self.engine is not None else None
        return peer_state(peer, sa, self.enabled)

    # ------------------------------------------------------------------ events ------
    def _publish_states_soon(self) -> None:
        """`_publish_states` once per loop pass: each is a scan of every peer, and a pass
        may apply a batch of events per peer."""
        if not self._publish_pending:
            self._publish_pending = True
            self.loop.call_soon(self._publish_states)

    def _publish_states(self) -> None:
        self._publish_pending = False
        for peer in self.peers.values():
            state = self.state_of(peer)
            previous = self._states.get(peer.name)
            if state != previous:
                self._states[peer.name] = state
                self.bus.publish("PeerState", peer=peer.name, state=state, previous=previous)


def _installs_first(events: list[IkeEvent]) -> list[IkeEvent]:
    """Make before break: when a batch installs SAs and deletes others (the responder of
    a Child SA rekey gets the old SA's DELETE and its successor's outbound go-ahead
    together), the deletions go last, so no moment is left without an outbound SA."""
    if not any(isinstance(e, ChildSaInstalled | ChildSaOutboundReady) for e in events):
        return events
    deletions = [e for e in events if isinstance(e, ChildSaDeleted)]
    return [e for e in events if not isinstance(e, ChildSaDeleted)] + deletions


def _log_engine_message(peer: PeerRuntime | None, event: LogMessage) -> None:
    level = logging.getLevelName(event.level.upper())
    if not isinstance(level, int):
        level = logging.INFO
    if peer is not None:
        log.log(level, "peer %s: %s", peer.name, event.message, extra={"peer": peer.name})
    else:
        log.log(level, "%s", event.message)


__all__ = ["ConfigError", "Daemon", "DownReason"]
