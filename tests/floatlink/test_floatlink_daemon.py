"""Daemons in memory (tests/daemon's harness) with a scripted float link: a moved peer's
IKE request triggers a look-up, an expired registration stops initiation."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

from core.config.schema import FloatFamily
from core.daemon.dns import Stamp
from tests.daemon.harness import (
    A_HOST,
    B_HOST,
    Lab,
    Node,
    config_text,
    peer_toml,
    state,
    wait_for,
)
from tests.floatlink.bind import write_key_file
from tests.floatlink.test_floatlink_unit import ScriptedDns

B_MOVED = "198.51.100.3"
PSK = "a shared secret for the tests"


def float_node(lab: Lab, tmp_path: Path, dns: ScriptedDns, interval: int = 60) -> Node:
    """branch1 at A_HOST, finding hq through `dns` (no periodic look-up within a test)."""
    write_key_file(tmp_path / "k.key", "k")
    peer = "\n".join([
        "[[peer]]", 'name = "hq"', 'interface = "ipsec1"', f'local_address = "{A_HOST}"',
        'local_id = "fqdn:branch1.vpn.example"', 'remote_id = "fqdn:hq.vpn.example"',
        f'psk = "{PSK}"',
        'float_link = { zone = "vpn.example.", node = "branch1", peer_node = "hq", '
        f'server = "198.51.100.53", tsig_key_file = "{tmp_path / "k.key"}", '
        f"interval = {interval}, ttl = 60 }}",
    ])  # fmt: skip
    node = lab.node("a", (A_HOST,), config_text(tmp_path / "a.sock", peer + "\n"))
    node.daemon.following.client_for = lambda config: dns
    return node


def hq_node(lab: Lab, tmp_path: Path, host: str, *, passive: bool, seed: int) -> Node:
    text = peer_toml("branch1", "ipsec1", host, A_HOST, local_id="fqdn:hq.vpn.example",
                     remote_id="fqdn:branch1.vpn.example", passive=passive)  # fmt: skip
    return lab.node(f"hq{seed}", (host,), config_text(tmp_path / f"hq{seed}.sock", text),
                    seed=seed)  # fmt: skip


def hq_stamp(host: str, age: float) -> Stamp:
    address = ipaddress.ip_address(host)
    return Stamp("hq", FloatFamily.IPV4, address, int(time.time() - age), 60)


def sent_to(lab: Lab, host: str) -> int:
    return sum(1 for _data, _source, destination in lab.network.sent if destination.host == host)


def test_an_ike_request_from_an_unknown_address_finds_the_moved_peer(tmp_path: Path) -> None:
    dns = ScriptedDns()
    dns.peer_addresses = [ipaddress.ip_address(B_HOST)]

    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = float_node(lab, tmp_path, dns)
        hq_node(lab, tmp_path, B_HOST, passive=True, seed=5)
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "hq") == "up", what="up")
            lookups = dns.lookups
            # hq moves: its new address is in DNS, and it calls from there.
            dns.peer_addresses = [ipaddress.ip_address(B_MOVED)]
            moved = hq_node(lab, tmp_path, B_MOVED, passive=False, seed=6)
            await moved.daemon.start()
            await wait_for(lambda: state(a.daemon, "hq") == "up"
                           and a.daemon.peers["hq"].remote_ip == ipaddress.ip_address(B_MOVED),
                           what="up at the new address")  # fmt: skip
            assert dns.lookups > lookups
            assert state(moved.daemon, "branch1") == "up"
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_a_remote_host_name_is_looked_up_on_an_unknown_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        text = peer_toml("gw", "ipsec1", A_HOST, "gw.example", remote_id="fqdn:gw.example")
        a = lab.node("a", (A_HOST,), config_text(tmp_path / "a.sock", text))
        a.netinfo.names["gw.example"] = B_HOST
        for index, host in enumerate((B_HOST, B_MOVED)):  # the second calls when started
            text = peer_toml("toa", "ipsec1", host, A_HOST, local_id="fqdn:gw.example",
                             passive=index == 0)  # fmt: skip
            lab.node(f"b{index}", (host,), config_text(tmp_path / f"b{index}.sock", text),
                     seed=5 + index)  # fmt: skip
        await lab.nodes[0].daemon.start()
        await lab.nodes[1].daemon.start()
        try:
            await wait_for(lambda: state(a.daemon, "gw") == "up", what="up")
            a.netinfo.names["gw.example"] = B_MOVED  # the name moved; its holder calls
            await lab.nodes[2].daemon.start()
            await wait_for(lambda: state(a.daemon, "gw") == "up"
                           and a.daemon.peers["gw"].remote_ip == ipaddress.ip_address(B_MOVED),
                           what="up at the new address")  # fmt: skip
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_an_expired_registration_is_not_called_until_it_is_renewed(tmp_path: Path) -> None:
    dns = ScriptedDns()
    dns.peer_addresses = [ipaddress.ip_address(B_HOST)]
    dns.peer_stamps = [hq_stamp(B_HOST, 1000)]  # hq died long ago

    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = float_node(lab, tmp_path, dns)
        hq_node(lab, tmp_path, B_HOST, passive=True, seed=5)
        await lab.start()
        try:
            link = a.daemon.following.links["hq"]
            await wait_for(lambda: link.expired, what="expired")
            await asyncio.sleep(0.3)
            peer = a.daemon.peers["hq"]
            assert state(a.daemon, "hq") == "error" and sent_to(lab, B_HOST) == 0
            assert peer.setup_error is not None and "registration expired" in peer.setup_error
            status = link.status()
            assert status["resolved_state"] == "not resolved (registration expired)"

            dns.peer_stamps = [hq_stamp(B_HOST, 0)]  # hq is back and registered
            link.refresh()
            await wait_for(lambda: state(a.daemon, "hq") == "up", what="up")

            # Expired while the tunnel works: the tunnel stays.
            dns.peer_stamps = [hq_stamp(B_HOST, 1000)]
            link.refresh()
            await wait_for(lambda: link.expired, what="expired again")
            await asyncio.sleep(0.2)
            assert state(a.daemon, "hq") == "up"

            # hq goes away (its DELETE arrives); a retries hq until a look-up (here the one
            # DPD would ask for) finds the registration still expired: then it stops.
            await lab.nodes[1].daemon.stop()
            await wait_for(lambda: state(a.daemon, "hq") != "up", what="down")
            link.peer_dead()
            await wait_for(lambda: state(a.daemon, "hq") == "error", what="stopped")
            await asyncio.sleep(0.1)
            calls = sent_to(lab, B_HOST)
            await asyncio.sleep(1.0)  # the engine's retries come every 0.2 s here
            assert sent_to(lab, B_HOST) == calls
        finally:
            await lab.stop()

    asyncio.run(scenario())
