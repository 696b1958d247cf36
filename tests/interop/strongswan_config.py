"""strongswan.conf and swanctl.conf generated from small Python descriptions.

`CharonSettings` renders a self-contained strongswan.conf (no include of /etc: the system
configuration must not leak into a test peer) for one charon with userspace ESP:
kernel-libipsec before kernel-netlink, routes not installed and the table-220 rule made
inert by a fwmark (route-based tests add their own routes through `ipsec0`), a vici
socket and a log file in the instance directory.

`Connection`/`Child` render swanctl.conf: one `connections` entry per `Connection` with
PSK authentication, and one `secrets` entry holding its PSK for the two identities.
Durations are seconds (int) or strongSwan strings ("90s", "1h"); `None` leaves
strongSwan's default.  `extra` maps raw swanctl keys to values for anything not modelled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

Duration = int | str | None

# Order matters: kernel-libipsec must register its IPsec backend before kernel-netlink does.
PLUGINS = (
    "random nonce openssl kdf pem pkcs1 x509 pubkey curve25519 chapoly gcm aes sha1 sha2 "
    "md5 hmac gmp kernel-libipsec kernel-netlink socket-default vici"
)
DEFAULT_LOG_LEVELS: Mapping[str, int] = {"default": 1, "ike": 2, "cfg": 2, "knl": 1, "net": 1}
INERT_FWMARK = "0x4242"
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9_.:/@,+*%-]+$")


class ConfigProblem(ValueError):
    """A description that strongSwan's settings syntax cannot express."""


def quote(value: str) -> str:
    """A settings value: bare when safe, else double-quoted (no way to escape a quote)."""
    if _PLAIN_VALUE.match(value):
        return value
    if '"' in value or "\n" in value:
        raise ConfigProblem(f"value cannot be written to a strongSwan config: {value!r}")
    return f'"{value}"'


def duration(value: int | str) -> str:
    return f"{value}s" if isinstance(value, int) else value


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _block(name: str, lines: list[str], indent: int) -> list[str]:
    pad = "    " * indent
    return [f"{pad}{name} {{", *lines, f"{pad}}}"]


def _keys(pairs: Mapping[str, str | None], indent: int) -> list[str]:
    pad = "    " * indent
    return [f"{pad}{key} = {value}" for key, value in pairs.items() if value is not None]


@dataclass(frozen=True)
class CharonSettings:
    """The knobs of one charon that are not per connection."""

    log_levels: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LOG_LEVELS))
    retransmit_timeout: float | None = None  # strongSwan: 4.0 s
    retransmit_base: float | None = None  # strongSwan: 1.8
    retransmit_tries: int | None = None  # strongSwan: 5
    retransmit_jitter: int | None = None  # percent, strongSwan: 0
    fwmark: str = INERT_FWMARK
    install_routes: bool = False
    threads: int | None = None
    port: int | None = None  # IKE, strongSwan: 500
    port_nat_t: int | None = None  # strongSwan: 4500
    make_before_break: bool | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # raw `charon.<key> = value`

    def render(self, instance_dir: Path) -> str:
        charon: dict[str, str | None] = {
            "load_modular": "no",
            "load": PLUGINS,
            "install_routes": _yes_no(self.install_routes),
            "install_virtual_ip": "no",
            "i_dont_care_about_security_and_use_aggressive_mode_psk": "yes",
            "retransmit_timeout": _opt(self.retransmit_timeout),
            "retransmit_base": _opt(self.retransmit_base),
            "retransmit_tries": _opt(self.retransmit_tries),
            "retransmit_jitter": _opt(self.retransmit_jitter),
            "threads": _opt(self.threads),
            "port": _opt(self.port),
            "port_nat_t": _opt(self.port_nat_t),
            "make_before_break": None
            if self.make_before_break is None
            else _yes_no(self.make_before_break),
            **{key: quote(value) for key, value in self.extra.items()},
        }
        levels = {group: str(level) for group, level in self.log_levels.items()}
        filelog = _keys(
            {
                "path": str(instance_dir / "charon.log"),
                "time_format": quote("%H:%M:%S"),
                "time_add_ms": "yes",
                "ike_name": "yes",
                "flush_line": "yes",
                "append": "yes",
                **levels,
            },
            3,
        )
        plugins = [
            *_block("vici", _keys({"socket": f"unix://{instance_dir}/charon.vici"}, 3), 2),
            *_block("kernel-netlink", _keys({"fwmark": self.fwmark}, 3), 2),
        ]
        body = [
            *_keys(charon, 1),
            *_block("filelog", _block("test", filelog, 2), 1),
            # No syslog: a `daemon` logger with default -1 silences it.
            *_block("syslog", _block("daemon", _keys({"default": "-1"}, 3), 2), 1),
            *_block("plugins", plugins, 1),
        ]
        return "\n".join(_block("charon", body, 0)) + "\n"


