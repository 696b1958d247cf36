"""The float link against a real BIND9 in a namespace: publish, resolve, follow, failures.

Lab: namespace "dns" runs named on 198.51.100.53 with the zone vpn.example. (keys for the
nodes branch1 and hq, each allowed to update only its own name); namespace "node" holds
198.51.100.1 and 198.51.100.2 and runs the float links in a thread that entered it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import PeerConfig, load_text
from core.daemon.dns import DnsServer, TsigDnsClient
from core.daemon.floatlink import CLOCK_TOLERANCE, STAMP_REFUSED, PeerFloatLink
from tests.floatlink.bind import BindServer, in_netns, write_key_file
from tests.integration.netlab import NetLab

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("named") is None, reason="needs BIND9's named (bind9)"),
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ZONE = "vpn.example."
SERVER = "198.51.100.53"
GARBAGE_SERVER = "198.51.100.54"
LEGACY_SERVER = "198.51.100.55"
BRANCH1 = ipaddress.ip_address("198.51.100.1")
HQ = ipaddress.ip_address("198.51.100.2")
HQ_MOVED = ipaddress.ip_address("198.51.100.12")
INTRUDER = ipaddress.ip_address("198.51.100.99")


class Lab:
    def __init__(self, net: NetLab, bind: BindServer, workdir: Path) -> None:
        self.net = net
        self.bind = bind
        self.workdir = workdir
        self.node = net.namespaces["node"]

    def peer(self, node: str, peer_node: str, *, key_file: Path | None = None,
             server: str = SERVER, interval: int = 10, extra: str = "") -> PeerConfig:  # fmt: skip
        key = key_file or self.bind.key_files[node]
        text = (
            f'[global]\n[[peer]]\nname = "{peer_node}"\ninterface = "ipsec1"\npsk = "s"\n{extra}'
            f'float_link = {{ zone = "{ZONE}", node = "{node}", peer_node = "{peer_node}", '
            f'server = "{server}", tsig_key_file = "{key}", interval = {interval}, '
            f"ttl = {max(interval, 60)} }}\n"
        )
        return load_text(text, str(self.workdir / "config.toml")).peers[0]

    def run(self, scenario: Callable[[], Awaitable[Any]]) -> Any:
        return in_netns(self.node, lambda: asyncio.run(asyncio.wait_for(scenario(), 90)))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("floatlink")
    with NetLab(workdir) as net:
        net.namespace("dns")
        net.namespace("node")
        net.link("node", "198.51.100.1/24", "dns", f"{SERVER}/24")
        for extra in ("198.51.100.2/24", "198.51.100.12/24"):
            net.run("node", "ip", "addr", "add", extra, "dev", "v1a")
        net.run("dns", "ip", "addr", "add", f"{GARBAGE_SERVER}/24", "dev", "v1b")
        bind = BindServer(workdir, net.namespaces["dns"], SERVER, ZONE, ("branch1", "hq"))
        bind.start()
        try:
            yield Lab(net, bind, workdir)
        finally:
            bind.stop()


def fixed_source(address: IPAddress) -> Callable[[IPAddress], Awaitable[IPAddress]]:
    async def route_source(_destination: IPAddress) -> IPAddress:
        return address

    return route_source


def client(peer: PeerConfig, timeout: float = 1.0) -> TsigDnsClient:
    assert peer.float_link is not None
    server = DnsServer(peer.float_link.server, peer.float_link.port)
    return TsigDnsClient(server, peer.float_link.tsig_key, timeout=timeout)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


def test_publishes_resolves_and_follows_a_move(lab: Lab) -> None:
    branch1 = lab.peer("branch1", "hq")
    hq = lab.peer("hq", "branch1")
    moves: list[tuple[IPAddress | None, IPAddress]] = []

    async def scenario() -> float:
        hq_link = PeerFloatLink(hq, route_source=fixed_source(HQ), on_peer_moved=lambda o, n: None,
                                client=client(hq))  # fmt: skip
        branch_link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                                    on_peer_moved=lambda o, n: moves.append((o, n)),
                                    client=client(branch1))  # fmt: skip
        hq_link.start()
        await until(lambda: hq_link.published_address == HQ, 5, "hq published")
        branch_link.start()
        await until(lambda: moves == [(None, HQ)], 5, "branch1 resolving hq")
        status = branch_link.status()
        assert status["published"]["address"] == str(BRANCH1)
        assert status["resolved"]["address"] == str(HQ)
        assert status["resolved_state"] == "resolved" and status["last_error"] is None
        # hq's outer address changes: published at once, followed within one interval.
        hq_link.local_address_changed(HQ_MOVED)
        await until(lambda: hq_link.published_address == HQ_MOVED, 5, "hq republished")
        followed = await until(lambda: len(moves) == 2, 12, "branch1 following hq")
        await hq_link.stop()
        await branch_link.stop()
        return followed

    followed = lab.run(scenario)
    assert moves == [(None, HQ), (HQ, HQ_MOVED)]
    assert followed <= 10.5  # the interval
    assert lab.bind.records(f"hq.{ZONE}") == [str(HQ_MOVED)]
    assert lab.bind.records(f"branch1.{ZONE}") == [str(BRANCH1)]


def test_peer_dead_looks_up_at_once(lab: Lab) -> None:
    branch1 = lab.peer("branch1", "hq", interval=3600, extra='remote_address = "float"\n')
    hq = lab.peer("hq", "branch1", interval=3600)
    moves: list[IPAddress] = []

    async def scenario() -> None:
        hq_link = PeerFloatLink(hq, route_source=fixed_source(HQ), on_peer_moved=lambda o, n: None,
                                client=client(hq))  # fmt: skip
        hq_link.start()
        await until(lambda: hq_link.published_address == HQ, 5, "hq published")
        branch_link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                                    on_peer_moved=lambda o, n: moves.append(n),
                                    client=client(branch1))  # fmt: skip
        branch_link.start()
        await until(lambda: moves == [HQ], 5, "first look-up")
        hq_link.local_address_changed(HQ_MOVED)
        await until(lambda: hq_link.published_address == HQ_MOVED, 5, "hq republished")
        await asyncio.sleep(0.3)
        assert moves == [HQ]  # nothing before the hour is over ...
        branch_link.peer_dead()  # ... unless DPD gave up on the peer
        await until(lambda: moves == [HQ, HQ_MOVED], 5, "look-up after DPD")
        await hq_link.stop()
        await branch_link.stop()

    lab.run(scenario)


def test_bad_tsig_secret_is_notauth_and_backs_off(lab: Lab) -> None:
    wrong = lab.workdir / "wrong-secret.key"
    write_key_file(wrong, "branch1-key")  # the right name with another secret
    branch1 = lab.peer("branch1", "hq", key_file=wrong, interval=60)

    async def scenario() -> dict[str, Any]:
        link = PeerFloatLink(branch1, route_source=fixed_source(INTRUDER),
                             on_peer_moved=lambda o, n: None, client=client(branch1),
                             backoff=(0.2, 0.4, 30.0))  # fmt: skip
        link.start()
        await until(lambda: link.publish_failures >= 3, 5, "three refused updates")
        status = link.status()
        await link.stop()
        return status

    status = lab.run(scenario)
    error = status["last_error"]
    assert error["kind"] == "notauth"
    assert "BADSIG" in error["message"] and "branch1-key" in error["message"]
    assert status["published"] is None and status["published_state"] == "not published"
    assert status["resolved"] is None and status["resolved_state"] == "not resolved"
    assert 20 < status["next_publish_in"] <= 30  # third failure: the third backoff step
    # The server kept what it had: the refused UPDATEs changed nothing.
    assert str(INTRUDER) not in lab.bind.records(f"branch1.{ZONE}")


def test_unknown_key_is_badkey(lab: Lab) -> None:
    stranger = lab.workdir / "stranger.key"
    write_key_file(stranger, "stranger-key")
    branch1 = lab.peer("branch1", "hq", key_file=stranger)

    async def scenario() -> dict[str, Any]:
        link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                             on_peer_moved=lambda o, n: None, client=client(branch1))  # fmt: skip
        link.start()
        await until(lambda: link.resolve_failures >= 1, 5, "refused query")
        status = link.status()
        await link.stop()
        return status

    status = lab.run(scenario)
    assert status["last_error"]["kind"] == "notauth"
    assert "BADKEY" in status["last_error"]["message"]


def test_nxdomain_leaves_the_peer_not_resolved(lab: Lab) -> None:
    branch1 = lab.peer("branch1", "nobody")

    async def scenario() -> dict[str, Any]:
        link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                             on_peer_moved=lambda o, n: None, client=client(branch1))  # fmt: skip
        link.start()
        await until(lambda: link.resolve_failures >= 1, 5, "NXDOMAIN")
        await until(lambda: link.published is not None, 5, "publishing still works")
        status = link.status()
        await link.stop()
        return status

    status = lab.run(scenario)
    assert status["resolved_state"] == "not resolved"
    assert status["last_error"]["kind"] == "nxdomain"
    assert "nobody.vpn.example." in status["last_error"]["message"]


def test_garbage_answers_are_reported(lab: Lab) -> None:
    branch1 = lab.peer("branch1", "hq", server=GARBAGE_SERVER)
    stop = threading.Event()
    ready = threading.Event()

    def answer_garbage() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((GARBAGE_SERVER, 53))
            sock.settimeout(0.1)
            ready.set()
            while not stop.is_set():
                try:
                    data, source = sock.recvfrom(4096)
                except TimeoutError:
                    continue
                # The query's ID and a response header, then bytes that parse as nothing.
                sock.sendto(data[:2] + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00\xff\xfe", source)

    responder = threading.Thread(
        target=lambda: in_netns(lab.net.namespaces["dns"], answer_garbage), daemon=True
    )
    responder.start()
    assert ready.wait(5)

    async def scenario() -> dict[str, Any]:
        link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                             on_peer_moved=lambda o, n: None, client=client(branch1))  # fmt: skip
        link.start()
        await until(lambda: link.resolve_failures >= 1 and link.publish_failures >= 1, 5,
                    "garbage")  # fmt: skip
        status = link.status()
        await link.stop()
        return status

    try:
        status = lab.run(scenario)
    finally:
        stop.set()
        responder.join(5)
    assert status["last_error"]["kind"] == "garbage"
    assert GARBAGE_SERVER in status["last_error"]["message"]
    assert status["resolved"] is None and status["published"] is None


def test_server_down_backs_off_keeps_the_address_and_recovers(lab: Lab) -> None:
    branch1 = lab.peer("branch1", "hq", interval=10)
    hq = lab.peer("hq", "branch1")
    moves: list[IPAddress] = []

    async def publish_hq() -> None:
        link = PeerFloatLink(hq, route_source=fixed_source(HQ), on_peer_moved=lambda o, n: None,
                             client=client(hq))  # fmt: skip
        link.start()
        await until(lambda: link.published_address == HQ, 5, "hq published")
        await link.stop()

    lab.run(publish_hq)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[float]]:
        link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                             on_peer_moved=lambda o, n: moves.append(n), client=client(branch1),
                             backoff=(0.3, 0.6, 1.2))  # fmt: skip
        link.start()
        await until(lambda: moves == [HQ], 5, "resolved")
        await asyncio.to_thread(lab.bind.stop)
        link.peer_dead()
        tries: list[float] = []
        loop = asyncio.get_running_loop()
        while len(tries) < 3:
            await until(lambda: link.resolve_failures > len(tries), 10, "a failed look-up")
            tries.append(loop.time())
        down = link.status()
        await asyncio.to_thread(lab.bind.start)
        link.refresh()
        await until(lambda: link.resolve_failures == 0 and link.last_error is None, 10,
                    "recovery")  # fmt: skip
        up = link.status()
        await link.stop()
        gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
        return down, up, gaps

    down, up, gaps = lab.run(scenario)
    assert down["last_error"]["kind"] == "timeout"
    assert "198.51.100.53:53" in down["last_error"]["message"]
    assert down["resolved"]["address"] == str(HQ)  # the last good address stays in use
    # Each try takes the 1 s timeout, then waits the next backoff step (0.3, then 0.6 s).
    assert 1.25 <= gaps[0] < 3 and gaps[1] >= gaps[0] + 0.2, gaps
    assert moves == [HQ]  # nothing moved while the server was away
    assert up["last_error"] is None and up["resolved"]["address"] == str(HQ)


def test_stamps_are_published_and_an_old_one_expires(lab: Lab) -> None:
    """hq publishes its address with a stamp; branch1's clock set past the stamp's ttl
    (plus the tolerance) sees the registration expired; its own clock sees it current."""
    branch1 = lab.peer("branch1", "hq", interval=3600)
    hq = lab.peer("hq", "branch1", interval=3600)  # ttl 3600
    expiries: list[str] = []
    late = 3600 + CLOCK_TOLERANCE + 5

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        hq_link = PeerFloatLink(hq, route_source=fixed_source(HQ), on_peer_moved=lambda o, n: None,
                                client=client(hq))  # fmt: skip
        hq_link.start()
        await until(lambda: hq_link.published_address == HQ, 5, "hq published")
        await hq_link.stop()
        late_link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                                  on_peer_moved=lambda o, n: None, client=client(branch1),
                                  on_peer_expired=lambda: expiries.append("hq"),
                                  wall=lambda: time.time() + late)  # fmt: skip
        late_link.start()
        await until(lambda: expiries == ["hq"], 5, "expired")
        expired = late_link.status()
        await late_link.stop()
        link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                             on_peer_moved=lambda o, n: None, client=client(branch1))  # fmt: skip
        link.start()
        await until(lambda: link.resolved_address == HQ, 5, "resolved")
        current = link.status()
        await link.stop()
        return expired, current

    expired, current = lab.run(scenario)
    (text,) = lab.bind.records(f"hq.{ZONE}", "TXT")
    assert f"rbipsec-stamp v=1 node=hq family=ipv4 address={HQ} published=" in text
    assert expired["resolved_state"] == "not resolved (registration expired)"
    assert expired["registration"]["state"] == "expired" and expiries == ["hq"]
    assert current["resolved_state"] == "resolved"
    assert current["registration"]["state"] == "current"
    assert current["registration"]["node"] == "hq"
    assert current["registration"]["expires_in"] > 3600 + CLOCK_TOLERANCE - 30


def test_a_server_that_refuses_stamps_still_takes_the_address(lab: Lab) -> None:
    """An update policy written for older nodes (A AAAA only): the UPDATE with the stamp is
    REFUSED as a whole, the address goes alone, the status says how to fix it."""
    lab.net.run("dns", "ip", "addr", "add", f"{LEGACY_SERVER}/24", "dev", "v1b")
    legacy = BindServer(lab.workdir / "legacy", lab.net.namespaces["dns"], LEGACY_SERVER, ZONE,
                        ("branch1", "hq"), types="A AAAA")  # fmt: skip
    legacy.start()
    try:
        branch1 = lab.peer("branch1", "hq", key_file=legacy.key_files["branch1"],
                           server=LEGACY_SERVER)  # fmt: skip

        async def scenario() -> dict[str, Any]:
            link = PeerFloatLink(branch1, route_source=fixed_source(BRANCH1),
                                 on_peer_moved=lambda o, n: None,
                                 client=client(branch1))  # fmt: skip
            link.start()
            await until(lambda: link.published_address == BRANCH1, 5, "published")
            status = link.status()
            await link.stop()
            return status

        status = lab.run(scenario)
        assert status["stamp_state"] == STAMP_REFUSED
        assert status["published_state"] == "published"
        # (hq is not in this zone: the only failure is branch1's look-up of it)
        assert status["last_error"] is None or status["last_error"]["during"] == "resolve"
        assert legacy.records(f"branch1.{ZONE}") == [str(BRANCH1)]
        assert legacy.records(f"branch1.{ZONE}", "TXT") == []
    finally:
        legacy.stop()
        lab.net.run("dns", "ip", "addr", "del", f"{LEGACY_SERVER}/24", "dev", "v1b")
