"""What an IKE engine needs to know about one configured peer (sans-IO, no file access).

The daemon builds a `PeerPolicy` from the operator's `PeerConfig`; the engines never read
the config themselves, so tests can build policies directly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from core.crypto.proposals import ProposalSpec
from core.ike.constants import IdType


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 3.5): type and the octets of the ID payload."""

    id_type: IdType
    data: bytes

    @classmethod
    def from_address(cls, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Identity:
        if address.version == 4:
            return cls(IdType.IPV4_ADDR, address.packed)
        return cls(IdType.IPV6_ADDR, address.packed)

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Operator syntax: an IP address, `fqdn:NAME`, `user:NAME@DOMAIN`, `keyid:HEX|TEXT`,
        or a bare name containing a dot (FQDN) or an `@` (user FQDN)."""
        kind, sep, value = text.partition(":")
        if sep and kind in ("fqdn", "user", "keyid"):
            if kind == "fqdn":
                return cls(IdType.FQDN, value.encode())
            if kind == "user":
                return cls(IdType.RFC822_ADDR, value.encode())
            try:
                return cls(IdType.KEY_ID, bytes.fromhex(value))
            except ValueError:
                return cls(IdType.KEY_ID, value.encode())
        try:
            return cls.from_address(ipaddress.ip_address(text))
        except ValueError:
            pass
        if "@" in text:
            return cls(IdType.RFC822_ADDR, text.encode())
        return cls(IdType.FQDN, text.encode())

    def __str__(self) -> str:
        if self.id_type == IdType.IPV4_ADDR and len(self.data) == 4:
            return str(ipaddress.IPv4Address(self.data))
        if self.id_type == IdType.IPV6_ADDR and len(self.data) == 16:
            return str(ipaddress.IPv6Address(self.data))
        if self.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
            return self.data.decode("utf-8", "replace")
        return f"keyid:{self.data.hex()}"


@dataclass(frozen=True)
class Timing:
    """Retransmission, rekey and DPD timing.  strongSwan's defaults where they exist."""

    retransmit_timeout: float = 4.0
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    retransmit_jitter: float = 0.1  # +-10 % of each timeout
    half_open_timeout: float = 30.0
    rekey_margin: float = 0.1  # rekey at (1 - margin) x lifetime ...
    rekey_jitter: float = 0.05  # ... minus up to jitter x lifetime
    reestablish_backoff: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
    # Seconds an IKEv1 IPsec SA pair lingers after its replacement is up, for packets
    # still in flight on it (IKEv2 deletes by exchange, make before break).
    delete_old_child_after: float = 1.0


@dataclass(frozen=True)
class PeerPolicy:
    """One configured peer as the engines see it."""

    name: str
    ike_version: int
    local_id: Identity
    remote_id: Identity | None  # None: accept any identity the peer shows with our PSK
    psk: bytes = field(repr=False)
    ike_proposals: tuple[ProposalSpec, ...]
    esp_proposals: tuple[ProposalSpec, ...]
    mode: str = "tunnel"  # "tunnel" | "transport"
    exchange_mode: str = "main"  # IKEv1 only
    ike_lifetime: float = 86400.0
    child_lifetime: float = 28800.0
    dpd_interval: float = 20.0  # 0 disables
    dpd_retries: int = 5
    nat_traversal: str = "auto"  # "auto" | "force" | "off"
    passive: bool = False
    local_address: str | None = None  # None: any local address ("dynamic")
    remote_address: str | None = None  # None: the peer's address is not fixed
    local_ts: tuple[ipaddress.IPv4Network, ...] = (ipaddress.IPv4Network("0.0.0.0/0"),)
    remote_ts: tuple[ipaddress.IPv4Network, ...] = (ipaddress.IPv4Network("0.0.0.0/0"),)
    timing: Timing = Timing()
