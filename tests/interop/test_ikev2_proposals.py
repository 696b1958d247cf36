"""IKEv2 with a PSK against strongSwan: four proposal sets, rbipsec in both roles.

Each case brings the tunnel up, pings across it, checks that both sides report the same
algorithms, SPIs (mirrored), roles, addresses and ports, then rekeys the Child SA from
each side in turn (with PFS where the ESP proposal has a DH group) and pings again.
Then a wrong first guess of the key exchange group, corrected by INVALID_KE_PAYLOAD, for
the IKE SA and for a PFS rekey.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.integration.netlab import wait_until
from tests.interop.rbipsec_lab import (
    CHILD,
    PEER,
    ROLE_IDS,
    ROLES,
    InteropLab,
    Role,
    check_established,
    spis,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]


@dataclass(frozen=True)
class Proposals:
    ike: str
    esp: str
    ike_seen: str  # charon's rendering of the IKE proposal
    esp_seen: str  # ... and of the ESP proposal (without the DH group of a rekey)
    rb_ike: str  # rbipsec's rendering
    rb_esp: str
    pfs_group: str = ""  # charon's name of the ESP DH group, when the proposal has one


CASES = {
    "aes256gcm16-x25519": Proposals(
        "aes256gcm16-prfsha256-x25519", "aes256gcm16",
        "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519", "AES_GCM_16_256",
        "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519", "AES_GCM_16_256"),
    "aes256-sha256-modp2048-pfs": Proposals(
        "aes256-sha256-modp2048", "aes256-sha256-modp2048",
        "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
        "AES_CBC_256/HMAC_SHA2_256_128",
        "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
        "AES_CBC_256/HMAC_SHA2_256_128", pfs_group="MODP_2048"),
    "chacha20poly1305-ecp256": Proposals(
        "chacha20poly1305-prfsha256-ecp256", "chacha20poly1305",
        "CHACHA20_POLY1305/PRF_HMAC_SHA2_256/ECP_256", "CHACHA20_POLY1305",
        "CHACHA20_POLY1305_256/PRF_HMAC_SHA2_256/ECP_256", "CHACHA20_POLY1305_256"),
    "aes128-sha1-modp2048": Proposals(
        "aes128-sha1-modp2048", "aes128-sha1",
        "AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048", "AES_CBC_128/HMAC_SHA1_96",
        "AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048", "AES_CBC_128/HMAC_SHA1_96"),
}  # fmt: skip


def _rekey_child(interop: InteropLab, by_rbipsec: bool, case: Proposals) -> None:
    before, _ = interop.settled(strict=False)
    old = spis(before)
    if by_rbipsec:
        interop.rb.request("rekey", peer=PEER)
    else:
        interop.sw.rekey(child=CHILD)
    wait_until(lambda: old.isdisjoint(spis(interop.rb_peer())), 10, "the Child SA rekey")
    peer, sa = interop.settled(strict=False)
    (child,) = sa.installed
    expected = f"{case.esp_seen}/{case.pfs_group}" if case.pfs_group else case.esp_seen
    assert child.proposal == expected, "the rekeyed Child SA's algorithms (PFS group)"
    assert peer["child_sas"][0]["algorithms"].startswith(case.rb_esp)
    assert interop.ping(count=2) == (2, 2)


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_proposal_set_carries_pings_and_both_sides_agree(
    interop: InteropLab, case: Proposals, role: Role
) -> None:
    interop.establish(
        role,
        peer={"ike_proposals": [case.ike], "esp_proposals": [case.esp]},
        connection={"proposals": (case.ike,), "child": {"esp_proposals": (case.esp,)}},
    )
    assert interop.ping() == (3, 3)
    peer, sa = check_established(interop, role)
    (child,) = sa.children
    assert (sa.version, sa.proposal, child.proposal) == (2, case.ike_seen, case.esp_seen)
    assert peer["ike_sa"]["algorithms"] == case.rb_ike
    assert peer["child_sas"][0]["algorithms"] == case.rb_esp
    assert child.packets_in >= 3 and child.packets_out >= 3

    _rekey_child(interop, by_rbipsec=True, case=case)
    _rekey_child(interop, by_rbipsec=False, case=case)
    assert interop.rb.status()["daemon"]["engine_errors"] == 0


@dataclass(frozen=True)
class KeGuess:
    """rbipsec's and charon's proposals where the initiator's first KE guess is wrong."""

    rb_ike: tuple[str, ...]
    rb_esp: tuple[str, ...]
    sw_ike: tuple[str, ...]
    sw_esp: tuple[str, ...]
    ike_group: str  # charon's name of the group both must end up with
    esp_group: str
    sw_says: str  # what charon logs about the wrong guess
    wrong_guesses: int  # IKE SA_INIT, and the PFS rekey where the first guess is wrong


KE_CASES = {
    # rbipsec guesses X25519 for the IKE SA and MODP_2048 for its PFS rekey: charon wants
    # MODP_2048 and ECP_256 and answers INVALID_KE_PAYLOAD
    Role.INITIATOR: KeGuess(
        ("aes256gcm16-prfsha256-x25519", "aes256-sha256-modp2048"),
        ("aes256-sha256-modp2048", "aes256-sha256-ecp256"),
        ("aes256-sha256-modp2048",), ("aes256-sha256-ecp256",),
        "MODP_2048", "ECP_256", r"DH group \w+ unacceptable, requesting", 2),
    # charon guesses ECP_256 for the IKE SA; rbipsec answers INVALID_KE_PAYLOAD (MODP_2048).
    # (charon's rekeys use the group of the proposal rbipsec picked in IKE_AUTH: no guess)
    Role.RESPONDER: KeGuess(
        ("aes256-sha256-modp2048",), ("aes256-sha256-modp2048",),
        ("aes256gcm16-prfsha256-ecp256", "aes256-sha256-modp2048"),
        ("aes256-sha256-ecp256", "aes256-sha256-modp2048"),
        "MODP_2048", "MODP_2048", "peer didn't accept DH group ECP_256, it requested MODP_2048",
        1),
}  # fmt: skip


@pytest.mark.parametrize("role", ROLES, ids=ROLE_IDS)
def test_wrong_key_exchange_guess_is_corrected(interop: InteropLab, role: Role) -> None:
    """INVALID_KE_PAYLOAD (RFC 7296 1.2, 1.3): the initiator retries with the group asked."""
    case = KE_CASES[role]
    interop.establish(
        role,
        peer={"ike_proposals": list(case.rb_ike), "esp_proposals": list(case.rb_esp)},
        connection={"proposals": case.sw_ike, "child": {"esp_proposals": case.sw_esp}},
    )
    assert interop.ping() == (3, 3)
    _peer, sa = check_established(interop, role)
    assert sa.proposal.endswith(case.ike_group)
    for by_rbipsec in (True, False):
        old = spis(interop.rb_peer())
        if by_rbipsec:
            interop.rb.request("rekey", peer=PEER)
        else:
            interop.sw.rekey(child=CHILD)
        wait_until(lambda: old.isdisjoint(spis(interop.rb_peer())), 10,  # noqa: B023
                   "the PFS rekey")  # fmt: skip
        _peer, sa = interop.settled(strict=False)
        assert sa.installed[0].proposal.endswith(case.esp_group)
    assert len(re.findall(case.sw_says, interop.sw.log_text())) == case.wrong_guesses
    assert interop.ping() == (3, 3)
