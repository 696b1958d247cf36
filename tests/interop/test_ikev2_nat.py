"""NAT traversal against strongSwan: through a masquerading router, and forced UDP
encapsulation without one (rbipsec's `nat_traversal = "force"`, charon's `encap = yes`).

Behind NAT the side inside initiates (as a road warrior would): rbipsec inside is the
initiator case, charon inside the responder case.  The router maps the inside host to
ports 20000-20999, so the floated port the outside side reports is the mapped one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.netlab import nft_counters
from tests.interop.rbipsec_lab import (
    NAT_PORTS,
    ROLE_IDS,
    ROLES,
    InteropLab,
    Role,
    check_established,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]

BEHIND = {"rb": Role.INITIATOR, "sw": Role.RESPONDER}  # who is inside -> rbipsec's role


def _mapped(port: int) -> bool:
    return NAT_PORTS[0] <= port <= NAT_PORTS[1]


@pytest.mark.parametrize("interop_nat", BEHIND, ids=["rbipsec-inside", "strongswan-inside"],
                         indirect=True)  # fmt: skip
def test_through_a_masquerading_router(interop_nat: InteropLab) -> None:
    lab = interop_nat
    inside = lab.topology.nat
    assert inside is not None
    role = BEHIND[inside]
    lab.establish(role)
    assert lab.ping() == (3, 3)
    peer, sa = check_established(lab, role)
    assert (sa.local_id, sa.remote_id) == (lab.topology.sw_id, lab.topology.rb_id)
    assert peer["ike_sa"]["peer_id"] == lab.topology.sw_id
    router = "198.51.100.1"  # the router's outside address: what the outside host sees
    if inside == "rb":
        assert peer["nat"]["local_behind_nat"]
        assert peer["remote"] == {"address": "198.51.100.2", "port": 4500}
        assert sa.remote_host == router and _mapped(sa.remote_port), sa
        assert sa.raw.get("nat-remote") == "yes"
    else:
        assert peer["nat"]["remote_behind_nat"] and not peer["nat"]["local_behind_nat"]
        assert peer["remote"]["address"] == router and _mapped(peer["remote"]["port"]), peer
        assert (sa.remote_host, sa.remote_port) == ("198.51.100.2", 4500)
        assert sa.raw.get("nat-local") == "yes"


FORCED = {
    "rbipsec-forced": ({"nat_traversal": "force"}, {}),
    "rbipsec-forced-strongswan-encap": ({"nat_traversal": "force"}, {"encap": True}),
    "strongswan-encap": ({}, {"encap": True}),
}


@pytest.fixture
def rbipsec_sends(interop: InteropLab) -> Iterator[Any]:
    """Counters of what leaves rbipsec's namespace: plain ESP and UDP 4500."""
    rules = {"esp": "meta l4proto esp", "udp4500": "udp sport 4500"}
    with nft_counters(interop.netlab, "r", rules) as read:
        yield read


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize(("peer", "connection"), FORCED.values(), ids=FORCED.keys())
def test_forced_encapsulation_without_nat(
    interop: InteropLab, rbipsec_sends: Any, role: Role,
    peer: dict[str, object], connection: dict[str, object],
) -> None:  # fmt: skip
    interop.establish(role, peer=peer, connection=connection)
    assert interop.ping(count=5) == (5, 5)
    status, sa = check_established(interop, role)
    sent = rbipsec_sends()
    assert sent["esp"] == 0 and sent["udp4500"] >= 5, sent
    forced = peer.get("nat_traversal") == "force"
    assert status["nat"]["forced"] is forced
    assert status["nat"]["in_use"] and status["child_sas"][0]["encap"]
    (child,) = sa.children
    assert child.encap and sa.raw.get("nat-any") == "yes"
    if forced:
        # rbipsec fakes its NAT detection hash (RFC 7296 2.23): charon thinks it is behind NAT
        assert sa.raw.get("nat-remote") == "yes"
