"""NAT traversal in IKEv1 phase 1 (RFC 3947) and the vendor IDs that announce it and DPD.

Support is announced by vendor IDs: RFC 3947's and the draft-ietf-ipsec-nat-t-ike-02/03
ones strongSwan and Cisco send.  A peer that only knows a draft gets the draft numbers:
NAT-D payload type 130 and UDP encapsulation modes 61443/61444.  NAT-D =
HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash; the first names the receiver as
the sender addresses it, the second the sender itself (RFC 3947 3.2).  Forced
encapsulation fakes our own NAT-D, so the peer believes we are behind a NAT.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from core.crypto.ikev1 import Ikev1Prf
from core.ike.events import Address
from core.ike.v1.constants import (
    NATT_DRAFT_VIDS,
    VID_DPD,
    VID_NATT_DRAFT_02,
    VID_NATT_DRAFT_02N,
    VID_NATT_DRAFT_03,
    VID_NATT_RFC3947,
    PayloadType,
)
from core.ike.v1.message import Message
from core.ike.v1.payloads import NatDPayload, PayloadList, VendorIdPayload

if TYPE_CHECKING:
    from core.ike.v1.sa import IsakmpSa


def our_vendor_ids(nat_traversal: str) -> PayloadList:
    """What an initiator announces: DPD, and NAT-T in every version unless it is off."""
    vids = [VID_DPD]
    if nat_traversal != "off":
        vids += [VID_NATT_RFC3947, VID_NATT_DRAFT_03, VID_NATT_DRAFT_02, VID_NATT_DRAFT_02N]
    return [(PayloadType.VENDOR_ID, VendorIdPayload(v)) for v in vids]


def note_vendor_ids(sa: IsakmpSa, peer_vids: set[bytes]) -> None:
    """What the peer supports: DPD, and NAT-T (preferring the RFC over the drafts)."""
    sa.peer_dpd = VID_DPD in peer_vids
    if sa.policy.nat_traversal == "off":
        return
    if VID_NATT_RFC3947 in peer_vids:
        sa.natt_draft = False
    elif peer_vids & NATT_DRAFT_VIDS:
        sa.natt_draft = True


def reply_vendor_ids(sa: IsakmpSa, peer_vids: set[bytes]) -> PayloadList:
    """A responder announces DPD and the one NAT-T version it chose."""
    vids = [VID_DPD]
    if sa.natt_draft is False:
        vids.append(VID_NATT_RFC3947)
    elif sa.natt_draft:
        vids.append(next(v for v in (VID_NATT_DRAFT_03, VID_NATT_DRAFT_02, VID_NATT_DRAFT_02N)
                         if v in peer_vids))
    return [(PayloadType.VENDOR_ID, VendorIdPayload(v)) for v in vids]


def natd_hash(prf: Ikev1Prf, cky_i: bytes, cky_r: bytes, address: Address) -> bytes:
    packed = ipaddress.ip_address(address.host).packed
    return prf.hash(cky_i, cky_r, packed, address.port.to_bytes(2, "big"))


def _kind(sa: IsakmpSa) -> PayloadType:
    return PayloadType.NAT_D_DRAFT if sa.natt_draft else PayloadType.NAT_D


def natd_payloads(sa: IsakmpSa) -> PayloadList:
    """Our NAT-D payloads for a message from sa.local to sa.remote (none without NAT-T)."""
    if sa.natt_draft is None or sa.choice is None:
        return []
    prf = Ikev1Prf(sa.choice.hash_alg)
    remote = natd_hash(prf, sa.cky_i, sa.cky_r, sa.remote)
    if sa.policy.nat_traversal == "force":
        # Claim a NAT in front of us so both sides encapsulate ESP in UDP.
        local = sa.rng.bytes(prf.output_size)
        sa.nat_forced = True
    else:
        local = natd_hash(prf, sa.cky_i, sa.cky_r, sa.local)
    return [(_kind(sa), NatDPayload(remote)), (_kind(sa), NatDPayload(local))]


def process_natd(sa: IsakmpSa, message: Message, local: Address, remote: Address) -> None:
    """Compares the peer's NAT-D hashes with the addresses the message travelled between."""
    if sa.natt_draft is None or sa.choice is None:
        return
    hashes = [p.data for p in message.get_all(_kind(sa), NatDPayload)]
    if len(hashes) < 2:
        sa.log("info", "peer announced NAT-T but sent no NAT-D payloads")
        sa.natt_draft = None
        sa.nat_forced = False
        return
    prf = Ikev1Prf(sa.choice.hash_alg)
    sa.nat_local = hashes[0] != natd_hash(prf, sa.cky_i, sa.cky_r, local)
    sa.nat_remote = natd_hash(prf, sa.cky_i, sa.cky_r, remote) not in hashes[1:]
    if sa.nat_local:
        sa.log("info", "local host is behind NAT, sending keepalives")
    if sa.nat_remote:
        sa.log("info", "remote host is behind NAT")
