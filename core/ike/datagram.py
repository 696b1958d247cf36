"""What the IKE engines hand to the transport (shared by IKEv1 and IKEv2)."""

from __future__ import annotations

from dataclasses import dataclass

from core.ike.events import Address


@dataclass(frozen=True)
class Datagram:
    """A UDP payload to send (the non-ESP marker already in front on port 4500)."""

    data: bytes
    local: Address
    remote: Address
