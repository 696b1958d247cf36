"""The control socket: every command, malformed input, subscriptions, config-apply."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from core.cli import main as cli_main
from core.daemon.control.client import (
    AsyncControlClient,
    CommandFailed,
    ControlClient,
    DaemonNotRunning,
)
from core.daemon.control.commands import Commands
from core.daemon.control.protocol import MAX_LINE
from core.daemon.control.server import ControlServer, ControlSocketError
from tests.daemon.harness import Lab, Node, config_text, peer_toml, settle, state, wait_for

A, B = "198.51.100.1", "198.51.100.2"


async def _raw(path: Path, payload: bytes, lines: int = 1) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    answers = []
    for _ in range(lines):
        line = await asyncio.wait_for(reader.readline(), 5)
        if not line:
            break
        answers.append(json.loads(line))
    writer.close()
    return answers


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.lab = Lab(tmp_path)
        self.socket = tmp_path / "run" / "control.sock"
        self.a: Node = self.lab.node(
            "a",
            (A,),
            config_text(self.socket, peer_toml("tob", "ipsec1", A, B, routes=["10.2.0.0/24"])),
        )
        self.b: Node = self.lab.node(
            "b",
            (B,),
            config_text(tmp_path / "b.sock", peer_toml("toa", "ipsec1", B, A, passive=True)),
            seed=2,
        )
        self.server = ControlServer(str(self.socket), Commands(self.a.daemon))

    async def __aenter__(self) -> Rig:
        await self.server.start()
        await self.lab.start()
        await wait_for(lambda: state(self.a.daemon, "tob") == "up", what="up")
        await settle(self.a.daemon)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.lab.stop()
        await self.server.close()


def test_socket_permissions_and_every_command(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            mode = os.stat(rig.socket).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(os.stat(rig.socket.parent).st_mode) == 0o700
            client = AsyncControlClient(str(rig.socket))
            assert await client.request("ping") == {"pong": True}
            status = await client.request("status")
            (peer,) = status["peers"]
            assert peer["state"] == "up" and peer["interface"] == "ipsec1"
            assert peer["local"] == {"address": A, "port": 500}
            assert peer["remote"] == {"address": B, "port": 500}
            (child,) = peer["child_sas"]
            assert len(child["spi_in"]) == 8 and child["outbound"]
            assert child["expire_in"] > 0 and child["rekey_in"] < child["expire_in"]
            assert child["expire_at"].endswith("Z")
            ike = peer["ike_sa"]
            assert ike["initiator"] and ike["algorithms"].startswith("AES_GCM_16_256")
            assert peer["dpd"]["state"] == "ok" and peer["dpd"]["probes_outstanding"] == 0
            assert peer["nat"]["in_use"] is False and peer["link_up"] is True
            assert status["daemon"]["dataplane"] == "fake" and status["daemon"]["peers_up"] == 1
            assert (await client.request("status", peer="tob"))["peers"][0]["name"] == "tob"
            assert (await client.request("rekey", peer="tob"))["rekeying"] == "child"
            assert (await client.request("down", peer="tob"))["state"] == "down"
            await wait_for(lambda: not rig.a.dataplane.sas, what="SAs gone")
            assert (await client.request("up", peer="tob"))["peer"] == "tob"
            await wait_for(lambda: state(rig.a.daemon, "tob") == "up", what="up again")
            reload = await client.request("reload")
            assert reload["unchanged"] == ["tob"]
            got = await client.request("config-get")
            assert got["path"].endswith("a.toml") and "[[peer]]" in got["text"]
            checked = await client.request("config-validate", text=got["text"])
            assert checked == {"valid": True, "problems": []}
            bad = await client.request("config-validate", text="[global]\nenabled = 3\n")
            assert not bad["valid"] and "global.enabled" in bad["problems"][0]
            await client.close()

    asyncio.run(scenario())


def test_errors_are_answers_not_crashes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            client = AsyncControlClient(str(rig.socket))
            with pytest.raises(CommandFailed, match="unknown peer 'nobody'"):
                await client.request("up", peer="nobody")
            with pytest.raises(CommandFailed, match="unknown command 'explode'"):
                await client.request("explode")
            with pytest.raises(CommandFailed, match='missing "peer"'):
                await client.request("down")
            with pytest.raises(CommandFailed, match='unknown argument "force"'):
                await client.request("rekey", peer="tob", force=True)
            with pytest.raises(CommandFailed, match='"ike" must be a bool'):
                await client.request("rekey", peer="tob", ike="yes")
            await client.close()
            answers = await _raw(
                rig.socket,
                b'{"id": 7, "cmd": \n[1,2]\n"text"\n{"id": 9}\n{"id": 10, "cmd": "ping"}\n',
                lines=5,
            )
            assert [a["ok"] for a in answers] == [False, False, False, False, True]
            assert "malformed JSON" in answers[0]["error"]
            assert "JSON object" in answers[1]["error"]
            assert answers[3]["id"] == 9 and 'missing "cmd"' in answers[3]["error"]
            huge = b'{"id": 1, "cmd": "config-validate", "text": "' + b"x" * MAX_LINE + b'"}\n'
            (answer,) = await _raw(rig.socket, huge, lines=2)
            assert not answer["ok"] and "longer than" in answer["error"]
            # the daemon is still fine
            assert (await _raw(rig.socket, b'{"id": 2, "cmd": "ping"}\n'))[0]["ok"]

    asyncio.run(scenario())


def test_config_apply_rejects_invalid_text_and_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            path = rig.a.config_path
            before = path.read_bytes()
            mtime = path.stat().st_mtime_ns
            client = AsyncControlClient(str(rig.socket))
            broken = before.decode().replace('interface = "ipsec1"', 'interface = "eth0"')
            with pytest.raises(CommandFailed) as failed:
                await client.request("config-apply", text=broken)
            assert "nothing was changed" in str(failed.value)
            assert any("interface" in line for line in failed.value.problems)
            assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
            assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".a")) == []
            # a valid change is saved and applied
            changed = before.decode().replace(
                'routes = ["10.2.0.0/24"]', 'routes = ["10.2.0.0/24", "10.3.0.0/24"]'
            )
            result = await client.request("config-apply", text=changed)
            assert result["reload"]["changed"] == {"tob": ["routes"]}
            assert path.read_text() == changed
            await settle(rig.a.daemon)
            assert {str(r) for r in rig.a.dataplane.interfaces["ipsec1"].routes} == {
                "10.2.0.0/24",
                "10.3.0.0/24",
            }
            # a reload of a broken file is refused with its problems
            path.write_text(broken)
            with pytest.raises(CommandFailed) as failed:
                await client.request("reload")
            assert failed.value.problems and "nothing was changed" in str(failed.value)
            await client.close()

    asyncio.run(scenario())


def test_subscribe_streams_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            watcher = AsyncControlClient(str(rig.socket))
            events = watcher.events()
            first = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0.05)
            await rig.a.daemon.down("tob")
            seen: list[dict[str, Any]] = [await asyncio.wait_for(first, 5)]
            while not any(e["type"] == "ChildSaDeleted" for e in seen):
                seen.append(await asyncio.wait_for(events.__anext__(), 5))
            types = {e["type"] for e in seen}
            assert "PeerState" in types
            deleted = next(e for e in seen if e["type"] == "ChildSaDeleted")
            assert deleted["peer"] == "tob" and len(deleted["spi_in"]) == 8
            assert all("keys" not in json.dumps(e) for e in seen)
            await watcher.close()
            await asyncio.sleep(0.05)
            assert rig.a.daemon.bus.subscriber_count == 0

    asyncio.run(scenario())


def test_the_cli_talks_to_the_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            argv = ["--socket", str(rig.socket)]
            assert await asyncio.to_thread(cli_main, ["status", "--json", *argv]) == 0
            status = json.loads(capsys.readouterr().out)
            assert status["peers"][0]["state"] == "up"
            assert await asyncio.to_thread(cli_main, ["status", *argv]) == 0
            table = capsys.readouterr().out
            assert "tob" in table and "ipsec1" in table and "up" in table
            assert await asyncio.to_thread(cli_main, ["status", "tob", "--json", *argv]) == 0
            assert [p["name"] for p in json.loads(capsys.readouterr().out)["peers"]] == ["tob"]
            assert await asyncio.to_thread(cli_main, ["up", "ghost", *argv]) == 1
            assert "unknown peer 'ghost'" in capsys.readouterr().err
            assert await asyncio.to_thread(cli_main, ["rekey", "tob", "--ike", *argv]) == 0
            assert "tob: ike" in capsys.readouterr().out
            assert await asyncio.to_thread(cli_main, ["reload", *argv]) == 0
            assert "1 unchanged" in capsys.readouterr().out

    asyncio.run(scenario())


def test_clients_say_when_the_daemon_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sock"
    with pytest.raises(DaemonNotRunning, match="does not exist"):
        ControlClient(str(missing))
    assert cli_main(["status", "--socket", str(missing)]) == 1
    assert "daemon is not running" in capsys.readouterr().err
    import socket as socket_module

    stale = socket_module.socket(socket_module.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # a socket file nobody listens on
    assert cli_main(["down", "x", "--socket", str(tmp_path / "stale.sock")]) == 1
    assert "connection refused" in capsys.readouterr().err


def test_a_second_daemon_cannot_take_a_live_socket(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            other = ControlServer(str(rig.socket), Commands(rig.a.daemon))
            with pytest.raises(ControlSocketError, match="already running"):
                await other.start()
        # the stale socket a killed daemon leaves is replaced
        import socket as socket_module

        stale = socket_module.socket(socket_module.AF_UNIX)
        stale.bind(str(tmp_path / "stale.sock"))
        stale.close()
        server = ControlServer(str(tmp_path / "stale.sock"), Commands(rig.a.daemon))
        await server.start()
        await server.close()
        assert not (tmp_path / "stale.sock").exists()

    asyncio.run(scenario())


def test_an_operator_rekey_of_a_passive_peer_is_carried_out(tmp_path: Path) -> None:
    """Passive means nothing spontaneous; an explicit `rbipsec rekey` on the passive side
    still rekeys (the e2e tests rekey from both ends, also the passive one)."""

    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            before = {c.spi_in for c in rig.b.daemon.engine.current_sa("toa").children}
            assert (await rig.b.daemon.operations.rekey("toa"))["rekeying"] == "child"
            await wait_for(lambda: before.isdisjoint(
                c.spi_in for c in rig.b.daemon.engine.current_sa("toa").children
                if c.state.value == "installed"), what="the passive side's rekey")  # fmt: skip
            assert state(rig.b.daemon, "toa") == "up"

    asyncio.run(scenario())
