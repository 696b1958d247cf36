"""End-to-end: the userspace backend between two network namespaces (root only).

The scenarios live in scenario.py and take the backend as a factory path, so the kernel
XFRM backend runs the very same checks in its QEMU guest.
"""

from __future__ import annotations

import shutil

import pytest

from tests.dataplane.scenario import (
    SUITES,
    run_link_scenario,
    run_tcp_stream_scenario,
    run_tunnel_scenario,
    run_udp_burst_scenario,
    run_unnumbered_scenario,
)

FACTORY = "core.dataplane.userspace.backend:UserspaceDataplane"

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping"),
]


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-4500"])
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_ping_counters_and_tos(suite: str, encap: bool) -> None:
    run_tunnel_scenario(FACTORY, suite, encap=encap)


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-4500"])
def test_link_state_routes_mss_rekey_gap_and_expiry(encap: bool) -> None:
    run_link_scenario(FACTORY, encap=encap)


def test_unnumbered_interface_borrows_its_source() -> None:
    run_unnumbered_scenario(FACTORY)


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-4500"])
def test_a_tcp_stream_arrives_intact(encap: bool) -> None:
    run_tcp_stream_scenario(FACTORY, "aes-gcm-128", encap=encap)


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-4500"])
def test_udp_bursts_arrive_intact_and_in_order(encap: bool) -> None:
    run_udp_burst_scenario(FACTORY, "aes-gcm-128", encap=encap)
