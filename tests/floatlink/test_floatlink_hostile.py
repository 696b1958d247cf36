"""Hostile DNS content: stamps with absurd numbers, and a look-up that fails unexpectedly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.config.floatlink import MAX_TTL
from core.config.schema import FloatFamily
from core.daemon.dns import Stamp
from core.daemon.floatlink import PeerFloatLink
from tests.floatlink.test_floatlink_unit import THERE, ScriptedDns, peer, source, until

PREFIX = "rbipsec-stamp v=1 node=hq family=ipv4 address=203.0.113.2"


@pytest.mark.parametrize(
    "numbers",
    [
        f"published=1 ttl={'9' * 400}",
        "published=1 ttl=-60",
        "published=1 ttl=0",
        f"published=1 ttl={MAX_TTL + 1}",
        f"published={10**12} ttl=60",
        "published=-5 ttl=60",
        f"published={1 << 33} ttl=60",
        f"published={'1' * 5000} ttl=60",  # past int()'s digit limit: ValueError
    ],
)
def test_stamps_with_implausible_numbers_are_no_stamps(numbers: str) -> None:
    assert Stamp.parse(f"{PREFIX} {numbers}") is None


def test_stamps_at_the_limits_are_taken() -> None:
    top = Stamp.parse(f"{PREFIX} published={(1 << 33) - 1} ttl={MAX_TTL}")
    assert top is not None and (top.published, top.ttl) == ((1 << 33) - 1, MAX_TTL)
    assert Stamp.parse(f"{PREFIX} published=0 ttl=1") is not None


class ExplodingDns(ScriptedDns):
    """Look-ups raise an error no DNS client should; `explode` turns it off."""

    def __init__(self) -> None:
        super().__init__()
        self.explode = True

    async def lookup_stamps(self, name: str) -> list[Stamp]:
        if self.explode:
            # as a stamp with a huge ttl made float() fail before parsing was bounded
            raise OverflowError("int too large to convert to float")
        return await super().lookup_stamps(name)


def test_an_unexpected_error_is_recorded_and_the_loop_goes_on(tmp_path: Path) -> None:
    dns = ExplodingDns()

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(THERE), client=dns,
                             on_peer_moved=lambda o, n: None,
                             backoff=(0.01, 0.02, 60.0))  # fmt: skip
        link.start()
        await until(lambda: link.resolve_failures >= 2, "two failed rounds")
        error = link.status()["last_error"]
        assert error["kind"] == "internal" and error["during"] == "resolve"
        assert "OverflowError" in error["message"]
        dns.explode = False
        link.refresh()
        await until(lambda: link.resolved_address == THERE, "resolved after all")
        assert link.status()["last_error"] is None
        await link.stop()

    asyncio.run(scenario())


def test_a_stamp_far_in_the_future_keeps_status_working(tmp_path: Path) -> None:
    dns = ScriptedDns()
    dns.peer_stamps = [Stamp("hq", FloatFamily.IPV4, THERE, (1 << 33) - 1, MAX_TTL)]

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(THERE), client=dns,
                             on_peer_moved=lambda o, n: None)  # fmt: skip
        link.start()
        await until(lambda: link.resolved_address == THERE, "resolved")
        assert link.status()["registration"]["published_at"].startswith("2242-")
        await link.stop()

    asyncio.run(scenario())
