"""Negotiations that must fail against strongSwan, cleanly, with rbipsec saying why.

A proposal mismatch (IKE SA or Child SA) and a wrong PSK, with rbipsec as initiator and
as responder.  Clean means: no Child SA on either side, rbipsec's link stays down (no
clear-text path: a ping into the tunnel fails), its daemon answers and counted no engine
error, and its status and log name the reason; charon's log names it as well.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest

from tests.integration.netlab import wait_until
from tests.interop.harness import HarnessError
from tests.interop.rbipsec_lab import (
    CHILD,
    PEER,
    ROLES,
    SW_INNER,
    InteropLab,
    Role,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]


@dataclass(frozen=True)
class Failure:
    peer: dict[str, object]  # rbipsec's peer settings
    connection: dict[str, object]  # charon's
    rb_says: str  # regular expression over rbipsec's last error (as initiator, responder)
    rb_says_responding: str
    sw_says: str  # ... over charon's log (rbipsec initiator, responder)
    sw_says_initiating: str


CASES = {
    "ike-proposal-mismatch": Failure(
        {"ike_proposals": ["aes256gcm16-prfsha256-x25519"]},
        {"proposals": ("aes128-sha1-modp2048",)},
        rb_says="NO_PROPOSAL_CHOSEN", rb_says_responding="no (acceptable|matching) proposal",
        sw_says="received proposals unacceptable", sw_says_initiating="NO_PROPOSAL_CHOSEN"),
    "esp-proposal-mismatch": Failure(
        {"esp_proposals": ["aes256gcm16"]},
        {"child": {"esp_proposals": ("aes128-sha1",)}},
        rb_says="NO_PROPOSAL_CHOSEN", rb_says_responding="no (acceptable|matching) proposal",
        sw_says="no acceptable proposal|NO_PROPOSAL_CHOSEN",
        sw_says_initiating="NO_PROPOSAL_CHOSEN"),
    "wrong-psk": Failure(
        {"psk": "not the secret strongSwan has"}, {},
        rb_says="authentication failed", rb_says_responding="pre-shared keys differ",
        sw_says="shared key .* but MAC mismatched",
        sw_says_initiating="AUTHENTICATION_FAILED"),
}  # fmt: skip


PARAMS = [
    pytest.param(case, role, id=f"{name}-{role.value}")
    for name, case in CASES.items() for role in ROLES
]  # fmt: skip


@pytest.mark.parametrize(("case", "role"), PARAMS)
def test_negotiation_fails_cleanly_and_rbipsec_says_why(
    interop: InteropLab, case: Failure, role: Role
) -> None:
    interop.start_charon(interop.connection(role, **case.connection))
    interop.start_rbipsec(role, **case.peer)
    if role is Role.RESPONDER:
        wait_until(lambda: interop.rb.state(PEER) == "waiting", 10, "rbipsec to wait")
        with pytest.raises(HarnessError):
            interop.sw.initiate(CHILD, timeout=5)
    rb_pattern = case.rb_says if role is Role.INITIATOR else case.rb_says_responding
    wait_until(lambda: re.search(rb_pattern, interop.rb.log(), re.I) is not None, 10,
               f"rbipsec's log to match {rb_pattern!r}")  # fmt: skip
    sw_pattern = case.sw_says if role is Role.INITIATOR else case.sw_says_initiating
    wait_until(lambda: re.search(sw_pattern, interop.sw.log_text()) is not None, 5,
               f"charon's log to match {sw_pattern!r}")  # fmt: skip

    time.sleep(0.5)  # anything half-built would show now
    peer = interop.rb_peer()
    assert peer["state"] in ("connecting", "waiting") and not peer["link_up"]
    assert peer["child_sas"] == []
    assert interop.sw.child_sas(CHILD) == []
    # An IKE SA may survive a refused Child SA (RFC 7296 1.2), but on both sides or neither.
    ike, sas = peer["ike_sa"], interop.sw.list_sas()
    assert [(sa.spi_i, sa.spi_r) for sa in sas] == ([(ike["spi_i"], ike["spi_r"])] if ike else [])
    status = interop.rb.status()
    assert status["daemon"]["engine_errors"] == 0
    refused = interop.netlab.run("r", "ping", "-c", "1", "-W", "1", SW_INNER, check=False)
    assert refused.returncode != 0
    # last: the operator's view in `rbipsec status`
    assert re.search(rb_pattern, interop.rb_error(), re.I), interop.rb_error()
