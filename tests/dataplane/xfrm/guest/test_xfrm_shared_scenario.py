"""The shared dataplane scenario (tests/dataplane/scenario.py) on the kernel XFRM backend.

The userspace backend passes the same scenarios between namespaces on the host
(tests/dataplane/test_userspace_e2e.py); here the kernel backend runs them inside the
QEMU guest, on a kernel with ESP and XFRM interfaces.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.dataplane import scenario
from tests.dataplane.scenario import (
    SUITES,
    run_link_scenario,
    run_tunnel_scenario,
    run_unnumbered_scenario,
)

FACTORY = "core.dataplane.xfrm.backend:XfrmDataplane"

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(
        os.environ.get("RBIPSEC_IN_GUEST") != "1",
        reason="needs XFRM interfaces and ESP: runs inside the QEMU guest (tests/qemu)",
    ),
]


# Under TCG an agent's interpreter start and imports take 20-50 times longer than on the
# host: with a loaded machine its answer to `start` misses the scenario's 15 s deadline.
# The deadlines of the agents' answers are stretched here; every check stays the same.
TCG_SLOWDOWN = 6.0


@pytest.fixture(autouse=True)
def tcg_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    original = scenario.Agent.request

    def request(self: scenario.Agent, op: str, timeout: float = 15.0, **fields: Any) -> Any:
        return original(self, op, timeout=timeout * TCG_SLOWDOWN, **fields)

    monkeypatch.setattr(scenario.Agent, "request", request)


# Every suite over raw ESP; ESP in UDP (suite-independent in the kernel) with two suites,
# to keep the one QEMU session of CI short.
TUNNEL_CASES = [(suite, False) for suite in sorted(SUITES)] + [
    ("aes-gcm-256", True),
    ("aes-cbc-256-sha256", True),
]


@pytest.mark.parametrize(
    ("suite", "encap"),
    TUNNEL_CASES,
    ids=[f"{s}-{'udp-4500' if e else 'raw-esp'}" for s, e in TUNNEL_CASES],
)
def test_ping_counters_and_tos(suite: str, encap: bool) -> None:
    run_tunnel_scenario(FACTORY, suite, encap=encap)


@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "udp-4500"])
def test_link_state_routes_mss_rekey_gap_and_expiry(encap: bool) -> None:
    run_link_scenario(FACTORY, encap=encap)


def test_unnumbered_interface_borrows_its_source() -> None:
    run_unnumbered_scenario(FACTORY)
