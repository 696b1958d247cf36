"""Life-cycle cases against strongSwan, rbipsec in both roles: traffic selectors narrowed
by charon, a peer restarted at once (its INITIAL_CONTACT replaces the stale SAs before
any DPD could notice), and a clean stop on either side (SIGTERM: a DELETE the other side
acts on).
"""

from __future__ import annotations

import pytest

from tests.integration.netlab import wait_until
from tests.interop.rbipsec_lab import (
    CHILD,
    PEER,
    RB_INNER,
    ROLE_IDS,
    ROLES,
    SW_INNER,
    InteropLab,
    Role,
    check_established,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_traffic_selectors_narrowed_by_strongswan(interop: InteropLab, role: Role) -> None:
    """charon allows only the two inner hosts; rbipsec (0.0.0.0/0) must take the narrowed
    selectors (RFC 7296 2.9), as responder by narrowing what charon proposes."""
    narrow = {"local_ts": (f"{SW_INNER}/32",), "remote_ts": (f"{RB_INNER}/32",)}
    interop.establish(role, connection={"child": narrow})
    assert interop.ping() == (3, 3)
    peer, sa = interop.settled()
    (ours,), (theirs,) = peer["child_sas"], sa.children
    assert (ours["local_ts"], ours["remote_ts"]) == ([f"{RB_INNER}/32"], [f"{SW_INNER}/32"])
    assert (theirs.local_ts, theirs.remote_ts) == ((f"{SW_INNER}/32",), (f"{RB_INNER}/32",))


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_restarted_initiator_replaces_the_stale_sas(interop: InteropLab, role: Role) -> None:
    """The IKE initiator is killed and back at once; its new IKE SA carries INITIAL_CONTACT
    and the other side drops the old SAs instead of keeping two."""
    interop.establish(role, peer={"dpd_interval": 30})
    _first, first_sa = check_established(interop, role)
    if role is Role.INITIATOR:
        interop.rb.kill()
        interop.rb.start()
    else:
        interop.sw.kill()
        interop.sw.start()
        interop.sw.initiate(CHILD)
    interop.rb.wait_up(PEER)
    # one IKE SA on each side, not the stale one beside the new one
    _peer, sa = interop.settled(timeout=5)
    assert (sa.spi_i, sa.spi_r) != (first_sa.spi_i, first_sa.spi_r)
    assert interop.ping() == (3, 3)


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_a_clean_stop_is_heard_on_both_sides(interop: InteropLab, role: Role) -> None:
    interop.establish(role)
    interop.sw.stop()  # SIGTERM: charon sends DELETE
    wait_until(lambda: interop.rb_peer()["ike_sa"] is None, 5, "rbipsec to act on the DELETE")
    peer = interop.rb_peer()
    assert not peer["link_up"] and peer["child_sas"] == []
    assert peer["dpd"]["state"] != "dead"  # it was told, it did not have to find out

    interop.sw.start()
    if role is Role.RESPONDER:
        interop.sw.initiate(CHILD)
    else:
        interop.rb.request("up", peer=PEER)
    interop.rb.wait_up(PEER, timeout=20)
    assert interop.rb.stop() == 0  # SIGTERM: rbipsec sends DELETE before it exits
    wait_until(lambda: interop.sw.list_sas() == [], 5, "charon to act on the DELETE")
