"""Events the IKE engines hand to the daemon, the control socket and the console.

Small frozen dataclasses (STYLE.md lesson 5).  Keys travel only inside `ChildSaKeys`,
whose fields never show in a repr; everything else is safe to log and to serialise.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Address(tuple[str, int]):
    """(ip, port) of one end of an IKE or ESP-in-UDP flow."""

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> Address:
        return super().__new__(cls, (host, port))

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    def __str__(self) -> str:
        return f"[{self[0]}]:{self[1]}" if ":" in self[0] else f"{self[0]}:{self[1]}"


class DownReason(enum.Enum):
    """Why an IKE SA went away."""

    DELETED_BY_US = "deleted"
    DELETED_BY_PEER = "deleted by peer"
    PEER_DEAD = "peer dead (DPD)"
    TIMEOUT = "no answer (retransmits exhausted)"
    AUTH_FAILED = "authentication failed"
    NO_PROPOSAL = "no proposal chosen"
    PROTOCOL_ERROR = "protocol error"
    EXPIRED = "lifetime expired"
    REPLACED = "replaced (rekeyed or re-established)"


@dataclass(frozen=True)
class IkeSaInfo:
    """What status shows about an IKE SA."""

    peer: str
    ike_version: int
    exchange_mode: str  # "ikev2", "main", "aggressive"
    spi_i: str  # hex
    spi_r: str
    initiator: bool  # we are the original initiator
    local: Address
    remote: Address
    nat_local: bool  # we are behind a NAT
    nat_remote: bool  # the peer is behind a NAT
    nat_forced: bool
    algorithms: str
    established_at: float
    rekey_at: float | None
    expire_at: float | None


@dataclass(frozen=True)
class ChildSaKeys:
    """Keys of one Child SA, never shown in a repr or log."""

    encr_in: bytes = field(repr=False)
    integ_in: bytes = field(repr=False)
    encr_out: bytes = field(repr=False)
    integ_out: bytes = field(repr=False)


@dataclass(frozen=True)
class ChildSaInfo:
    """A negotiated Child SA: everything the dataplane needs and status shows."""

    peer: str
    spi_in: int
    spi_out: int
    mode: str  # "tunnel" | "transport"
    encr: str  # e.g. "AES_GCM_16"
    encr_key_bits: int
    integ: str  # "NONE" for AEAD
    esn: bool
    encap: bool  # ESP in UDP
    local: Address
    remote: Address
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    established_at: float
    rekey_at: float | None
    expire_at: float | None
    keys: ChildSaKeys = field(repr=False, compare=False)


@dataclass(frozen=True)
class IkeSaUp:
    info: IkeSaInfo


@dataclass(frozen=True)
class IkeSaRekeyed:
    """The IKE SA was replaced by a new one; Child SAs moved over."""

    old: IkeSaInfo
    new: IkeSaInfo


@dataclass(frozen=True)
class IkeSaDown:
    peer: str
    spi_i: str
    spi_r: str
    reason: DownReason
    detail: str = ""


@dataclass(frozen=True)
class ChildSaInstalled:
    """Install this Child SA.  `outbound` False: install inbound only for now and wait for
    `ChildSaOutboundReady` (the responder of a rekey waits for the old SA's DELETE)."""

    info: ChildSaInfo
    outbound: bool = True
    replaces_spi_in: int | None = None


@dataclass(frozen=True)
class ChildSaOutboundReady:
    peer: str
    spi_in: int


@dataclass(frozen=True)
class ChildSaDeleted:
    peer: str
    spi_in: int
    spi_out: int
    reason: str


@dataclass(frozen=True)
class DpdProbeSent:
    peer: str
    attempt: int
    of: int


@dataclass(frozen=True)
class DpdAnswered:
    peer: str


@dataclass(frozen=True)
class PeerDead:
    peer: str
    silence: float


@dataclass(frozen=True)
class ExchangeFailed:
    """An exchange failed; `notify` names the wire error when there was one."""

    peer: str
    exchange: str
    message: str
    notify: str | None = None


@dataclass(frozen=True)
class LogMessage:
    """Something worth a log line that is not a state change."""

    peer: str
    level: str  # "debug" | "info" | "warning" | "error"
    message: str


IkeEvent = (
    IkeSaUp
    | IkeSaRekeyed
    | IkeSaDown
    | ChildSaInstalled
    | ChildSaOutboundReady
    | ChildSaDeleted
    | DpdProbeSent
    | DpdAnswered
    | PeerDead
    | ExchangeFailed
    | LogMessage
)
