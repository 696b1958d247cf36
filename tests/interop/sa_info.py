"""What charon reports about its SAs (vici `list-sa` events), as typed records.

Field names follow the vici README (`list-sa` event).  Every record keeps the raw message
in `raw` for fields not modelled here.  `proposal` renders the algorithms the way
`swanctl --list-sas` does, e.g. "AES_GCM_16_256" or "AES_CBC_256/HMAC_SHA2_256_128/MODP_2048".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.interop.vici import Message, Value


def _text(message: Message, key: str) -> str:
    value = message.get(key, "")
    return value if isinstance(value, str) else ""


def _items(message: Message, key: str) -> tuple[str, ...]:
    value = message.get(key, [])
    return tuple(value) if isinstance(value, list) else ()


def _number(message: Message, key: str) -> int:
    text = _text(message, key)
    return int(text) if text.isdigit() else 0


def _proposal(message: Message) -> str:
    parts = []
    encryption = _text(message, "encr-alg")
    if encryption:
        keysize = _text(message, "encr-keysize")
        parts.append(f"{encryption}_{keysize}" if keysize else encryption)
    for key in ("integ-alg", "prf-alg", "dh-group"):
        algorithm = _text(message, key)
        if algorithm:
            keysize = _text(message, "integ-keysize") if key == "integ-alg" else ""
            parts.append(f"{algorithm}_{keysize}" if keysize else algorithm)
    return "/".join(parts)


@dataclass(frozen=True)
class ChildSaInfo:
    name: str
    uniqueid: str
    state: str  # INSTALLED, REKEYING, REKEYED, DELETING, ...
    mode: str  # TUNNEL / TRANSPORT
    encap: bool
    spi_in: str
    spi_out: str
    encr_alg: str
    encr_keysize: str
    integ_alg: str
    dh_group: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    packets_in: int
    packets_out: int
    raw: Message = field(repr=False)

    @property
    def proposal(self) -> str:
        return _proposal(self.raw)

    @classmethod
    def parse(cls, key: str, message: Message) -> ChildSaInfo:
        return cls(
            name=_text(message, "name") or key,
            uniqueid=_text(message, "uniqueid"),
            state=_text(message, "state"),
            mode=_text(message, "mode"),
            encap=_text(message, "encap") == "yes",
            spi_in=_text(message, "spi-in"),
            spi_out=_text(message, "spi-out"),
            encr_alg=_text(message, "encr-alg"),
            encr_keysize=_text(message, "encr-keysize"),
            integ_alg=_text(message, "integ-alg"),
            dh_group=_text(message, "dh-group"),
            local_ts=_items(message, "local-ts"),
            remote_ts=_items(message, "remote-ts"),
            packets_in=_number(message, "packets-in"),
            packets_out=_number(message, "packets-out"),
            raw=message,
        )


@dataclass(frozen=True)
class IkeSaInfo:
    name: str
    uniqueid: str
    version: int
    state: str  # CONNECTING, ESTABLISHED, REKEYING, DELETING, ...
    initiator: bool
    local_host: str
    local_port: int
    remote_host: str
    remote_port: int
    local_id: str
    remote_id: str
    nat_any: bool
    nat_fake: bool
    children: tuple[ChildSaInfo, ...]
    raw: Message = field(repr=False)

    @property
    def proposal(self) -> str:
        return _proposal(self.raw)

    @property
    def spi_i(self) -> str:
        """The IKE initiator's SPI, 16 hex digits."""
        return _text(self.raw, "initiator-spi")

    @property
    def spi_r(self) -> str:
        return _text(self.raw, "responder-spi")

    @property
    def installed(self) -> tuple[ChildSaInfo, ...]:
        return tuple(child for child in self.children if child.state == "INSTALLED")

    @classmethod
    def parse(cls, name: str, message: Message) -> IkeSaInfo:
        children_section: Value = message.get("child-sas", {})
        children = (
            tuple(
                ChildSaInfo.parse(key, value)
                for key, value in children_section.items()
                if isinstance(value, dict)
            )
            if isinstance(children_section, dict)
            else ()
        )
        return cls(
            name=name,
            uniqueid=_text(message, "uniqueid"),
            version=_number(message, "version"),
            state=_text(message, "state"),
            initiator=_text(message, "initiator") == "yes",
            local_host=_text(message, "local-host"),
            local_port=_number(message, "local-port"),
            remote_host=_text(message, "remote-host"),
            remote_port=_number(message, "remote-port"),
            local_id=_text(message, "local-id"),
            remote_id=_text(message, "remote-id"),
            nat_any=_text(message, "nat-any") == "yes",
            nat_fake=_text(message, "nat-fake") == "yes",
            children=children,
            raw=message,
        )


def parse_list_sa(event: Message) -> list[IkeSaInfo]:
    """One `list-sa` event: a section per IKE_SA, keyed by its config name."""
    return [IkeSaInfo.parse(name, body) for name, body in event.items() if isinstance(body, dict)]
