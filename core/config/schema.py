"""The configuration as frozen dataclasses: the contract operators and scripts rely on.

Field names are the TOML key names of config.toml.  `load.py` builds these values from TOML
after checking every key; nothing here parses text except the small identity helper.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from core.dataplane.model import IF_ID_BASE, MAX_INTERFACES, SaMode, if_id_for

__all__ = [
    "DEFAULT_ESP_PROPOSALS",
    "DEFAULT_IKE_PROPOSALS",
    "DEFAULT_SOCKET",
    "DYNAMIC",
    "FLOAT",
    "IF_ID_BASE",
    "MAX_PEERS",
    "Config",
    "DataplaneChoice",
    "Dynamic",
    "ExchangeMode",
    "Float",
    "FloatFamily",
    "FloatLink",
    "GlobalSettings",
    "IPAddress",
    "IdKind",
    "Identity",
    "LocalAddress",
    "LogLevel",
    "NatTraversal",
    "PeerConfig",
    "RemoteAddress",
    "SaMode",
    "Secret",
    "TcpMss",
    "TsigKey",
    "parse_identity",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_PEERS = MAX_INTERFACES
DEFAULT_SOCKET = "/run/rbipsec/control.sock"
DEFAULT_IKE_PROPOSALS = ("aes256gcm16-prfsha256-x25519", "aes256-sha256-modp2048")
DEFAULT_ESP_PROPOSALS = ("aes256gcm16", "aes256-sha256")


class Dynamic(enum.Enum):
    """An address written as "dynamic": not fixed (behind NAT, or changing)."""

    DYNAMIC = "dynamic"

    def __str__(self) -> str:
        return self.value


DYNAMIC = Dynamic.DYNAMIC


class Float(enum.Enum):
    """An address written as "float" (or left out beside float_link): it changes, and the
    float link publishes it (local) or looks it up (remote) in DNS."""

    FLOAT = "float"

    def __str__(self) -> str:
        return self.value


FLOAT = Float.FLOAT

# local_address: a fixed IP, DYNAMIC (this node sits behind NAT or changes address), or
# FLOAT (the address the kernel uses toward the peer, published by the float link).
LocalAddress = IPAddress | Dynamic | Float
# remote_address: a fixed IP, a hostname (str, resolved when connecting), DYNAMIC, or FLOAT
# (looked up by the float link).
RemoteAddress = IPAddress | str | Dynamic | Float


class DataplaneChoice(enum.StrEnum):
    AUTO = "auto"
    KERNEL = "kernel"
    USERSPACE = "userspace"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class ExchangeMode(enum.StrEnum):
    """IKEv1 phase 1 exchange (ignored for IKEv2)."""

    MAIN = "main"
    AGGRESSIVE = "aggressive"


class NatTraversal(enum.StrEnum):
    AUTO = "auto"  # UDP-encapsulate ESP when NAT is detected (RFC 3948)
    FORCE = "force"  # always UDP-encapsulate, even without NAT (if the peer supports NAT-T)
    OFF = "off"


class TcpMss(enum.StrEnum):
    AUTO = "auto"  # clamp to what the interface MTU allows
    OFF = "off"


@dataclass(frozen=True, repr=False)
class Secret:
    """A pre-shared key; its repr and str never show the value."""

    value: bytes

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class IdKind(enum.Enum):
    """Kinds of IKE identity an operator can configure (RFC 7296 3.5 / RFC 2407 4.6.2.1)."""

    IPV4_ADDR = "ipv4"
    IPV6_ADDR = "ipv6"
    FQDN = "fqdn"
    USER_FQDN = "user"
    KEY_ID = "keyid"


@dataclass(frozen=True)
class Identity:
    kind: IdKind
    value: str  # address text, domain name, e-mail address, or key-id as hex


def parse_identity(text: str) -> Identity:
    """Parses a configured ID: an IP address, fqdn:NAME, user:MAIL or keyid:HEX.

    A bare name that is not an address is taken as an FQDN, as strongSwan does.  Raises
    ValueError with a readable message; the caller has already rejected "".
    """
    kind_text, sep, rest = text.partition(":")
    if sep and kind_text in ("fqdn", "user", "keyid"):
        if not rest:
            raise ValueError(f"{text!r} has nothing after {kind_text}:")
        if kind_text == "keyid":
            try:
                bytes.fromhex(rest)
            except ValueError:
                raise ValueError(f"keyid must be hexadecimal, got {rest!r}") from None
            return Identity(IdKind.KEY_ID, rest.lower())
        if kind_text == "user":
            if "@" not in rest:
                raise ValueError(f"user: identity {rest!r} is not an e-mail address")
            return Identity(IdKind.USER_FQDN, rest)
        return Identity(IdKind.FQDN, _checked_domain(rest))
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if sep:
            raise ValueError(
                f"{text!r} is neither an IP address nor fqdn:..., user:... or keyid:..."
            ) from None
        return Identity(IdKind.FQDN, _checked_domain(text))
    kind = IdKind.IPV4_ADDR if address.version == 4 else IdKind.IPV6_ADDR
    return Identity(kind, str(address))


def _checked_domain(name: str) -> str:
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(_is_label(label) for label in labels):
        raise ValueError(f"{name!r} is not a valid domain name")
    return name


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and label.replace("-", "").replace("_", "").isalnum()
        and label.isascii()
        and not label.startswith("-")
    )


class FloatFamily(enum.StrEnum):
    """The outer address family a float link publishes and looks up (A or AAAA records)."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True, repr=False)
