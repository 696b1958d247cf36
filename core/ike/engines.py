"""Both IKE versions behind one endpoint interface, so the daemon drives them alike.

Peers go to the engine of their `ike_version`; received messages go by the version in
their header (the major version nibble of octet 17: 1 for ISAKMP, 2 for IKEv2).
"""

from __future__ import annotations

from collections.abc import Iterable

from core.crypto.random import RandomSource
from core.ike.datagram import Datagram
from core.ike.events import Address, IkeEvent, LogMessage
from core.ike.policy import PeerPolicy
from core.ike.v1.endpoint import Ikev1Endpoint
from core.ike.v1.sa import IsakmpSa
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.sa import IkeSa

AnySa = IkeSa | IsakmpSa
VERSION_OFFSET = 17  # ISAKMP / IKEv2 header: major version in the high nibble


class IkeEngines:
    """The `Ikev2Endpoint` interface over an IKEv1 and an IKEv2 endpoint."""

    def __init__(self, policies: Iterable[PeerPolicy], rng: RandomSource) -> None:
        self.v1 = Ikev1Endpoint([], rng)
        self.v2 = Ikev2Endpoint([], rng)
        self._version: dict[str, int] = {}
        self._events: list[IkeEvent] = []
        for policy in policies:
            self.add_peer(policy)

    def _engine(self, name: str) -> Ikev1Endpoint | Ikev2Endpoint:
        return self.v1 if self._version.get(name) == 1 else self.v2

    # -- peers -------------------------------------------------------------------------
    def add_peer(self, policy: PeerPolicy) -> None:
        self._version[policy.name] = policy.ike_version
        self._engine(policy.name).add_peer(policy)

    def remove_peer(self, name: str, now: float) -> None:
        self._engine(name).remove_peer(name, now)
        self._version.pop(name, None)

    def peer_names(self) -> list[str]:
        return list(self._version)

    def current_sa(self, name: str) -> AnySa | None:
        return self._engine(name).current_sa(name)

    def connect(self, name: str, local: Address, remote: Address, now: float) -> None:
        self._engine(name).connect(name, local, remote, now)

    def disconnect(self, name: str, now: float) -> None:
        self._engine(name).disconnect(name, now)

    def rekey(self, name: str, now: float, *, ike: bool = False) -> bool:
        return self._engine(name).rekey(name, now, ike=ike)

    def note_inbound_traffic(self, name: str, now: float) -> None:
        self._engine(name).note_inbound_traffic(name, now)

    # -- datagrams and time --------------------------------------------------------------
    def receive(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        major = data[VERSION_OFFSET] >> 4 if len(data) > VERSION_OFFSET else 0
        if major == 1:
            self.v1.receive(data, local, remote, now)
        elif major == 2:
            self.v2.receive(data, local, remote, now)
        else:
            # RFC 7296 2.5 would answer INVALID_MAJOR_VERSION for a request of a newer
            # version; with no SA to speak of, silence is the safe answer to anything else.
            self._events.append(LogMessage("", "debug", f"dropped a message from {remote} "
                                           f"with IKE major version {major}"))

    def next_timer(self) -> float | None:
        deadlines = [t for t in (self.v1.next_timer(), self.v2.next_timer()) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.v1.handle_timer(now)
        self.v2.handle_timer(now)

    def pop_datagrams(self) -> list[Datagram]:
        return self.v1.pop_datagrams() + self.v2.pop_datagrams()

    def pop_events(self) -> list[IkeEvent]:
        events, self._events = self._events, []
        return events + self.v1.pop_events() + self.v2.pop_events()

    @property
    def half_open_count(self) -> int:
        return self.v1.half_open_count + self.v2.half_open_count
