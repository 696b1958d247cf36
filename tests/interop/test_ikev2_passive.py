"""A passive rbipsec against strongSwan: charon initiates, rbipsec never speaks first.

Passive means no initiation, no DPD probes and no rekeying: the only packets rbipsec may
send are answers to charon's requests and ESP answering traffic.  nftables counters on
rbipsec's output count what it sends, IKE requests (the IKE header's Response flag
clear) apart from everything else, through each phase: before charon initiates, while
the tunnel idles, after charon deletes the IKE SA, and after charon is killed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.integration.netlab import nft_counters, wait_until
from tests.interop.rbipsec_lab import CHILD, CONN, PEER, InteropLab, Role, check_established

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]

QUIET = 2.0  # seconds of watching; rbipsec's DPD would probe after 1 s if it were on
MARKER = "@th,64,32 0"  # the non-ESP marker on port 4500
COUNTERS = {
    # IKE requests: the Response flag (0x20) of the IKE header's flags octet is clear
    "requests_4500": f"udp sport 4500 {MARKER} @th,248,8 & 0x20 == 0",
    "requests_500": "udp sport 500 @th,216,8 & 0x20 == 0",
    "ike_and_esp": "udp sport { 500, 4500 }",
    "plain_esp": "meta l4proto esp",
}


def _sent(read: Callable[[], dict[str, int]]) -> dict[str, int]:
    counts = read()
    return {
        "requests": counts["requests_4500"] + counts["requests_500"],
        "anything": counts["ike_and_esp"] + counts["plain_esp"],
    }


def _quiet(read: Callable[[], dict[str, int]], what: str) -> None:
    before = _sent(read)
    time.sleep(QUIET)
    assert _sent(read) == before, f"the passive side sent packets {what}"


def test_passive_rbipsec_never_initiates(interop: InteropLab) -> None:
    peer = {"passive": True, "remote_address": interop.topology.sw_local, "dpd_interval": 1}
    interop.start_charon(interop.connection(Role.RESPONDER, dpd_delay=0))
    with nft_counters(interop.netlab, "r", COUNTERS) as read:
        interop.start_rbipsec(Role.RESPONDER, **peer)
        _quiet(read, "before the peer initiated")
        assert _sent(read)["anything"] == 0
        assert interop.rb.state(PEER) == "waiting"

        interop.sw.initiate(CHILD)
        interop.rb.wait_up(PEER)
        assert interop.ping() == (3, 3)
        status, _sa = check_established(interop, Role.RESPONDER)
        assert status["passive"] and status["dpd"]["state"] == "off"
        sent = _sent(read)
        assert sent["anything"] >= 5 and sent["requests"] == 0, sent  # answers and ESP only
        _quiet(read, "while the tunnel idled")

        interop.sw.terminate(ike=CONN)  # charon's DELETE: rbipsec answers it, nothing more
        wait_until(lambda: interop.rb.state(PEER) == "waiting", 5, "rbipsec to wait again")
        _quiet(read, "after the peer deleted the IKE SA")
        assert interop.sw.list_sas() == []

        interop.sw.initiate(CHILD)  # once more, then the peer vanishes without a word
        interop.rb.wait_up(PEER)
        interop.sw.kill()
        _quiet(read, "to a peer that went silent")
        assert _sent(read)["requests"] == 0, "the passive side sent an IKE request"
    assert interop.rb.state(PEER) == "up"  # it waits for the peer; its SA lives until expiry
