"""Crossing exchanges against strongSwan (RFC 7296 2.8.1, 2.8.2, 2.25): simultaneous
Child SA and IKE SA rekeys, a DELETE crossing a rekey, and a Child SA rekey crossing an
IKE SA rekey, rbipsec in both roles.

The link runs through the lab's `wire` (tests/interop/wire.py), which holds the IKE
requests both sides send inside `crossing()` until it holds one from each and then
releases them together, so they are sure to cross.  A rekey collision must leave exactly
one pair of SAs on both sides, the nonce comparison must agree (when both sides report
an outcome, one won and the other lost), and no ping may be lost.

charon handles datagrams on several threads: it may process rbipsec's answer to its own
request before rbipsec's crossing request, complete its rekey, and then refuse the late
request with TEMPORARY_FAILURE ("colliding exchange did not result in an IKE_SA").  That
is a legitimate resolution too; the end state must be the same.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tests.integration.netlab import wait_until
from tests.interop.rbipsec_lab import (
    CHILD,
    CONN,
    PEER,
    ROLE_IDS,
    ROLES,
    InteropLab,
    Role,
    check_established,
    simultaneously,
    spis,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]

ROUNDS = 3  # enough for both outcomes of the nonce comparison to be likely


class Logs:
    """What both sides logged since the last `take()`."""

    def __init__(self, interop: InteropLab) -> None:
        self.interop = interop
        self.rb_seen = self.sw_seen = 0

    def take(self) -> tuple[str, str]:
        rb, sw = self.interop.rb.log(), self.interop.sw.log_text()
        new = rb[self.rb_seen :], sw[self.sw_seen :]
        self.rb_seen, self.sw_seen = len(rb), len(sw)
        return new


def _collide(interop: InteropLab, *calls: Callable[[], object]) -> list[str]:
    """Runs the calls at once with their IKE requests crossing; returns what crossed."""
    assert interop.wire is not None
    with interop.wire.crossing() as released:
        results = simultaneously(*calls)
    assert not [r for r in results if isinstance(r, Exception)], results
    return released


def _outcomes(logs: Logs, kind: str) -> tuple[str | None, str | None]:
    """(rbipsec's, charon's) collision outcome, "won"/"lost"/None; both saw a collision."""
    rb_log, sw_log = logs.take()
    rb_pattern = "rekey collision on SPI" if kind == "CHILD" else "IKE rekey collision"
    assert rb_pattern in rb_log, "rbipsec did not see the collision"
    assert f"detected {kind}_REKEY collision" in sw_log, "charon did not see the collision"
    rb = re.search(r"rekey collision on SPI \w+ (won|lost)|IKE rekey collision (won|lost)", rb_log)
    sw = re.search(rf"{kind}_SA rekey collision (won|lost)", sw_log)
    rb_outcome = (rb[1] or rb[2]) if rb else None
    sw_outcome = sw[1] if sw else None
    if rb_outcome and sw_outcome:
        assert {rb_outcome, sw_outcome} == {"won", "lost"}, "the nonce comparison disagrees"
    return rb_outcome, sw_outcome


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_simultaneous_child_rekey_leaves_one_pair_and_loses_nothing(
    interop_wired: InteropLab, role: Role
) -> None:
    interop = interop_wired
    interop.establish(role)
    logs = Logs(interop)
    logs.take()
    outcomes = []
    with interop.pinging() as ping:
        for _ in range(ROUNDS):
            before = spis(interop.rb_peer())
            _collide(interop, lambda: interop.rb.request("rekey", peer=PEER),
                     lambda: interop.sw.rekey(child=CHILD))  # fmt: skip
            peer, _sa = interop.settled()
            assert spis(peer).isdisjoint(before)
            outcomes.append(_outcomes(logs, "CHILD"))
    assert ping.lost == 0, ping.losses()
    check_established(interop, role)
    print("outcomes (rbipsec, charon):", outcomes)


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_simultaneous_ike_rekey_leaves_one_ike_sa_and_loses_nothing(
    interop_wired: InteropLab, role: Role
) -> None:
    interop = interop_wired
    interop.establish(role)
    logs = Logs(interop)
    logs.take()
    outcomes = []
    with interop.pinging() as ping:
        for _ in range(ROUNDS):
            old = interop.sw_sa().uniqueid
            _collide(interop, lambda: interop.rb.request("rekey", peer=PEER, ike=True),
                     lambda: interop.sw.rekey(ike=CONN))  # fmt: skip
            # charon may drop the loser's first DELETE of its redundant IKE SA when it comes
            # a millisecond after the answer (charon has not checked the SA in yet): the
            # retransmission 4 s later settles it
            peer, sa = interop.settled(timeout=15)
            assert sa.uniqueid != old, "the IKE SA was not replaced"
            rb_outcome, sw_outcome = _outcomes(logs, "IKE")
            outcomes.append((rb_outcome, sw_outcome))
            # the surviving IKE SA is the one the winner's exchange made
            if sw_outcome is not None:
                assert sa.initiator is (sw_outcome == "won")
            if rb_outcome is not None:
                assert peer["ike_sa"]["initiator"] is (rb_outcome == "won")
    assert ping.lost == 0, ping.losses()
    print("outcomes (rbipsec, charon):", outcomes)
    assert interop.rb.status()["daemon"]["engine_errors"] == 0


CROSSINGS = {
    "rbipsec-rekeys-child/strongswan-deletes-child": ("child", "delete-child"),
    "rbipsec-rekeys-ike/strongswan-deletes-ike": ("ike", "delete-ike"),
    "strongswan-rekeys-child/rbipsec-deletes-ike": ("delete-ike", "child"),
    "strongswan-rekeys-ike/rbipsec-deletes-ike": ("delete-ike", "ike"),
}
MIXED_REKEYS = {
    "rbipsec-rekeys-child/strongswan-rekeys-ike": ("child", "ike"),
    "strongswan-rekeys-child/rbipsec-rekeys-ike": ("ike", "child"),
}


def _rbipsec_action(interop: InteropLab, action: str) -> Callable[[], object]:
    if action == "delete-ike":
        return lambda: interop.rb.request("down", peer=PEER)
    return lambda: interop.rb.request("rekey", peer=PEER, ike=action == "ike")


def _strongswan_action(interop: InteropLab, action: str) -> Callable[[], object]:
    if action == "delete-child":
        return lambda: interop.sw.terminate_async(child=CHILD)
    if action == "delete-ike":
        return lambda: interop.sw.terminate_async(ike=CONN)
    if action == "ike":
        return lambda: interop.sw.rekey(ike=CONN)
    return lambda: interop.sw.rekey(child=CHILD)


def _kinds(crossed: list[str]) -> list[str]:
    """The exchanges of the crossed requests ("<CREATE_CHILD_SA-request-2" ...)."""
    return sorted(message.split("-")[0][1:] for message in crossed)


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize(("rb_action", "sw_action"), CROSSINGS.values(), ids=CROSSINGS.keys())
def test_delete_crossing_a_rekey_leaves_both_sides_agreeing(
    interop_wired: InteropLab, role: Role, rb_action: str, sw_action: str
) -> None:
    interop = interop_wired
    interop.establish(role)
    crossed = _collide(interop, _rbipsec_action(interop, rb_action),
                       _strongswan_action(interop, sw_action))  # fmt: skip
    assert _kinds(crossed) == ["CREATE_CHILD_SA", "INFORMATIONAL"], crossed

    if "delete-ike" in (rb_action, sw_action):
        # the IKE SA is gone on both sides; nothing half-deleted is left
        wait_until(lambda: interop.sw.list_sas(CONN) == [], 10, "charon to drop the IKE SA")
        wait_until(lambda: interop.rb_peer()["ike_sa"] is None, 10, "rbipsec to drop it")
        peer = interop.rb_peer()
        assert peer["child_sas"] == [] and not peer["link_up"]
        interop.rb.request("up", peer=PEER)  # after `down`, and harmless otherwise
    else:
        # the Child SA is gone on both sides; the IKE SA lives on, the same on both
        wait_until(lambda: interop.sw.child_sas(CHILD) == [], 10, "charon to drop the Child")
        wait_until(lambda: interop.rb_peer()["child_sas"] == [], 10, "rbipsec to drop it")
        (sa,) = interop.sw.list_sas(CONN)
        ike = interop.rb_peer()["ike_sa"]
        assert (ike["spi_i"], ike["spi_r"]) == (sa.spi_i, sa.spi_r)
    assert interop.rb.status()["daemon"]["engine_errors"] == 0

    # and the tunnel can be brought back (by charon where rbipsec waits for it)
    if role is Role.RESPONDER or sw_action == "delete-child":
        interop.sw.initiate(CHILD)
    interop.rb.wait_up(PEER, timeout=20)
    assert interop.ping() == (3, 3)
    interop.settled()


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize(("rb_action", "sw_action"), MIXED_REKEYS.values(),
                         ids=MIXED_REKEYS.keys())  # fmt: skip
def test_child_rekey_crossing_an_ike_rekey_loses_nothing(
    interop_wired: InteropLab, role: Role, rb_action: str, sw_action: str
) -> None:
    """RFC 7296 2.25.2: one of the two is refused (TEMPORARY_FAILURE) or both go through;
    either way one IKE SA with one Child SA remains and traffic never stops."""
    interop = interop_wired
    interop.establish(role)
    with interop.pinging() as ping:
        crossed = _collide(interop, _rbipsec_action(interop, rb_action),
                           _strongswan_action(interop, sw_action))  # fmt: skip
        assert _kinds(crossed) == ["CREATE_CHILD_SA", "CREATE_CHILD_SA"], crossed
        time.sleep(1.0)  # a refused side may retry
        interop.settled()
    assert ping.lost == 0, ping.losses()
    assert interop.rb.status()["daemon"]["engine_errors"] == 0
