"""Two daemons wired in memory (FakeDataplane, memory transport): tunnels, up/down, rekey."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.dataplane.model import Direction, ExpiryKind, if_id_for
from tests.daemon.harness import (
    A_HOST,
    B_HOST,
    Lab,
    Node,
    config_text,
    peer_toml,
    settle,
    state,
    wait_for,
)


def _pair(
    tmp_path: Path,
    a_extra: dict[str, object] | None = None,
    b_extra: dict[str, object] | None = None,
) -> tuple[Lab, Node, Node]:
    lab = Lab(tmp_path)
    a = lab.node(
        "a",
        (A_HOST,),
        config_text(
            tmp_path / "a.sock",
            peer_toml(
                "tob",
                "ipsec1",
                A_HOST,
                B_HOST,
                address="10.0.0.1/30",
                routes=["10.2.0.0/24"],
                **(a_extra or {}),
            ),
        ),
        seed=1,
    )
    b = lab.node(
        "b",
        (B_HOST,),
        config_text(
            tmp_path / "b.sock",
            peer_toml(
                "toa",
                "ipsec1",
                B_HOST,
                A_HOST,
                address="10.0.0.2/30",
                routes=["10.1.0.0/24"],
                **(b_extra or {}),
            ),
        ),
        seed=2,
    )
    return lab, a, b


def _sas(node: Node) -> dict[tuple[int, Direction], bytes]:
    return {
        (spi, direction): sa.spec.encryption_key
        for (spi, direction, _if_id), sa in node.dataplane.sas.items()
    }


def test_tunnel_comes_up_with_matching_sas_and_link(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, b = _pair(tmp_path)
        await lab.start()
        try:
            await wait_for(
                lambda: state(a.daemon, "tob") == "up" and state(b.daemon, "toa") == "up",
                what="both up",
            )
            await settle(a.daemon)
            await settle(b.daemon)
            sas_a, sas_b = _sas(a), _sas(b)
            assert len(sas_a) == 2 and len(sas_b) == 2
            (in_a,) = [spi for spi, d in sas_a if d is Direction.IN]
            (out_a,) = [spi for spi, d in sas_a if d is Direction.OUT]
            assert (in_a, Direction.OUT) in sas_b and (out_a, Direction.IN) in sas_b
            assert sas_a[(out_a, Direction.OUT)] == sas_b[(out_a, Direction.IN)]
            interface = a.dataplane.interfaces["ipsec1"]
            assert interface.up
            assert interface.spec.if_id == if_id_for(1)
            assert str(interface.spec.address) == "10.0.0.1/30"
            assert interface.spec.tcp_mss == 1360
            assert {str(r) for r in interface.routes} == {"10.2.0.0/24"}
            assert a.dataplane.policies == {if_id_for(1)}
            spec = a.dataplane.sas[(out_a, Direction.OUT, if_id_for(1))].spec
            assert (str(spec.src), str(spec.dst), spec.encap) == (A_HOST, B_HOST, None)
        finally:
            await lab.stop()
        # stop() sent DELETEs and removed everything
        assert not a.dataplane.interfaces and not a.dataplane.sas
        assert ("stop", ()) in a.dataplane.calls

    asyncio.run(scenario())


def test_interface_exists_link_down_before_the_tunnel(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, _b = _pair(tmp_path)
        lab.network.drop = lambda data, src, dst: True  # nothing gets through
        await lab.start()
        try:
            await settle(a.daemon)
            interface = a.dataplane.interfaces["ipsec1"]
            assert not interface.up and interface.routes
            assert state(a.daemon, "tob") == "connecting"
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_down_deletes_sas_on_both_sides_and_up_restores(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, b = _pair(tmp_path, b_extra={"passive": True})
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "tob") == "up", what="up")
            await settle(a.daemon)
            result = await a.daemon.down("tob")
            assert result["state"] == "down"
            await wait_for(
                lambda: (
                    not a.dataplane.sas
                    and not b.dataplane.sas
                    and not b.dataplane.interfaces["ipsec1"].up
                ),
                what="SAs gone",
            )
            await settle(a.daemon)
            assert not a.dataplane.interfaces["ipsec1"].up
            await asyncio.sleep(0.5)  # stays down: nothing re-initiates
            assert state(a.daemon, "tob") == "down" and not a.dataplane.sas
            await a.daemon.up("tob")
            await wait_for(lambda: state(a.daemon, "tob") == "up", what="up again")
            await settle(a.daemon)
            assert a.dataplane.interfaces["ipsec1"].up and len(a.dataplane.sas) == 2
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_rekey_replaces_spis_and_keeps_the_link_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, b = _pair(tmp_path)
        await lab.start()
        try:
            await wait_for(
                lambda: state(a.daemon, "tob") == "up" and state(b.daemon, "toa") == "up", what="up"
            )
            await settle(a.daemon)
            before = set(_sas(a))
            calls = len(a.dataplane.calls)
            await a.daemon.rekey("tob")
            await wait_for(
                lambda: len(_sas(a)) == 2 and set(_sas(a)).isdisjoint(before), what="new SPIs"
            )
            await settle(a.daemon)
            await settle(b.daemon)
            assert set(_sas(b)) == {
                (spi, Direction.IN if d is Direction.OUT else Direction.OUT) for spi, d in _sas(a)
            }
            link_calls = [c for c in a.dataplane.calls[calls:] if c[0] == "set_link"]
            assert link_calls == []
            ike_before = a.daemon.engine.current_sa("tob").spi_i  # type: ignore[union-attr]
            await a.daemon.rekey("tob", ike=True)
            await wait_for(
                lambda: (
                    a.daemon.engine.current_sa("tob").spi_i  # type: ignore[union-attr]
                    != ike_before
                ),
                what="new IKE SA",
            )
            assert state(a.daemon, "tob") == "up"
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_wrong_psk_gives_a_clear_error_and_no_sas(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, b = _pair(tmp_path, b_extra={"passive": True, "psk": "not the same secret"})
        await lab.start()
        try:
            await wait_for(
                lambda: (
                    a.daemon.peers["tob"].last_error is not None
                    and b.daemon.peers["toa"].last_error is not None
                ),
                what="errors",
            )
            await asyncio.sleep(0.5)  # a few retries with the short test backoff
            assert not a.dataplane.sas and not b.dataplane.sas
            assert not a.dataplane.interfaces["ipsec1"].up
            assert state(a.daemon, "tob") == "connecting"
            assert state(b.daemon, "toa") == "waiting"
            status = await a.daemon.status()
            assert "authentication failed" in status["peers"][0]["last_error"]["message"]
            status_b = await b.daemon.status()
            assert "pre-shared keys differ" in status_b["peers"][0]["last_error"]["message"]
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_a_remote_host_name_is_resolved_and_followed(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = lab.node("a", (A_HOST,), config_text(
            tmp_path / "a.sock", peer_toml("gw", "ipsec1", A_HOST, "gw.example",
                                           remote_id="fqdn:gw.example")))  # fmt: skip
        a.netinfo.names["gw.example"] = B_HOST
        for index, host in enumerate((B_HOST, "198.51.100.3")):
            lab.node(f"b{index}", (host,), config_text(
                tmp_path / f"b{index}.sock", peer_toml("toa", "ipsec1", host, A_HOST,
                                                       local_id="fqdn:gw.example",
                                                       passive=True)), seed=5 + index)  # fmt: skip
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "gw") == "up", what="up")
            sa = a.daemon.engine.current_sa("gw")  # type: ignore[union-attr]
            assert sa is not None and sa.remote.host == B_HOST
            a.netinfo.names["gw.example"] = "198.51.100.3"  # the name moved
            await a.daemon._follow_names()  # the periodic job, run now
            await wait_for(lambda: state(a.daemon, "gw") == "up"
                           and a.daemon.engine.current_sa("gw").remote.host  # type: ignore[union-attr]
                           == "198.51.100.3", what="up at the new address")  # fmt: skip
            await settle(a.daemon)
            (out,) = [s for s in a.dataplane.sas.values() if s.spec.direction is Direction.OUT]
            assert str(out.spec.dst) == "198.51.100.3"
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_a_soft_expiry_from_the_dataplane_rekeys_the_child_sa(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, b = _pair(tmp_path)
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "tob") == "up"
                           and state(b.daemon, "toa") == "up", what="up")  # fmt: skip
            await settle(a.daemon)
            before = set(_sas(a))
            (spi_out,) = [spi for spi, d in before if d is Direction.OUT]
            a.dataplane.expire(spi_out, Direction.OUT, if_id_for(1), ExpiryKind.SOFT)
            await wait_for(lambda: len(_sas(a)) == 2 and set(_sas(a)).isdisjoint(before),
                           what="a rekeyed Child SA")  # fmt: skip
            assert a.dataplane.interfaces["ipsec1"].up
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_inbound_esp_is_reported_to_the_engine(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab, a, _b = _pair(tmp_path, a_extra={"dpd_interval": 9})  # polls every 3 s
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "tob") == "up", what="up")
            await settle(a.daemon)
            sa = a.daemon.engine.current_sa("tob")  # type: ignore[union-attr]
            assert sa is not None
            heard = sa.last_heard
            (spi_in,) = [spi for spi, d in _sas(a) if d is Direction.IN]
            a.dataplane.bump_sa(spi_in, Direction.IN, if_id_for(1), packets=5, bytes=500)
            await wait_for(lambda: sa.last_heard > heard + 0.5, timeout=4, what="activity")
            assert sa.dpd_probes == 0  # no probe was needed (none is due before 9 s)
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_ikev1_peer_comes_up_through_the_daemon(tmp_path: Path) -> None:
    """IKEv1 main mode between two daemons: same interface, SAs and status as IKEv2."""
    v1 = {
        "ike_version": 1,
        "exchange_mode": "main",
        "ike_proposals": ["aes256-sha256-modp2048"],
        "esp_proposals": ["aes256-sha256"],
    }

    async def scenario() -> None:
        lab, a, b = _pair(tmp_path, a_extra=v1, b_extra=v1)
        await lab.start()
        try:
            await wait_for(
                lambda: state(a.daemon, "tob") == "up" and state(b.daemon, "toa") == "up",
                what="both up over IKEv1",
            )
            await settle(a.daemon)
            await settle(b.daemon)
            sas_a, sas_b = _sas(a), _sas(b)
            assert len(sas_a) == 2 and len(sas_b) == 2
            (out_a,) = [spi for spi, d in sas_a if d is Direction.OUT]
            assert sas_a[(out_a, Direction.OUT)] == sas_b[(out_a, Direction.IN)]
            status = await a.daemon.status("tob")
            (peer,) = status["peers"]
            assert peer["ike_version"] == 1 and peer["exchange_mode"] == "main"
            assert peer["ike_sa"]["algorithms"]
            assert a.dataplane.interfaces["ipsec1"].up
        finally:
            await lab.stop()

    asyncio.run(scenario())
