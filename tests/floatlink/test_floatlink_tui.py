"""The console's view of a float link: parsed from the daemon's status JSON and shown in the
tunnel's detail (registration current, expired, without stamp; a refused stamp)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rich.text import Text

from core.config.schema import FloatFamily
from core.daemon.dns import Stamp
from core.daemon.floatlink import PeerFloatLink
from tests.floatlink.test_floatlink_unit import HERE, THERE, ScriptedDns, peer, source, until
from tui.model import TunnelStatus
from tui.screens.detail import float_link_rows
from tui.widgets.cells import Palette


def daemon_status(tmp_path: Path, dns: ScriptedDns) -> dict[str, Any]:
    """The float_link part of a peer's status, from a real PeerFloatLink."""

    async def scenario() -> dict[str, Any]:
        link = PeerFloatLink(peer(tmp_path), route_source=source(HERE), client=dns,
                             on_peer_moved=lambda o, n: None)  # fmt: skip
        link.start()
        await until(lambda: link.resolved is not None and link.published is not None, "both")
        status = link.status()
        await link.stop()
        return status

    return asyncio.run(scenario())


def rows(tmp_path: Path, dns: ScriptedDns) -> dict[str, str]:
    data = {"name": "hq", "state": "error", "float_link": daemon_status(tmp_path, dns)}
    tunnel = TunnelStatus.parse(data)
    assert tunnel.float_link is not None
    rendered = float_link_rows(tunnel.float_link, Palette.from_variables({}))
    return {label: value.plain if isinstance(value, Text) else value for label, value in rendered}


def test_a_current_registration(tmp_path: Path) -> None:
    dns = ScriptedDns()
    dns.peer_stamps = [Stamp("hq", FloatFamily.IPV4, THERE, int(time.time()) - 100, 60)]
    shown = rows(tmp_path, dns)
    assert shown["Float link"] == f"branch1.vpn.example. = {HERE}  published, stamped"
    assert shown["Peer name"].startswith(f"hq.vpn.example. = {THERE}  registration current, ")
    assert "Registration" not in shown and "DNS error" not in shown


def test_an_expired_registration_and_a_refused_stamp(tmp_path: Path) -> None:
    dns = ScriptedDns()
    dns.refuse_stamps = True
    dns.peer_stamps = [Stamp("hq", FloatFamily.IPV4, THERE, int(time.time()) - 1000, 60)]
    shown = rows(tmp_path, dns)
    assert "not stamped (the server refused the TXT record" in shown["Float link"]
    assert shown["Peer name"] == f"hq.vpn.example. = {THERE}  not resolved (registration expired)"
    assert shown["Registration"].startswith(f"the registration of {THERE} expired")


def test_a_peer_without_stamps(tmp_path: Path) -> None:
    shown = rows(tmp_path, ScriptedDns())
    assert shown["Peer name"] == (
        f"hq.vpn.example. = {THERE}  resolved, no expiry info (the peer publishes no stamp)"
    )


def test_an_older_daemon_without_the_new_keys_parses() -> None:
    data = {"name": "hq", "float_link": {"name": "b.vpn.example.", "resolved_state": "resolved",
                                         "resolved": {"address": "203.0.113.2"}}}  # fmt: skip
    link = TunnelStatus.parse(data).float_link
    assert link is not None and link.registration_state is None and not link.expired
    shown = float_link_rows(link, Palette.from_variables({}))
    assert [label for label, _value in shown] == ["Float link", "Peer name"]
    assert TunnelStatus.parse({"name": "x", "float_link": None}).float_link is None
