"""The kernel backend against this host's kernel, in a fresh network namespace.

The host has XFRM netlink and policies but may lack ESP and XFRM interfaces, so these
tests cover what works everywhere: policies through our messages, leftover cleanup,
errors that name what failed and leave nothing behind, the UDP encapsulation socket.
The full dataplane is proven in the QEMU guest (tests/qemu).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from core.dataplane.api import DataplaneError
from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    InterfaceSpec,
    SaMode,
    SaSpec,
    if_id_for,
)
from core.dataplane.xfrm import messages as m
from core.dataplane.xfrm import requests as rq
from core.dataplane.xfrm.backend import UDP_ENCAP, XfrmDataplane
from core.dataplane.xfrm.netlink import XfrmSocket, in_netns

pytestmark = [pytest.mark.root, pytest.mark.netns]

V4 = ipaddress.IPv4Address
OUR_IF_ID = if_id_for(7)
FOREIGN_IF_ID = 0x1234


def ip(netns: str, *argv: str) -> str:
    done = subprocess.run(
        ["ip", "-n", netns, *argv], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rbx-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def out_template() -> rq.PolicyTemplate:
    return rq.PolicyTemplate(SaMode.TUNNEL, socket.AF_INET, V4("198.51.100.1"), V4("198.51.100.2"))


def test_policy_add_dump_delete(netns: str) -> None:
    sock = XfrmSocket(netns)
    try:
        for direction in rq.POLICY_DIRECTIONS:
            sock.request(rq.newpolicy(direction, OUR_IF_ID, out_template()))
        dumped = sock.request(rq.dump_policies())
        assert sorted(p["dir"] for p in dumped) == [0, 1, 2]
        assert {p.get_attr("XFRMA_IF_ID") for p in dumped} == {OUR_IF_ID}
        assert "if_id 0x72620007" in ip(netns, "xfrm", "policy")
        for direction in rq.POLICY_DIRECTIONS:
            sock.request(rq.delpolicy(direction, OUR_IF_ID))
        assert sock.request(rq.dump_policies()) == []
    finally:
        sock.close()


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_start_removes_our_leftovers_and_keeps_other_software_state(netns: str) -> None:
    sock = XfrmSocket(netns)
    try:
        for if_id in (OUR_IF_ID, FOREIGN_IF_ID):
            sock.request(rq.newpolicy(m.XFRM_POLICY_OUT, if_id, out_template()))
    finally:
        sock.close()
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "rbipsec"], check=True
    )

    async def scenario() -> None:
        backend = XfrmDataplane(netns)
        await backend.start(lambda _event: None)
        policies = ip(netns, "xfrm", "policy")
        assert "if_id 0x1234" in policies and "if_id 0x72620007" not in policies
        tables = subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "rbipsec" not in tables
        await backend.stop()
        assert "if_id 0x1234" in ip(netns, "xfrm", "policy")

    run(scenario())


def test_a_refused_sa_names_it_and_leaves_nothing(netns: str) -> None:
    bad = SaSpec(
        spi=0xBAD1,
        direction=Direction.OUT,
        src=V4("198.51.100.1"),
        dst=V4("198.51.100.2"),
        mode=SaMode.TUNNEL,
        algorithm=EspAlgorithm.AES_GCM_16,
        encryption_key=bytes(7),  # no AES key is 3 bytes long: every kernel refuses it
        if_id=OUR_IF_ID,
    )

    async def scenario() -> None:
        backend = XfrmDataplane(netns)
        await backend.start(lambda _event: None)
        await backend.add_policies(OUR_IF_ID)
        with pytest.raises(DataplaneError, match=r"SA 0x0000bad1 \(out, if_id 0x72620007\)"):
            await backend.add_sa(bad)
        with pytest.raises(DataplaneError) as caught:
            await backend.add_sa(replace(bad, encryption_key=bytes(range(20))))
        assert "0001020304" not in str(caught.value)  # keys never appear in errors
        assert ip(netns, "xfrm", "state").strip() == ""
        assert ip(netns, "xfrm", "policy").strip() == ""
        await backend.stop()

    run(scenario())


def test_create_interface_either_works_down_or_fails_naming_it(netns: str) -> None:
    spec = InterfaceSpec("ipsec7", OUR_IF_ID, mtu=1380, tcp_mss=1300)

    async def scenario() -> None:
        backend = XfrmDataplane(netns)
        await backend.start(lambda _event: None)
        try:
            await backend.create_interface(spec)
        except DataplaneError as exc:  # this host: no XFRM interfaces
            assert "ipsec7" in str(exc)
            assert "ipsec7" not in ip(netns, "link")
        else:  # a kernel with xfrmi: created with its link down, no route can leak yet
            link = ip(netns, "link", "show", "ipsec7")
            assert "state DOWN" in link and "mtu 1380" in link
        await backend.stop()
        assert "ipsec7" not in ip(netns, "link")

    run(scenario())


def test_encap_socket_is_switched_to_espinudp(netns: str) -> None:
    sock = in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.bind(("127.0.0.1", 4500))
        XfrmDataplane(netns).register_encap_socket(sock)
        assert sock.getsockopt(17, UDP_ENCAP) == m.UDP_ENCAP_ESPINUDP
    finally:
        sock.close()


def test_calls_before_start_are_refused_clearly() -> None:
    async def scenario() -> None:
        with pytest.raises(DataplaneError, match="before start"):
            await XfrmDataplane().add_policies(OUR_IF_ID)

    run(scenario())
