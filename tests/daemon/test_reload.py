"""Reload: only added, removed and changed peers are touched; bad configs change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.config import load
from core.dataplane.model import Direction, if_id_for
from core.errors import ConfigError
from tests.daemon.harness import Lab, Node, config_text, peer_toml, settle, state, wait_for

A1, A2, A3, A4 = "198.51.100.1", "198.51.100.11", "198.51.100.21", "198.51.100.31"
B1, B2, B3, B4 = "198.51.100.2", "198.51.100.12", "198.51.100.22", "198.51.100.32"


def _peer_spis(node: Node, interface_index: int) -> set[tuple[int, Direction]]:
    return {
        (spi, d) for (spi, d, if_id) in node.dataplane.sas if if_id == if_id_for(interface_index)
    }


def _touches(call: tuple[str, tuple[object, ...]], interface: str, if_id: int) -> bool:
    for arg in call[1]:
        if arg in (interface, if_id):
            return True
        if getattr(arg, "if_id", None) == if_id or getattr(arg, "name", None) == interface:
            return True
    return False


def test_reload_adds_changes_removes_and_leaves_the_unchanged_peer_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        a_peers = [
            peer_toml("p1", "ipsec1", A1, B1, routes=["10.1.0.0/24"]),
            peer_toml("p2", "ipsec2", A2, B2),
            peer_toml("p3", "ipsec3", A3, B3),
        ]
        a = lab.node("a", (A1, A2, A3, A4), config_text(tmp_path / "a.sock", *a_peers))
        b = lab.node(
            "b",
            (B1, B2, B3, B4),
            config_text(
                tmp_path / "b.sock",
                peer_toml("p1", "ipsec1", B1, A1, passive=True),
                peer_toml("p2", "ipsec2", B2, A2, passive=True),
                peer_toml("p3", "ipsec3", B3, A3, passive=True),
                peer_toml("p4", "ipsec4", B4, A4, passive=True),
            ),
            seed=2,
        )
        await lab.start()
        try:
            await wait_for(
                lambda: all(state(a.daemon, p) == "up" for p in ("p1", "p2", "p3")),
                what="three tunnels up",
            )
            await settle(a.daemon)
            p1_before = _peer_spis(a, 1)
            p2_before = _peer_spis(a, 2)
            calls_before = len(a.dataplane.calls)
            new_text = config_text(
                tmp_path / "a.sock",
                a_peers[0],  # p1 unchanged
                peer_toml("p2", "ipsec2", A2, B2, dpd_interval=30),  # an IKE setting
                peer_toml("p4", "ipsec4", A4, B4, routes=["10.4.0.0/24"]),  # added; p3 removed
            )
            (tmp_path / "a.toml").write_text(new_text)
            summary = await a.daemon.reload()
            assert summary["added"] == ["p4"] and summary["removed"] == ["p3"]
            assert summary["changed"] == {"p2": ["dpd_interval"]}
            assert summary["unchanged"] == ["p1"]
            await wait_for(
                lambda: state(a.daemon, "p2") == "up" and state(a.daemon, "p4") == "up",
                what="p2 and p4 up",
            )
            await settle(a.daemon)
            assert _peer_spis(a, 1) == p1_before
            assert _peer_spis(a, 2) and _peer_spis(a, 2).isdisjoint(p2_before)
            assert "ipsec3" not in a.dataplane.interfaces and not _peer_spis(a, 3)
            assert {str(r) for r in a.dataplane.interfaces["ipsec4"].routes} == {"10.4.0.0/24"}
            assert list(a.daemon.peers) == ["p1", "p2", "p4"]
            touching_p1 = [
                c for c in a.dataplane.calls[calls_before:] if _touches(c, "ipsec1", if_id_for(1))
            ]
            assert touching_p1 == []
            assert a.dataplane.interfaces["ipsec1"].up
            # B learnt of p3's end through a DELETE
            await wait_for(lambda: not _peer_spis(b, 3), what="b's p3 SAs gone")
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_interface_only_change_is_applied_in_place(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = lab.node(
            "a",
            (A1,),
            config_text(
                tmp_path / "a.sock", peer_toml("p1", "ipsec1", A1, B1, routes=["10.1.0.0/24"])
            ),
        )
        lab.node(
            "b",
            (B1,),
            config_text(tmp_path / "b.sock", peer_toml("p1", "ipsec1", B1, A1, passive=True)),
            seed=2,
        )
        await lab.start()
        try:
            await wait_for(lambda: state(a.daemon, "p1") == "up", what="up")
            await settle(a.daemon)
            before = _peer_spis(a, 1)
            text = config_text(
                tmp_path / "a.sock",
                peer_toml(
                    "p1", "ipsec1", A1, B1, routes=["10.9.0.0/24"], mtu=1300, address="10.0.0.1/30"
                ),
            )
            summary = await a.daemon.reload(load_text_at(tmp_path / "a.toml", text))
            assert set(summary["changed"]["p1"]) == {"address", "mtu", "routes"}
            await settle(a.daemon)
            interface = a.dataplane.interfaces["ipsec1"]
            assert interface.spec.mtu == 1300 and interface.spec.tcp_mss == 1260
            assert str(interface.spec.address) == "10.0.0.1/30"
            assert {str(r) for r in interface.routes} == {"10.9.0.0/24"}
            assert _peer_spis(a, 1) == before and interface.up
        finally:
            await lab.stop()

    asyncio.run(scenario())


def load_text_at(path: Path, text: str):  # type: ignore[no-untyped-def]
    path.write_text(text)
    return load(path)


def test_reload_with_problems_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = lab.node(
            "a", (A1,), config_text(tmp_path / "a.sock", peer_toml("p1", "ipsec1", A1, B1))
        )
        await lab.start()
        try:
            await settle(a.daemon)
            calls = len(a.dataplane.calls)
            config = a.daemon.config
            (tmp_path / "a.toml").write_text(
                config_text(tmp_path / "a.sock", peer_toml("p1", "ipsec99", A1, B1))
            )
            with pytest.raises(ConfigError) as raised:
                await a.daemon.reload()
            assert any("peer[0].interface" in line for line in raised.value.problems)
            assert a.daemon.config is config
            assert len(a.dataplane.calls) == calls
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_disabled_daemon_touches_nothing_and_enabling_by_reload_starts(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        peer = peer_toml("p1", "ipsec1", A1, B1)
        a = lab.node("a", (A1,), config_text(tmp_path / "a.sock", peer, enabled=False))
        await lab.start()
        try:
            await asyncio.sleep(0.1)
            assert a.dataplane.calls == [] and not a.transport.opened
            assert a.daemon.dataplane is None and a.daemon.engine is None
            status = await a.daemon.status()
            assert status["daemon"]["enabled"] is False
            assert [p["state"] for p in status["peers"]] == ["disabled"]
            with pytest.raises(Exception, match="disabled"):
                await a.daemon.up("p1")
            (tmp_path / "a.toml").write_text(config_text(tmp_path / "a.sock", peer))
            await a.daemon.reload()
            await settle(a.daemon)
            assert a.transport.opened and "ipsec1" in a.dataplane.interfaces
            assert state(a.daemon, "p1") == "connecting"
            (tmp_path / "a.toml").write_text(config_text(tmp_path / "a.sock", peer, enabled=False))
            await a.daemon.reload()
            assert not a.dataplane.interfaces and not a.transport.opened
            assert state(a.daemon, "p1") == "disabled"
        finally:
            await lab.stop()

    asyncio.run(scenario())


def test_peer_disabled_in_config_gets_its_interface_but_no_ike(tmp_path: Path) -> None:
    async def scenario() -> None:
        lab = Lab(tmp_path)
        a = lab.node(
            "a",
            (A1,),
            config_text(tmp_path / "a.sock", peer_toml("p1", "ipsec1", A1, B1, enabled=False)),
        )
        await lab.start()
        try:
            await settle(a.daemon)
            assert "ipsec1" in a.dataplane.interfaces
            assert not a.dataplane.interfaces["ipsec1"].up
            assert a.transport.sent == []
            assert state(a.daemon, "p1") == "disabled"
            with pytest.raises(Exception, match="disabled in the config"):
                await a.daemon.up("p1")
        finally:
            await lab.stop()

    asyncio.run(scenario())
