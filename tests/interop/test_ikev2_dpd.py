"""Dead peer detection both ways against strongSwan, with rbipsec in both roles.

SIGKILL sends no DELETE: the survivor must find out by DPD.  rbipsec probes after
`dpd_interval` (2 s) of silence and gives up after `dpd_retries` (1) more probes; charon
probes after `dpd_delay` (2 s) and gives up after its retransmissions (shortened here to
0.5 s x 1.4^n, 2 retries, about 3.6 s in all).  Then the killed side comes back and the
tunnel is re-established: by rbipsec as initiator, by charon as initiator otherwise.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.netlab import wait_until
from tests.interop.rbipsec_lab import (
    CHILD,
    CONN,
    FAST_RETRANSMIT,
    PEER,
    ROLE_IDS,
    ROLES,
    SW_INNER,
    InteropLab,
    Role,
    check_established,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]

DPD_INTERVAL, DPD_RETRIES = 2, 1


def _no_clear_text(interop: InteropLab) -> None:
    refused = interop.netlab.run("r", "ping", "-c", "1", "-W", "1", SW_INNER, check=False)
    assert refused.returncode != 0


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_rbipsec_finds_a_killed_charon_dead_and_the_tunnel_returns(
    interop: InteropLab, role: Role
) -> None:
    interop.establish(role, peer={"dpd_interval": DPD_INTERVAL, "dpd_retries": DPD_RETRIES})
    assert interop.ping() == (3, 3)
    first, _ = check_established(interop, role)

    interop.sw.kill()
    killed = time.monotonic()
    wait_until(lambda: interop.rb_peer()["dpd"]["state"] == "dead", 15, "rbipsec's DPD verdict")
    took = time.monotonic() - killed
    # silence for dpd_interval, then (retries + 1) probes dpd_interval apart, plus slack
    assert took <= DPD_INTERVAL * (DPD_RETRIES + 2) + 2.0, took
    peer = interop.rb_peer()
    assert peer["state"] == ("connecting" if role is Role.INITIATOR else "waiting")
    assert not peer["link_up"] and peer["child_sas"] == []
    assert "dead" in interop.rb_error()
    _no_clear_text(interop)

    interop.sw.start()  # a fresh charon: no state, its TUN and routes back
    if role is Role.RESPONDER:
        interop.sw.initiate(CHILD)
    interop.rb.wait_up(PEER, timeout=20)
    assert interop.ping() == (3, 3)
    again, _ = check_established(interop, role)
    assert again["ike_sa"]["spi_i"] != first["ike_sa"]["spi_i"]


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_charon_finds_a_killed_rbipsec_dead_and_the_tunnel_returns(
    interop: InteropLab, role: Role
) -> None:
    interop.establish(
        role,
        peer={"dpd_interval": 30},  # rbipsec's own DPD stays out of the way
        connection={"dpd_delay": DPD_INTERVAL, "child": {"dpd_action": "clear"}},
        settings=FAST_RETRANSMIT,
    )
    assert interop.ping() == (3, 3)
    interop.rb.kill()
    killed = time.monotonic()
    wait_until(lambda: interop.sw.list_sas(CONN) == [], 15, "charon to drop the dead peer")
    took = time.monotonic() - killed
    assert took <= DPD_INTERVAL + 3.6 + 2.0, took
    assert "giving up after 2 retransmits" in interop.sw.log_text()

    interop.rb.start()  # removes what the killed run left, then as at a first start
    if role is Role.RESPONDER:
        wait_until(lambda: interop.rb.state(PEER) == "waiting", 10, "rbipsec to wait")
        interop.sw.initiate(CHILD)
    interop.rb.wait_up(PEER, timeout=20)
    interop.sw.wait_child_installed(CHILD)
    assert interop.ping() == (3, 3)
    check_established(interop, role)


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_idle_tunnel_answers_liveness_checks_both_ways(interop: InteropLab, role: Role) -> None:
    """Without traffic both sides probe after a second of silence; a probe heard counts
    as life, so which side probes varies.  Every probe is answered, nothing is torn down."""
    interop.establish(role, peer={"dpd_interval": 1, "dpd_retries": 1},
                      connection={"dpd_delay": 1, "child": {"dpd_action": "clear"}},
                      settings=FAST_RETRANSMIT)  # fmt: skip
    first, _ = check_established(interop, role)
    time.sleep(3.5)
    peer, _sa = check_established(interop, role)
    assert peer["ike_sa"]["spi_i"] == first["ike_sa"]["spi_i"]
    assert peer["dpd"]["state"] == "ok" and peer["dpd"]["last_heard_ago"] < 2.5
    log = interop.sw.log_text()
    charon_probes = log.count("generating INFORMATIONAL request")
    answered_by_rbipsec = log.count("parsed INFORMATIONAL response")
    answered_by_charon = log.count("generating INFORMATIONAL response")
    assert charon_probes + answered_by_charon >= 2, (charon_probes, answered_by_charon)
    assert answered_by_rbipsec >= charon_probes - 1  # one may still be in flight
    assert "giving up" not in log
    assert interop.ping() == (3, 3)
