"""The narrow dataplane API the daemon drives (strongSwan's kernel_ipsec_t, in Python).

Three backends implement it: `xfrm` (Linux XFRM interfaces and ESP in the kernel),
`userspace` (TUN + ESP in Python) and `fake` (in memory, for unit tests).

Rules every backend keeps:
- Calls are idempotent where that is natural (deleting what is gone is not an error).
- A failing call leaves nothing half-installed and raises `DataplaneError` naming the
  interface or SA.
- Keys never appear in exceptions or logs.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Protocol

from core.dataplane.model import (
    DataplaneEvent,
    Direction,
    InterfaceCounters,
    InterfaceSpec,
    SaCounters,
    SaSpec,
)
from core.errors import RbipsecError


class DataplaneError(RbipsecError):
    """The backend could not carry out a call; the message names what and why."""


class Dataplane(Protocol):
    """What the daemon needs from a backend."""

    name: str  # "kernel", "userspace" or "fake"

    # -- lifecycle -------------------------------------------------------------------
    async def start(self, on_event: Callable[[DataplaneEvent], None]) -> None:
        """Open resources and remove state a crashed earlier run left behind."""

    async def stop(self) -> None:
        """Remove everything this backend created (interfaces, SAs, policies, rules)."""

    # -- interfaces ------------------------------------------------------------------
    async def create_interface(self, spec: InterfaceSpec) -> None:
        """Create ipsecN with its link DOWN (no SA yet), address or unnumbered, MSS clamp."""

    async def update_interface(self, spec: InterfaceSpec) -> None:
        """Change MTU, address, MSS clamp of an existing interface in place."""

    async def delete_interface(self, name: str) -> None: ...

    async def set_link(self, name: str, up: bool) -> None:
        """Up only while a Child SA is installed, so routes never send in clear."""

    async def add_route(self, name: str, prefix: ipaddress.IPv4Network) -> None: ...

    async def delete_route(self, name: str, prefix: ipaddress.IPv4Network) -> None: ...

    # -- SAs and policies ---------------------------------------------------------
    async def add_sa(self, sa: SaSpec) -> None:
        """Install an SA; replaces an SA with the same SPI, direction and destination."""

    async def delete_sa(self, spi: int, direction: Direction, if_id: int) -> None: ...

    async def add_policies(self, if_id: int) -> None:
        """Route-based policies: 0.0.0.0/0 <-> 0.0.0.0/0 in/out/fwd bound to if_id."""

    async def delete_policies(self, if_id: int) -> None: ...

    # -- ESP in UDP (RFC 3948) on the daemon's port-4500 socket ----------------------
    def register_encap_socket(self, sock: socket.socket) -> None:
        """The daemon's UDP 4500 socket (one per address family).

        Kernel: set UDP_ENCAP_ESPINUDP on it, so the kernel takes ESP and leaves IKE
        (non-ESP marker) and keepalives to the daemon.  Userspace: keep it to send
        encapsulated ESP from."""

    def handle_encapsulated_esp(
        self, packet: bytes, local: tuple[str, int], remote: tuple[str, int]
    ) -> None:
        """Userspace only: an ESP packet the daemon received on 4500 (marker absent)."""

    # -- counters --------------------------------------------------------------------
    async def sa_counters(self, spi: int, direction: Direction, if_id: int) -> SaCounters: ...

    async def interface_counters(self, name: str) -> InterfaceCounters: ...