class TsigKey:
    """A TSIG key (RFC 8945) read from a BIND-style key file; its repr hides the secret."""

    name: str  # the key name, an absolute domain name ("branch1-key.")
    algorithm: str  # "hmac-sha256"
    secret: Secret

    def __repr__(self) -> str:
        return f"TsigKey({self.name!r}, {self.algorithm!r}, ***)"


@dataclass(frozen=True)
class FloatLink:
    """A peer's float link: this node publishes `<node>.<zone>` and looks up
    `<peer_node>.<zone>` at `server` with RFC 2136 UPDATE and queries signed by `tsig_key`.

    `zone` is absolute (ends with a dot); `interval` and `ttl` are seconds.
    """

    zone: str
    node: str
    peer_node: str
    server: IPAddress
    tsig_key_file: str
    tsig_key: TsigKey = field(repr=False)
    interval: int = 300
    ttl: int = 900
    port: int = 53
    family: FloatFamily = FloatFamily.IPV4

    @property
    def own_name(self) -> str:
        return f"{self.node}.{self.zone}"

    @property
    def peer_name(self) -> str:
        return f"{self.peer_node}.{self.zone}"

    def toml_value(self) -> dict[str, object]:
        """The inline table as it would be written in config.toml (defaults left out)."""
        value: dict[str, object] = {
            "zone": self.zone,
            "node": self.node,
            "peer_node": self.peer_node,
            "server": str(self.server),
            "tsig_key_file": self.tsig_key_file,
            "interval": self.interval,
            "ttl": self.ttl,
        }
        if self.port != 53:
            value["port"] = self.port
        if self.family is not FloatFamily.IPV4:
            value["family"] = self.family.value
        return value


@dataclass(frozen=True)
class GlobalSettings:
    enabled: bool = False  # route-based IPsec stays off until set true
    dataplane: DataplaneChoice = DataplaneChoice.AUTO
    unnumbered_source: str = ""  # "" = the default-route interface
    socket: str = DEFAULT_SOCKET
    log_level: LogLevel = LogLevel.INFO


@dataclass(frozen=True)
class PeerConfig:
    """One [[peer]]: one IKE peer and its interface ipsecN.

    `psk` holds the secret whether it was written inline or read from `psk_file`.
    `address` None means unnumbered; `tcp_mss` is TcpMss.AUTO, TcpMss.OFF or a fixed value.
    """

    name: str
    interface: str
    local_address: LocalAddress
    remote_address: RemoteAddress
    psk: Secret = field(repr=False)
    psk_file: str | None = None
    enabled: bool = True
    ike_version: int = 2
    exchange_mode: ExchangeMode = ExchangeMode.MAIN
    local_id: str = ""
    remote_id: str = ""
    mode: SaMode = SaMode.TUNNEL
    ike_proposals: tuple[str, ...] = DEFAULT_IKE_PROPOSALS
    esp_proposals: tuple[str, ...] = DEFAULT_ESP_PROPOSALS
    ike_lifetime: int = 86400
    child_lifetime: int = 28800
    dpd_interval: int = 20
    dpd_retries: int = 5
    nat_traversal: NatTraversal = NatTraversal.AUTO
    passive: bool = False
    address: ipaddress.IPv4Interface | None = None
    mtu: int = 1400
    tcp_mss: int | TcpMss = TcpMss.AUTO
    routes: tuple[ipaddress.IPv4Network, ...] = ()
    float_link: FloatLink | None = None

    @property
    def interface_index(self) -> int:
        """N of the interface name ipsecN."""
        return int(self.interface.removeprefix("ipsec"))

    @property
    def if_id(self) -> int:
        """The XFRM interface id: 0x72620000 | N for ipsecN."""
        return if_id_for(self.interface_index)

    @property
    def local_is_dynamic(self) -> bool:
        return self.local_address is DYNAMIC

    @property
    def remote_is_dynamic(self) -> bool:
        return self.remote_address is DYNAMIC

    @property
    def local_floats(self) -> bool:
        """The local address is whatever routes toward the peer, published by the float link."""
        return self.local_address is FLOAT

    @property
    def remote_floats(self) -> bool:
        """The peer's address is looked up by the float link."""
        return self.remote_address is FLOAT

    @property
    def is_unnumbered(self) -> bool:
        return self.address is None

    @property
    def local_identity(self) -> Identity | None:
        """The configured local ID, else the fixed local address; None if neither is known."""
        return _identity_or_address(self.local_id, self.local_address)

    @property
    def remote_identity(self) -> Identity | None:
        """The expected remote ID, else the fixed remote IP; None: accept what the peer sends."""
        return _identity_or_address(self.remote_id, self.remote_address)


def _identity_or_address(configured: str, address: RemoteAddress) -> Identity | None:
    if configured:
        return parse_identity(configured)
    if isinstance(address, ipaddress.IPv4Address):
        return Identity(IdKind.IPV4_ADDR, str(address))
    if isinstance(address, ipaddress.IPv6Address):
        return Identity(IdKind.IPV6_ADDR, str(address))
    return None


@dataclass(frozen=True)
class Config:
    """A whole validated config file."""

    path: str
    global_: GlobalSettings
    peers: tuple[PeerConfig, ...]

    @property
    def settings(self) -> GlobalSettings:
        return self.global_

    def peer(self, name: str) -> PeerConfig | None:
        for peer in self.peers:
            if peer.name == name:
                return peer
        return None

    @property
    def peer_names(self) -> tuple[str, ...]:
        return tuple(peer.name for peer in self.peers)
