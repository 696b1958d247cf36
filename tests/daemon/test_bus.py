"""The event bus builds an event's JSON only when someone listens (the daemon publishes
one per engine event and log line, most of the time to nobody)."""

from __future__ import annotations

import asyncio
import logging

from core.daemon.bus import BusLogHandler, EventBus, JsonDict


def test_events_are_built_only_for_subscribers() -> None:
    async def scenario() -> None:
        bus = EventBus()
        built: list[int] = []

        def make() -> JsonDict:
            built.append(1)
            return {"type": "Probe", "time": "t"}

        bus.publish_made(make)
        assert built == [] and bus.published == 1
        subscription = bus.subscribe()
        bus.publish_made(make)
        assert built == [1] and bus.published == 2
        assert await asyncio.wait_for(subscription.next_event(), 1) == {"type": "Probe",
                                                                        "time": "t"}  # fmt: skip
        subscription.close()
        bus.publish_made(make)
        assert built == [1] and bus.published == 3

    asyncio.run(scenario())


def test_log_records_become_log_events_with_their_peer() -> None:
    async def scenario() -> None:
        bus = EventBus()
        subscription = bus.subscribe()
        logger = logging.getLogger("rbipsec.test-bus")
        handler = BusLogHandler(bus)
        logger.addHandler(handler)
        try:
            logger.warning("peer %s: %s", "hq", "gone", extra={"peer": "hq"})
        finally:
            logger.removeHandler(handler)
        event = await asyncio.wait_for(subscription.next_event(), 1)
        assert {key: event[key] for key in ("type", "level", "logger", "peer", "message")} == {
            "type": "Log", "level": "warning", "logger": "rbipsec.test-bus", "peer": "hq",
            "message": "peer hq: gone",
        }  # fmt: skip
        assert event["time"].endswith("Z") or "+" in event["time"]

    asyncio.run(scenario())
