"""A Child SA as the IKEv2 engine tracks it (RFC 7296 1.3, 2.17)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from core.ike.events import Address, ChildSaInfo, ChildSaKeys
from core.ike.v2.payloads import TrafficSelector
from core.ike.v2.proposals import Negotiated
from core.ike.v2.ts import describe


class ChildState(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # our CREATE_CHILD_SA rekey of it is in flight
    REKEYED = "rekeyed"  # replaced; waiting for its DELETE
    DELETING = "deleting"  # our DELETE of it is in flight


@dataclass(eq=False)
class ChildSa:
    """One ESP SA pair.  `spi_in` is ours (the peer sends with it), `spi_out` the peer's."""

    spi_in: int
    spi_out: int
    negotiated: Negotiated
    mode: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    encap: bool
    created_at: float
    rekey_at: float | None
    expire_at: float
    # The nonces of the exchange that created this SA, for rekey collisions (2.8.1).
    nonce_i: bytes = field(repr=False)
    nonce_r: bytes = field(repr=False)
    keys: ChildSaKeys = field(repr=False)
    state: ChildState = ChildState.INSTALLED
    outbound_installed: bool = True
    # The SA this one rekeyed, while it still exists (a responder's new SA sends only once
    # it goes; an initiator's sends at once).
    replaces: ChildSa | None = None
    # Created by the losing side of a rekey collision: never carries outbound traffic.
    redundant: bool = False
    # Our rekeys of it that failed in a row (each retried sooner than its hard expiry).
    rekey_failures: int = 0
    # Its hard lifetime ran out: it is being deleted (and replaced when nothing else is).
    expired: bool = False

    @property
    def usable(self) -> bool:
        """Whether it carries (or will carry) the peer's traffic: not redundant, not
        expired, not on its way out."""
        return not self.redundant and not self.expired and self.state in (
            ChildState.INSTALLED, ChildState.REKEYING)

    def lowest_nonce(self) -> bytes:
        return min(self.nonce_i, self.nonce_r)

    def info(self, peer: str, local: Address, remote: Address) -> ChildSaInfo:
        neg = self.negotiated
        return ChildSaInfo(
            peer=peer,
            spi_in=self.spi_in,
            spi_out=self.spi_out,
            mode=self.mode,
            encr=neg.encr.name,
            encr_key_bits=neg.encr_bits,
            integ=neg.integ.name if neg.integ is not None else "NONE",
            esn=neg.esn,
            encap=self.encap,
            local=local,
            remote=remote,
            local_ts=tuple(describe(ts) for ts in self.local_ts),
            remote_ts=tuple(describe(ts) for ts in self.remote_ts),
            established_at=self.created_at,
            rekey_at=self.rekey_at,
            expire_at=self.expire_at,
            keys=self.keys,
        )
