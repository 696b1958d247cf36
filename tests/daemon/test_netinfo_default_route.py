"""The default route's interface (for unnumbered tunnels) by a route look-up, not a dump
of every route, in a namespace of its own (root)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netlab import python_in, scratch_namespace

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.netns]

SCRIPT = r"""
import json, subprocess
from core.daemon import netinfo
from core.dataplane.userspace import rtnl

def ip(*args):
    subprocess.run(["ip", *args], check=True)

sock = rtnl.RtnlSocket()
dumps = []
original = sock.routes
sock.routes = lambda *a, **k: dumps.append(k) or original(*a, **k)
found = [netinfo._default_route_interface(sock)]  # no default route
ip("route", "add", "default", "via", "198.51.100.254", "dev", "veth0")
ip("route", "add", "10.0.0.0/8", "via", "198.51.100.253")
found.append(netinfo._default_route_interface(sock))
dumps_before = len(dumps)
ip("route", "add", "240.0.0.0/4", "via", "198.51.100.252", "dev", "veth2")  # class E routed
found.append(netinfo._default_route_interface(sock))
print(json.dumps([found, dumps_before, dumps]))
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    with scratch_namespace(
        "rbdefault",
        "link add veth0 type veth peer name veth1",
        "link add veth2 type veth peer name veth3",
        "link set lo up", "link set veth0 up", "link set veth1 up", "link set veth2 up",
        "link set veth3 up", "addr add 198.51.100.1/24 dev veth0",
        "addr add 203.0.113.1/24 dev veth2", "route add 198.51.100.252/32 dev veth2",
    ) as name:  # fmt: skip
        yield name


def index_of(namespace: str, device: str) -> int:
    shown = subprocess.run(["ip", "-n", namespace, "-j", "link", "show", device],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(json.loads(shown)[0]["ifindex"])


def test_the_default_route_is_looked_up_and_dumped_only_when_shadowed(namespace: str) -> None:
    found, dumps_before, dumps = python_in(namespace, SCRIPT)
    veth0 = index_of(namespace, "veth0")
    assert found == [None, veth0, veth0]
    assert dumps_before == 0  # look-ups only
    assert dumps == [{"table": 254}]  # 240/4 routed elsewhere: the main table, filtered
