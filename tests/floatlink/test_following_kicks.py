"""Look-ups kicked by IKE requests from unknown addresses (following.py), in memory: only
opening IKE messages count, known addresses cost a dict look-up, and kicks are limited
daemon-wide with a growing gap while they find nothing."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from core.daemon.following import KICK_GAP, KICK_MAX_GAP, PeerFollowing
from core.daemon.peers import PeerRuntime
from core.daemon.service import Daemon
from tests.floatlink.test_floatlink_unit import peer

KNOWN = "203.0.113.9"
KNOWN_IP = ipaddress.ip_address(KNOWN)


def ike_header(major: int, exchange: int, flags: int = 0x08, *, responder_spi: bytes = bytes(8),
               message_id: int = 0) -> bytes:  # fmt: skip
    return (b"\x11" * 8 + responder_spi + bytes((33, major << 4, exchange, flags))
            + message_id.to_bytes(4, "big") + (28).to_bytes(4, "big"))  # fmt: skip


SA_INIT = ike_header(2, 34)


class CountingPeers(dict[str, PeerRuntime]):
    """The daemon's peers, counting full scans."""

    scans = 0

    def values(self) -> Any:
        self.scans += 1
        return super().values()


class FakeLink:
    def __init__(self) -> None:
        self.kicks = 0

    def peer_maybe_moved(self) -> bool:
        self.kicks += 1
        return True


class FakeDaemon:
    def __init__(self, peers: CountingPeers) -> None:
        self.peers = peers
        self.clock = 1000.0
        self.posted: list[Callable[[], Any]] = []

    def now(self) -> float:
        return self.clock

    def _post(self, job: Callable[[], Any]) -> None:
        self.posted.append(job)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[FakeDaemon, PeerFollowing, FakeLink]]:
    floating = peer(tmp_path)  # "hq", found by its float link
    fixed = dataclasses.replace(floating, name="fixed", float_link=None, remote_address=KNOWN_IP)
    known = PeerRuntime(fixed, policy=cast(Any, object()), remote_ip=KNOWN_IP)
    daemon = FakeDaemon(CountingPeers(hq=PeerRuntime(floating), fixed=known))
    following = PeerFollowing(cast(Daemon, daemon))
    link = FakeLink()
    following.links["hq"] = cast(Any, link)
    yield daemon, following, link


@pytest.mark.parametrize(
    "data",
    [
        bytes(28),  # zeros where the SPI is: not IKE
        bytes(16) + SA_INIT[16:],  # an initiator SPI of zero
        ike_header(2, 34, flags=0x20),  # an IKE_SA_INIT response
        ike_header(2, 34, flags=0x28),
        ike_header(2, 35),  # IKE_AUTH
        ike_header(2, 34, message_id=1),
        ike_header(2, 34, responder_spi=b"\x01" * 8),
        ike_header(1, 32),  # IKEv1 quick mode
        ike_header(1, 5),  # IKEv1 informational
        ike_header(3, 34),
        SA_INIT[:27],
    ],
)
def test_only_messages_that_open_an_sa_kick(
    setup: tuple[FakeDaemon, PeerFollowing, FakeLink], data: bytes
) -> None:
    daemon, following, link = setup
    following.ike_from(data, "198.51.100.77")
    assert link.kicks == 0 and daemon.peers.scans == 0


@pytest.mark.parametrize("data", [SA_INIT, ike_header(1, 2), ike_header(1, 4)])
def test_opening_messages_from_an_unknown_address_kick(
    setup: tuple[FakeDaemon, PeerFollowing, FakeLink], data: bytes
) -> None:
    _daemon, following, link = setup
    following.ike_from(data, "198.51.100.77")
    assert link.kicks == 1 and following.kicks == 1


def test_a_known_address_costs_one_scan_then_look_ups(
    setup: tuple[FakeDaemon, PeerFollowing, FakeLink],
) -> None:
    daemon, following, link = setup
    for _ in range(100):
        following.ike_from(SA_INIT, KNOWN)
    assert link.kicks == 0 and daemon.peers.scans == 1
    known = daemon.peers["fixed"]
    known.policy = None  # stopped: its address is no longer a peer's
    following.ike_from(SA_INIT, KNOWN)
    assert link.kicks == 1
    known.policy = cast(Any, object())
    known.remote_ip = ipaddress.ip_address("203.0.113.10")  # moved: a new object
    daemon.clock += KICK_GAP
    following.ike_from(SA_INIT, "203.0.113.10")
    assert link.kicks == 1  # a rebuild found it
    assert daemon.peers.scans == 3


def test_kicks_are_limited_daemon_wide_and_back_off_while_fruitless(
    setup: tuple[FakeDaemon, PeerFollowing, FakeLink],
) -> None:
    daemon, following, link = setup
    start = daemon.clock
    kicked_at = []
    for step in range(2000):  # a flood from ever new addresses, one every 0.1 s
        daemon.clock = start + step * 0.1
        before = link.kicks
        following.ike_from(SA_INIT, f"198.51.{100 + step // 256}.{step % 256}")
        if link.kicks > before:
            kicked_at.append(round(daemon.clock - start, 1))
    assert kicked_at[:6] == [0.0, 3.0, 9.0, 21.0, 45.0, 93.0]
    gaps = [b - a for a, b in itertools.pairwise(kicked_at)]
    assert max(gaps) == KICK_MAX_GAP and gaps[-1] == KICK_MAX_GAP
    assert daemon.peers.scans == len(kicked_at)  # no scan while the limit holds
    # a kick that finds the peer moved makes the next one come sooner again
    following._on_float_moved("hq", None, ipaddress.ip_address("198.51.100.3"))
    daemon.clock = start + 2000 * 0.1 + KICK_MAX_GAP
    following.ike_from(SA_INIT, "198.51.100.250")
    daemon.clock += KICK_GAP
    following.ike_from(SA_INIT, "198.51.100.251")
    assert link.kicks == len(kicked_at) + 2
