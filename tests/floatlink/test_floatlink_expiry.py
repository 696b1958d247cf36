"""Registration stamps (expiry), look-ups kicked by unknown IKE requests, publish-then-call."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.config.schema import FloatFamily
from core.daemon.dns import Stamp
from core.daemon.floatlink import CLOCK_TOLERANCE, STAMP_REFUSED, PeerFloatLink
from tests.floatlink.test_floatlink_unit import (
    ELSEWHERE,
    HERE,
    THERE,
    IPAddress,
    ScriptedDns,
    peer,
    source,
    until,
)

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def stamp(address: IPAddress, age: float, ttl: int = 60) -> Stamp:
    return Stamp("hq", FloatFamily.IPV4, address, int(NOW - age), ttl)


def test_stamp_text_round_trip_and_foreign_txt() -> None:
    original = stamp(THERE, 5)
    assert Stamp.parse(original.text()) == original
    assert original.text().startswith("rbipsec-stamp v=1 node=hq family=ipv4 ")
    foreign = [
        "v=spf1 -all",
        "",
        "rbipsec-stamp v=2 node=hq family=ipv4 address=203.0.113.2 published=1 ttl=60",
        "rbipsec-stamp v=1 node=hq family=ipv4 address=nope published=1 ttl=60",
        "rbipsec-stamp v=1 node=hq family=ipv4 address=203.0.113.2 ttl=60",
    ]
    assert [Stamp.parse(text) for text in foreign] == [None] * len(foreign)


def test_publish_writes_a_stamp_and_reports_a_refused_one(tmp_path: Path) -> None:
    dns, clock = ScriptedDns(), Clock()

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: None, wall=clock)  # fmt: skip
        link.start()
        await until(lambda: dns.published == [HERE], "published")
        assert dns.stamps == [Stamp("branch1", FloatFamily.IPV4, HERE, int(NOW), 60)]
        assert link.status()["stamp_state"] == "stamped"
        dns.refuse_stamps = True
        link.refresh()
        await until(lambda: len(dns.published) == 2, "republished")
        assert link.status()["stamp_state"] == STAMP_REFUSED
        await link.stop()

    asyncio.run(scenario())


def test_an_expired_registration_is_not_resolved_until_it_is_refreshed(tmp_path: Path) -> None:
    dns, clock = ScriptedDns(), Clock()
    age = 60 + CLOCK_TOLERANCE - 5  # expires in 5 s
    dns.peer_stamps = [stamp(THERE, age)]
    moves: list[tuple[IPAddress | None, IPAddress]] = []
    expiries: list[str] = []

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: moves.append((o, n)),
                             on_peer_expired=lambda: expiries.append("hq"), wall=clock)  # fmt: skip
        link.start()
        await until(lambda: moves == [(None, THERE)], "resolved")
        registration = link.status()["registration"]
        assert registration["state"] == "current" and registration["node"] == "hq"
        assert registration["age"] == age and registration["ttl"] == 60
        assert registration["expires_in"] == 5
        # The next look-up is due just after the stamp expires, before the 10 s interval.
        assert 5 < link.status()["next_resolve_in"] <= 6

        clock.now += 6
        link.peer_dead()
        await until(lambda: expiries == ["hq"], "expired")
        status = link.status()
        assert status["resolved_state"] == "not resolved (registration expired)"
        assert status["registration"]["state"] == "expired"
        assert "expired" in status["registration"]["note"]
        assert link.resolved_address is None
        assert "registration expired" in link.unresolved_reason()
        assert moves == [(None, THERE)]
        link.peer_dead()  # still expired: told again (a tunnel kept up may have died since)
        await until(lambda: expiries == ["hq", "hq"], "told again")

        dns.peer_stamps = [Stamp("hq", FloatFamily.IPV4, THERE, int(clock.now), 60)]
        link.peer_dead()
        await until(lambda: len(moves) == 2, "registered again")
        assert moves[1] == (None, THERE)  # the same address counts as found again
        assert link.status()["resolved_state"] == "resolved"
        await link.stop()

    asyncio.run(scenario())


def test_clock_skew_within_the_tolerance_is_not_expiry(tmp_path: Path) -> None:
    dns, clock = ScriptedDns(), Clock()
    dns.peer_stamps = [stamp(THERE, 60 + CLOCK_TOLERANCE - 1), stamp(ELSEWHERE, 10_000)]
    expiries: list[str] = []

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: None,
                             on_peer_expired=lambda: expiries.append("hq"), wall=clock)  # fmt: skip
        link.start()
        await until(lambda: link.resolved_address == THERE, "resolved")
        assert link.status()["registration"]["state"] == "current"
        # A stamp from the future (the peer's clock ahead) is current too.
        dns.peer_stamps = [stamp(THERE, -30)]
        link.peer_dead()
        await until(lambda: dns.lookups == 2, "look-up")
        assert link.resolved_address == THERE and expiries == []
        await link.stop()

    asyncio.run(scenario())


def test_no_stamp_means_no_expiry_info(tmp_path: Path) -> None:
    dns, clock = ScriptedDns(), Clock()
    # A stamp for another address (the A record was set by hand) says nothing about this one.
    dns.peer_stamps = [stamp(ELSEWHERE, 10_000)]

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: None, wall=clock)  # fmt: skip
        link.start()
        await until(lambda: link.resolved_address == THERE, "resolved")
        clock.now += 100_000
        link.peer_dead()
        await until(lambda: dns.lookups == 2, "look-up")
        status = link.status()
        assert link.resolved_address == THERE and status["resolved_state"] == "resolved"
        assert status["registration"]["state"] == "no stamp"
        assert "no expiry info" in status["registration"]["note"]
        await link.stop()

    asyncio.run(scenario())


def test_unknown_ike_requests_kick_a_look_up_at_most_once_per_gap(tmp_path: Path) -> None:
    dns = ScriptedDns()

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: None, kick_gap=0.3)  # fmt: skip
        assert not link.peer_maybe_moved()  # not started
        link.start()
        await until(lambda: dns.lookups == 1, "first look-up")
        assert link.peer_maybe_moved()
        assert not any(link.peer_maybe_moved() for _ in range(100))  # a scanner
        await until(lambda: dns.lookups == 2, "kicked look-up")
        await asyncio.sleep(0.1)
        assert dns.lookups == 2
        await asyncio.sleep(0.25)
        assert link.peer_maybe_moved()
        await until(lambda: dns.lookups == 3, "next kicked look-up")
        await link.stop()

    asyncio.run(scenario())


def test_the_call_after_a_move_waits_for_the_publish(tmp_path: Path) -> None:
    dns = ScriptedDns()
    calls: list[list[IPAddress]] = []
    moved = ELSEWHERE

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: None)  # fmt: skip
        link.start()
        await until(lambda: dns.published == [HERE], "published")
        link.local_address_changed(moved, then=lambda: calls.append(list(dns.published)))
        assert calls == []
        await until(lambda: len(calls) == 1, "called")
        assert calls == [[HERE, moved]]  # after the UPDATE with the new address
        link.local_address_changed(moved, then=lambda: calls.append([]))  # nothing new
        assert calls[-1] == []
        await link.stop()

    asyncio.run(scenario())
