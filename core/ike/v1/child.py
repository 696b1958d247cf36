"""An IPsec SA pair negotiated by quick mode, as the IKEv1 engine tracks it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from core.ike.events import Address, ChildSaInfo, ChildSaKeys
from core.ike.v1.ids import Selector
from core.ike.v1.proposals import EspChoice
from core.ike.v2.payloads import TrafficSelector


class ChildState(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # our quick mode replacing it is in flight
    REKEYED = "rekeyed"  # replaced; waiting for its DELETE or its expiry
    DELETING = "deleting"


@dataclass(eq=False)
class ChildSa:
    """One ESP SA pair.  `spi_in` is ours (the peer sends with it), `spi_out` the peer's."""

    spi_in: int
    spi_out: int
    choice: EspChoice
    local_sel: Selector
    remote_sel: Selector
    created_at: float
    rekey_at: float | None
    expire_at: float
    keys: ChildSaKeys = field(repr=False)
    state: ChildState = ChildState.INSTALLED
    outbound_installed: bool = True
    # The SA this one replaces, while it still exists (its outbound waits for it to go).
    replaces: ChildSa | None = None
    redundant: bool = False  # never true in IKEv1 (kept for the IKEv2 status surface)
    # Our quick mode rekeys of it that failed in a row (each retried before it expires).
    rekey_failures: int = 0

    @property
    def negotiated(self) -> EspChoice:
        return self.choice

    @property
    def local_ts(self) -> tuple[TrafficSelector, ...]:
        """Our side as IKEv2-style traffic selectors (what status output describes)."""
        return (self.local_sel.traffic_selector(),)

    @property
    def remote_ts(self) -> tuple[TrafficSelector, ...]:
        return (self.remote_sel.traffic_selector(),)

    @property
    def mode(self) -> str:
        return "tunnel" if self.choice.tunnel else "transport"

    @property
    def encap(self) -> bool:
        return self.choice.udp

    def info(self, peer: str, local: Address, remote: Address) -> ChildSaInfo:
        choice = self.choice
        return ChildSaInfo(
            peer=peer,
            spi_in=self.spi_in,
            spi_out=self.spi_out,
            mode=self.mode,
            encr=choice.encr.name,
            encr_key_bits=choice.key_bits,
            integ=choice.integ.name if choice.integ is not None else "NONE",
            esn=False,
            encap=self.encap,
            local=local,
            remote=remote,
            local_ts=(self.local_sel.describe(),),
            remote_ts=(self.remote_sel.describe(),),
            established_at=self.created_at,
            rekey_at=self.rekey_at,
            expire_at=self.expire_at,
            keys=self.keys,
        )
