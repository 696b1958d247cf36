"""What the IKE engines hand to the transport (shared by IKEv1 and IKEv2)."""

from __future__ import annotations

from dataclasses import dataclass

from core.ike.constants import NAT_T_PORT, NON_ESP_MARKER
from core.ike.events import Address, IkeEvent


@dataclass(frozen=True)
class Datagram:
    """A UDP payload to send (the non-ESP marker already in front on port 4500)."""

    data: bytes
    local: Address
    remote: Address


def on_wire(message: bytes, local: Address) -> bytes:
    """The UDP payload for an IKE message sent from `local`: on port 4500 the non-ESP
    marker goes in front (RFC 3948 2.2), on port 500 nothing does."""
    return NON_ESP_MARKER + message if local.port == NAT_T_PORT else message


class Outputs:
    """What a sans-IO IKE object hands back: datagrams to send and events.  Subclasses
    fill `datagrams` and `events`; the daemon takes them with the `pop_*` calls."""

    datagrams: list[Datagram]
    events: list[IkeEvent]

    def pop_datagrams(self) -> list[Datagram]:
        out, self.datagrams = self.datagrams, []
        return out

    def pop_events(self) -> list[IkeEvent]:
        out, self.events = self.events, []
        return out
