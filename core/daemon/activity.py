"""What the dataplane tells the daemon: SAs reaching their lifetime limits (a rekey, or
an error at the hard limit) and inbound ESP, polled from the SA counters, which spares
DPD probes toward peers that are evidently alive."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from core.dataplane.api import DataplaneError
from core.dataplane.model import DataplaneEvent, Direction, ExpiryKind, SaExpired

if TYPE_CHECKING:
    from core.daemon.service import Daemon

log = logging.getLogger("rbipsec.daemon")


class DataplaneActivity:
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def on_dataplane_event(self, event: DataplaneEvent) -> None:
        daemon = self._daemon
        peer = next((p for p in daemon.peers.values() if p.config.if_id == event.if_id), None)
        if peer is None:
            return
        if isinstance(event, SaExpired):
            log.info(
                "peer %s: SA %08x %s reached its %s limit",
                peer.name, event.spi, event.direction.value, event.kind.value,
                extra={"peer": peer.name},
            )  # fmt: skip
            engine = daemon.engine
            if engine is not None and peer.policy is not None and not peer.config.passive:
                daemon._guard(lambda: engine.rekey(peer.name, daemon.now()))
                daemon._pump()
            if event.kind is ExpiryKind.HARD:
                peer.error(f"SA {event.spi:08x} hit its hard limit", daemon.now())
        else:
            log.debug("peer %s: traffic routed into %s while down", peer.name, event.interface)

    def poll(self) -> None:
        """The periodic tick: read inbound counters on the worker if any SA is installed."""
        daemon = self._daemon
        if daemon.engine is not None and any(p.children for p in daemon.peers.values()):
            daemon._post(self.note_inbound)

    async def note_inbound(self) -> None:
        daemon = self._daemon
        engine, dataplane = daemon.engine, daemon.dataplane
        if engine is None or dataplane is None:
            return
        for peer in daemon.peers.values():
            for record in list(peer.children.values()):
                if not record.inbound_installed:
                    continue
                try:
                    counters = await dataplane.sa_counters(
                        record.info.spi_in, Direction.IN, record.sas.inbound.if_id
                    )
                except DataplaneError:
                    continue
                if counters.packets > record.inbound_packets_seen:
                    record.inbound_packets_seen = counters.packets
                    daemon._guard(partial(engine.note_inbound_traffic, peer.name, daemon.now()))
        daemon._pump()
