"""SystemNetInfo against the kernel, in a namespace of its own (root): the source address
toward a destination, and the address unnumbered tunnels borrow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netlab import python_in, scratch_namespace

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.netns]

SCRIPT = r"""
import asyncio, ipaddress, json
from core.daemon.netinfo import NetInfoError, SystemNetInfo

async def main():
    info = SystemNetInfo()
    answers = {}
    for name in ("", "veth0", "veth1", "nosuch0"):
        answers[f"unnumbered {name}"] = str(await info.unnumbered_source(name))
    for destination in ("203.0.113.5", "198.51.100.77", "2001:db8::5"):
        try:
            answers[f"route {destination}"] = str(
                await info.route_source(ipaddress.ip_address(destination)))
        except NetInfoError as error:
            answers[f"route {destination}"] = f"error: {error}"
    print(json.dumps(answers))

asyncio.run(main())
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    with scratch_namespace(
        "rbnetinfo",
        "link add veth0 type veth peer name veth1",
        "link set lo up", "link set veth0 up", "link set veth1 up",
        "addr add 198.51.100.1/24 dev veth0", "addr add 198.51.100.9/24 dev veth0",
        "route add default via 198.51.100.254 dev veth0",
    ) as name:  # fmt: skip
        yield name


def test_sources_from_the_kernel(namespace: str) -> None:
    answers = python_in(namespace, SCRIPT)
    assert answers["unnumbered "] == "198.51.100.1"  # the default route's interface, first
    assert answers["unnumbered veth0"] == "198.51.100.1"
    assert answers["unnumbered veth1"] == "169.254.0.1"  # no IPv4 address: link-local
    assert answers["unnumbered nosuch0"] == "169.254.0.1"
    assert answers["route 203.0.113.5"] == "198.51.100.1"  # through the default route
    assert answers["route 198.51.100.77"] == "198.51.100.1"
    assert answers["route 2001:db8::5"].startswith("error: no route to 2001:db8::5")
