"""PeerFloatLink with a scripted DNS client: triggers, backoff, what is kept, status."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from core.config import PeerConfig, load_text
from core.config.schema import FloatFamily
from core.daemon.dns import DnsError, Stamp
from core.daemon.floatlink import PeerFloatLink
from tests.floatlink.bind import write_key_file

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HERE = ipaddress.ip_address("198.51.100.1")
THERE = ipaddress.ip_address("203.0.113.2")
ELSEWHERE = ipaddress.ip_address("203.0.113.7")


class ScriptedDns:
    """Answers look-ups from `peer_addresses` and `peer_stamps` (or raises `failure`);
    records UPDATEs and their stamps (refused when `refuse_stamps`)."""

    def __init__(self) -> None:
        self.peer_addresses: list[IPAddress] = [THERE]
        self.peer_stamps: list[Stamp] = []
        self.failure: DnsError | None = None
        self.published: list[IPAddress] = []
        self.stamps: list[Stamp | None] = []
        self.refuse_stamps = False
        self.lookups = 0

    async def publish(self, zone: str, name: str, family: FloatFamily, address: IPAddress,
                      ttl: int, stamp: Stamp | None = None) -> bool:  # fmt: skip
        assert (zone, name, family, ttl) == ("vpn.example.", "branch1.vpn.example.",
                                             FloatFamily.IPV4, 60)  # fmt: skip
        if self.failure is not None:
            raise self.failure
        self.published.append(address)
        self.stamps.append(None if self.refuse_stamps else stamp)
        return stamp is not None and not self.refuse_stamps

    async def lookup_stamps(self, name: str) -> list[Stamp]:
        assert name == "hq.vpn.example."
        return list(self.peer_stamps)

    async def lookup(self, name: str, family: FloatFamily) -> list[IPAddress]:
        assert name == "hq.vpn.example."
        self.lookups += 1
        if self.failure is not None:
            raise self.failure
        return list(self.peer_addresses)


def peer(tmp_path: Path, *extra: str, interval: int = 10) -> PeerConfig:
    write_key_file(tmp_path / "k.key", "k")
    text = "\n".join([
        "[global]", "[[peer]]", 'name = "hq"', 'interface = "ipsec1"', 'psk = "s"', *extra,
        'float_link = { zone = "vpn.example.", node = "branch1", peer_node = "hq", '
        f'server = "198.51.100.53", tsig_key_file = "k.key", interval = {interval}, ttl = 60 }}',
    ])  # fmt: skip
    return load_text(text + "\n", str(tmp_path / "c.toml")).peers[0]


def source(address: IPAddress) -> Callable[[IPAddress], Awaitable[IPAddress]]:
    async def route_source(_destination: IPAddress) -> IPAddress:
        return address

    return route_source


async def until(condition: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_start_publishes_and_resolves_then_follows(tmp_path: Path) -> None:
    dns = ScriptedDns()
    moves: list[tuple[IPAddress | None, IPAddress]] = []

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: moves.append((o, n)))  # fmt: skip
        link.start()
        await until(lambda: dns.published == [HERE] and moves == [(None, THERE)], "start")
        link.local_address_changed(HERE)  # the same address: nothing to do
        link.peer_dead()  # the same peer address: no callback
        await until(lambda: dns.lookups == 2, "look-up after DPD")
        await asyncio.sleep(0.05)
        assert dns.published == [HERE] and moves == [(None, THERE)]
        dns.peer_addresses = [ELSEWHERE, THERE]
        link.peer_dead()
        await until(lambda: dns.lookups == 3, "third look-up")
        assert moves == [(None, THERE)]  # still listed: the peer stays where it works
        dns.peer_addresses = [ELSEWHERE]
        link.peer_dead()
        await until(lambda: len(moves) == 2, "move")
        assert moves[1] == (THERE, ELSEWHERE)
        link.local_address_changed(ipaddress.ip_address("2001:db8::1"))  # not our family
        link.local_address_changed(ipaddress.ip_address("198.51.100.9"))
        await until(lambda: len(dns.published) == 2, "republish")
        assert str(dns.published[1]) == "198.51.100.9"
        await link.stop()

    asyncio.run(scenario())


def test_failures_back_off_up_to_the_interval_and_keep_the_address(tmp_path: Path) -> None:
    dns = ScriptedDns()

    async def scenario() -> None:
        link = PeerFloatLink(peer(tmp_path, interval=10), route_source=source(HERE),
                             on_peer_moved=lambda o, n: None, client=dns,
                             backoff=(0.01, 0.02, 60.0))  # fmt: skip
        link.start()
        await until(lambda: link.resolved_address == THERE, "resolved")
        dns.failure = DnsError("refused", "query hq.vpn.example. A: REFUSED (...)")
        link.refresh()
        await until(lambda: link.resolve_failures == 3, "three failures")
        status = link.status()
        assert status["last_error"]["kind"] == "refused"
        assert status["last_error"]["during"] in ("publish", "resolve")
        assert status["resolved"]["address"] == str(THERE)  # kept
        assert status["published"]["address"] == str(HERE)
        assert 9.0 < status["next_resolve_in"] <= 10.0  # the 60 s step is capped
        dns.failure = None
        link.refresh()
        await until(lambda: link.resolve_failures == 0 and link.publish_failures == 0, "back")
        assert link.status()["last_error"] is None
        await link.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("extra", "publishes", "resolves"),
    [
        (('local_address = "dynamic"', 'local_id = "fqdn:b.vpn.example"'), False, True),
        (('remote_address = "dynamic"', 'remote_id = "fqdn:hq.vpn.example"'), True, False),
        (('local_address = "198.51.100.7"',), True, True),
    ],
)
def test_which_loops_run(tmp_path: Path, extra: tuple[str, ...], publishes: bool,
                         resolves: bool) -> None:  # fmt: skip
    dns = ScriptedDns()

    async def scenario() -> dict[str, object]:
        link = PeerFloatLink(peer(tmp_path, *extra), route_source=source(HERE),
                             on_peer_moved=lambda o, n: None, client=dns)  # fmt: skip
        link.start()
        await asyncio.sleep(0.05)
        status = link.status()
        await link.stop()
        return status

    status = asyncio.run(scenario())
    assert (dns.lookups > 0) is resolves
    assert bool(dns.published) is publishes
    if publishes:
        # A fixed local address is published as written, not the route's source.
        fixed = "198.51.100.7" if "198.51.100.7" in extra[0] else str(HERE)
        assert [str(a) for a in dns.published] == [fixed]
    else:
        assert status["published_state"] == "not published (this node is behind NAT)"
        assert status["next_publish_in"] is None
    if not resolves:
        assert status["resolved_state"] == "not looked up (the peer is behind NAT)"


def test_status_before_start(tmp_path: Path) -> None:
    link = PeerFloatLink(peer(tmp_path), route_source=source(HERE),
                         on_peer_moved=lambda o, n: None, client=ScriptedDns())  # fmt: skip
    status = link.status()
    assert status["published_state"] == "not published"
    assert status["resolved_state"] == "not resolved"
    assert status["server"] == "198.51.100.53:53" and status["peer_name"] == "hq.vpn.example."
    assert status["published"] is None and status["last_error"] is None