def _opt(value: float | int | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Child:
    """A CHILD_SA configuration (swanctl `children.<name>`)."""

    name: str
    local_ts: tuple[str, ...] = ("0.0.0.0/0",)
    remote_ts: tuple[str, ...] = ("0.0.0.0/0",)
    esp_proposals: tuple[str, ...] = ("aes256gcm16",)
    mode: str = "tunnel"
    start_action: str = "none"  # none | trap | start
    dpd_action: str | None = None  # clear | trap | restart (belongs here, not in the IKE part)
    close_action: str | None = None
    rekey_time: Duration = None
    life_time: Duration = None
    rand_time: Duration = None  # rekey jitter; 0 for exact rekey times
    extra: Mapping[str, str] = field(default_factory=dict)

    def render(self) -> list[str]:
        pairs: dict[str, str | None] = {
            "local_ts": ",".join(self.local_ts),
            "remote_ts": ",".join(self.remote_ts),
            "esp_proposals": ",".join(self.esp_proposals),
            "mode": self.mode,
            "start_action": self.start_action,
            "dpd_action": self.dpd_action,
            "close_action": self.close_action,
            "rekey_time": _dur(self.rekey_time),
            "life_time": _dur(self.life_time),
            "rand_time": _dur(self.rand_time),
            **{key: quote(value) for key, value in self.extra.items()},
        }
        return _block(self.name, _keys(pairs, 4), 3)


def _dur(value: Duration) -> str | None:
    return None if value is None else duration(value)


@dataclass(frozen=True)
class Connection:
    """An IKE connection with PSK authentication (swanctl `connections.<name>`)."""

    name: str
    local_addrs: str
    remote_addrs: str
    psk: str
    children: tuple[Child, ...]
    local_id: str | None = None  # default: local_addrs
    remote_id: str | None = None  # default: remote_addrs
    version: int = 2
    proposals: tuple[str, ...] = ("aes256gcm16-prfsha256-x25519",)
    aggressive: bool = False
    encap: bool = False
    mobike: bool = False
    dpd_delay: Duration = None
    dpd_timeout: Duration = None  # IKEv1 only
    rekey_time: Duration = None
    reauth_time: Duration = None
    over_time: Duration = None
    rand_time: Duration = None  # rekey jitter; 0 for exact rekey times
    keyingtries: int | None = None  # 0: forever
    unique: str | None = None
    local_port: int | None = None
    remote_port: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> tuple[str, str]:
        return self.local_id or self.local_addrs, self.remote_id or self.remote_addrs

    def render(self) -> list[str]:
        local_id, remote_id = self.ids
        pairs: dict[str, str | None] = {
            "version": str(self.version),
            "local_addrs": self.local_addrs,
            "remote_addrs": self.remote_addrs,
            "local_port": _opt(self.local_port),
            "remote_port": _opt(self.remote_port),
            "proposals": ",".join(self.proposals),
            "aggressive": _yes_no(self.aggressive),
            "encap": _yes_no(self.encap),
            "mobike": _yes_no(self.mobike),
            "send_certreq": "no",
            "dpd_delay": _dur(self.dpd_delay),
            "dpd_timeout": _dur(self.dpd_timeout),
            "rekey_time": _dur(self.rekey_time),
            "reauth_time": _dur(self.reauth_time),
            "over_time": _dur(self.over_time),
            "rand_time": _dur(self.rand_time),
            "keyingtries": _opt(self.keyingtries),
            "unique": self.unique,
            **{key: quote(value) for key, value in self.extra.items()},
        }
        local = _keys({"auth": "psk", "id": quote(local_id)}, 3)
        remote = _keys({"auth": "psk", "id": quote(remote_id)}, 3)
        children = [line for child in self.children for line in child.render()]
        body = [
            *_keys(pairs, 2),
            *_block("local", local, 2),
            *_block("remote", remote, 2),
            *_block("children", children, 2),
        ]
        return _block(self.name, body, 1)

    def render_secret(self) -> list[str]:
        local_id, remote_id = self.ids
        if '"' in self.psk:
            raise ConfigProblem(f"{self.name}: a PSK with a double quote cannot be written")
        pairs = {"id-local": quote(local_id), "id-remote": quote(remote_id)}
        pairs["secret"] = f'"{self.psk}"'
        return _block(f"ike-{self.name}", _keys(pairs, 2), 1)


def render_swanctl(connections: list[Connection]) -> str:
    names = [connection.name for connection in connections]
    if len(set(names)) != len(names):
        raise ConfigProblem(f"connection names must be unique: {names}")
    conns = [line for connection in connections for line in connection.render()]
    secrets = [line for connection in connections for line in connection.render_secret()]
    return "\n".join([*_block("connections", conns, 0), *_block("secrets", secrets, 0)]) + "\n"
