"""Both IKE versions behind one endpoint interface, so the daemon drives them alike.

Peers go to the engine of their `ike_version`; received messages go by the version in
their header (the major version nibble of octet 17: 1 for ISAKMP, 2 for IKEv2).  The IKEv1
endpoint is created (and its modules imported, a noticeable part of a daemon's start) with
the first IKEv1 peer; until then `core.ike.v1.stray` answers ISAKMP messages as an
endpoint without peers would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from core.crypto.random import RandomSource
from core.ike.datagram import Datagram
from core.ike.events import Address, IkeEvent, LogMessage
from core.ike.policy import PeerPolicy
from core.ike.v2.endpoint import Ikev2Endpoint
from core.ike.v2.sa import IkeSa

if TYPE_CHECKING:
    from core.ike.v1.endpoint import Ikev1Endpoint
    from core.ike.v1.sa import IsakmpSa

    AnySa = IkeSa | IsakmpSa

VERSION_OFFSET = 17  # ISAKMP / IKEv2 header: major version in the high nibble


def __getattr__(name: str) -> object:
    """`AnySa` at run time (PEP 562): the IKEv1 SA is imported only when it is asked for."""
    if name == "AnySa":
        from core.ike.v1.sa import IsakmpSa

        return IkeSa | IsakmpSa
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class IkeEngines:
    """The `Ikev2Endpoint` interface over an IKEv1 and an IKEv2 endpoint."""

    def __init__(self, policies: Iterable[PeerPolicy], rng: RandomSource) -> None:
        self._rng = rng
        self._v1: Ikev1Endpoint | None = None
        self.v2 = Ikev2Endpoint([], rng)
        self._version: dict[str, int] = {}
        self._events: list[IkeEvent] = []
        self._datagrams: list[Datagram] = []  # answers given without the IKEv1 endpoint
        for policy in policies:
            self.add_peer(policy)

    @property
    def v1(self) -> Ikev1Endpoint | None:
        """The IKEv1 endpoint, once an IKEv1 peer was added (it stays after that)."""
        return self._v1

    def _ikev1(self) -> Ikev1Endpoint:
        if self._v1 is None:
            from core.ike.v1.endpoint import Ikev1Endpoint

            self._v1 = Ikev1Endpoint([], self._rng)
        return self._v1

    def _engine(self, name: str) -> Ikev1Endpoint | Ikev2Endpoint:
        return self._ikev1() if self._version.get(name) == 1 else self.v2

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
        if major == 1 and self._v1 is not None:
            self._v1.receive(data, local, remote, now)
        elif major == 1:
            from core.ike.v1.stray import receive_without_peers

            datagrams, lines = receive_without_peers(data, local, remote, self._rng)
            self._datagrams += datagrams
            self._events += lines
        elif major == 2:
            self.v2.receive(data, local, remote, now)
        else:
            # RFC 7296 2.5 would answer INVALID_MAJOR_VERSION for a request of a newer
            # version; with no SA to speak of, silence is the safe answer to anything else.
            self._events.append(LogMessage("", "debug", f"dropped a message from {remote} "
                                           f"with IKE major version {major}"))

    def _endpoints(self) -> tuple[Ikev1Endpoint | Ikev2Endpoint, ...]:
        return (self.v2,) if self._v1 is None else (self._v1, self.v2)

    def next_timer(self) -> float | None:
        deadlines = [t for e in self._endpoints() if (t := e.next_timer()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for endpoint in self._endpoints():
            endpoint.handle_timer(now)

    def pop_datagrams(self) -> list[Datagram]:
        datagrams, self._datagrams = self._datagrams, []
        for endpoint in self._endpoints():
            datagrams += endpoint.pop_datagrams()
        return datagrams

    def pop_events(self) -> list[IkeEvent]:
        events, self._events = self._events, []
        for endpoint in self._endpoints():
            events += endpoint.pop_events()
        return events

    @property
    def half_open_count(self) -> int:
        return sum(e.half_open_count for e in self._endpoints())
