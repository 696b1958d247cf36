"""What the daemon does with each engine event: dataplane calls, log lines, last errors."""

from __future__ import annotations

import logging

from core.daemon.peers import Glue, PeerRuntime
from core.ike.events import (
    ChildSaDeleted,
    ChildSaInstalled,
    ChildSaOutboundReady,
    DownReason,
    DpdAnswered,
    DpdProbeSent,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    IkeSaRekeyed,
    IkeSaUp,
    LogMessage,
    PeerDead,
)

log = logging.getLogger("rbipsec.peer")

# Reasons an IKE SA ends that are no fault: not shown as the peer's last error.
_ORDINARY_ENDS = frozenset(
    {DownReason.DELETED_BY_US, DownReason.REPLACED, DownReason.DELETED_BY_PEER}
)


def event_peer(event: IkeEvent) -> str:
    """The name of the peer an engine event is about ("" for endpoint-wide messages)."""
    if isinstance(event, IkeSaUp):
        return event.info.peer
    if isinstance(event, IkeSaRekeyed):
        return event.new.peer
    if isinstance(event, ChildSaInstalled):
        return event.info.peer
    return event.peer


async def apply_event(glue: Glue, peer: PeerRuntime, event: IkeEvent, now: float) -> None:
    extra = {"peer": peer.name}
    if isinstance(event, ChildSaInstalled):
        await glue.child_installed(peer, event, now)
    elif isinstance(event, ChildSaOutboundReady):
        await glue.outbound_ready(peer, event, now)
    elif isinstance(event, ChildSaDeleted):
        await glue.child_deleted(peer, event, now)
    elif isinstance(event, IkeSaUp):
        info = event.info
        peer.last_ike = info
        peer.last_error = None
        peer.dead_at = None
        nat = []
        if info.nat_local:
            nat.append("we are behind NAT")
        if info.nat_remote:
            nat.append("the peer is behind NAT")
        if info.nat_forced:
            nat.append("UDP encapsulation forced")
        log.info(
            "peer %s: IKE SA established %s -> %s as %s, %s%s",
            peer.name, info.local, info.remote,
            "initiator" if info.initiator else "responder", info.algorithms,
            f" ({', '.join(nat)})" if nat else "",
            extra=extra,
        )  # fmt: skip
    elif isinstance(event, IkeSaRekeyed):
        log.info(
            "peer %s: IKE SA rekeyed: %s_%s -> %s_%s",
            peer.name, event.old.spi_i, event.old.spi_r, event.new.spi_i, event.new.spi_r,
            extra=extra,
        )  # fmt: skip
        peer.last_ike = event.new
    elif isinstance(event, IkeSaDown):
        detail = f" ({event.detail})" if event.detail else ""
        if event.reason in _ORDINARY_ENDS:
            log.info("peer %s: IKE SA closed: %s%s", peer.name, event.reason.value, detail,
                     extra=extra)  # fmt: skip
        else:
            log.warning("peer %s: IKE SA down: %s%s", peer.name, event.reason.value, detail,
                        extra=extra)  # fmt: skip
            peer.error(f"IKE SA down: {event.reason.value}{detail}", now)
    elif isinstance(event, PeerDead):
        peer.dead_at = now
        peer.error(f"peer dead: no answer to DPD for {event.silence:.0f} s", now)
        log.warning("peer %s: dead (DPD): silent for %.1f s", peer.name, event.silence,
                    extra=extra)  # fmt: skip
    elif isinstance(event, DpdProbeSent):
        log.debug("peer %s: DPD probe %d of %d", peer.name, event.attempt, event.of,
                  extra=extra)  # fmt: skip
    elif isinstance(event, DpdAnswered):
        log.debug("peer %s: DPD answered", peer.name, extra=extra)
    elif isinstance(event, ExchangeFailed):
        notify = f" [{event.notify}]" if event.notify else ""
        peer.error(f"{event.exchange} failed: {event.message}{notify}", now)
        log.warning("peer %s: %s failed: %s%s", peer.name, event.exchange, event.message,
                    notify, extra=extra)  # fmt: skip
    elif isinstance(event, LogMessage):
        log.info("peer %s: %s", peer.name, event.message, extra=extra)
