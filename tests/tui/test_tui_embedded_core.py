"""The console on a real embedded core with the userspace dataplane (root, namespaces).

The demo's lab (tui/demo.py) is built under a test prefix: a hub namespace and four peer
daemons (one behind a masquerading NAT, one the hub treats as passive), with pings
through every tunnel.  embedded_pilot.py then drives the console inside the hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import load
from tui.demo import PEERS, Lab, hub_config, peer_config, remove_namespace, why_not

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]
PILOT = Path(__file__).with_name("embedded_pilot.py")


def test_demo_configs_are_valid(tmp_path: Path) -> None:
    (tmp_path / "hub.toml").write_text(hub_config(tmp_path))
    hub = load(tmp_path / "hub.toml")
    assert [peer.name for peer in hub.peers] == [peer.name for peer in PEERS]
    assert hub.peer("kiosk").passive and str(hub.peer("shop").remote_address) == "dynamic"  # type: ignore[union-attr]
    for peer in PEERS:
        path = tmp_path / f"{peer.name}.toml"
        path.write_text(peer_config(peer, tmp_path))
        assert load(path).peers[0].remote_address.exploded == peer.hub_address  # type: ignore[union-attr]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    problem = why_not()
    if problem is not None:
        pytest.skip(problem)
    lab = Lab(tmp_path, prefix=f"rbtui{os.getpid() % 100000}-")
    try:
        lab.build()
        lab.start_peers_and_traffic()
        yield lab
    finally:
        lab.close()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.prefix not in listing, "the lab left namespaces behind"


def test_every_screen_and_action_on_real_tunnels(lab: Lab, tmp_path: Path) -> None:
    hub = lab.write_hub_config()
    result = subprocess.run(
        ["ip", "netns", "exec", lab.hub, sys.executable, str(PILOT), str(hub),
         str(tmp_path / "state.json")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.stdout.strip(), f"the pilot printed nothing; stderr:\n{result.stderr[-3000:]}"
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    logs = {path.name: path.read_text()[-1500:] for path in tmp_path.glob("*.log")}
    assert "error" not in seen, f"{seen}\n{logs}"
    assert seen["rows"] == ["branch", "hq", "kiosk", "shop"]
    assert seen["all_up_after"] < 30
    assert seen["branch_ike"] == "v1 main"
    assert seen["nat"] is True and seen["shop_remote_port"] not in (None, 500)
    assert seen["hq_rate_in"] > 0
    assert seen["hq_state_after_rekey"] == "up"
    assert seen["hq_link_when_down"] is False
    assert seen["preview_restarted"] == ["kiosk"]
    assert seen["kiosk_after_apply"] == "up"
    assert "mtu = 1380" in hub.read_text()
    assert seen["events_shown"] > 0
    assert {"IkeSaUp", "ChildSaInstalled", "ConfigReloaded"} <= set(seen["event_types"])
    assert seen["help"] is True
    assert not (tmp_path / "hub.sock").exists(), "the embedded core left its socket"


def test_leftovers_of_a_killed_demo_are_removed(tmp_path: Path) -> None:
    from tui import demo

    if why_not() is not None:
        pytest.skip(str(why_not()))
    leftover = demo.PREFIX + "leftover-test"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    stale_dir = Path(tempfile.gettempdir()) / (demo.PREFIX + "stale-test")
    stale_dir.mkdir(exist_ok=True)
    (stale_dir / demo.PID_FILE).write_text("999999999")
    try:
        removed = demo.remove_leftovers()
        assert leftover in removed and str(stale_dir) in removed
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert leftover not in listing and not stale_dir.exists()
    finally:
        remove_namespace(leftover)
