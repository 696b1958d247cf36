"""IKEv1 SA payloads from the operator's proposal specs, and the choice among the peer's.

Phase 1 (RFC 2409 appendix A): one ISAKMP proposal whose transforms (KEY_IKE) each carry a
full suite as attributes: encryption, key length, hash, PSK authentication, group, life.
The responder picks one transform and returns it unchanged.  IKEv1's PRF is the HMAC of
the negotiated hash (no PRF attribute); AES-GCM is not defined for IKEv1 phase 1, so such
specs are skipped.

Phase 2 (RFC 2407 4.4.4, 4.5): one ESP proposal per spec, all with our inbound SPI, each
transform an ESP transform ID (the same numbers as IKEv2's ENCR IDs for AES-CBC and
AES-GCM) with lifetime, encapsulation mode, authentication algorithm, key length and, for
PFS, group attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.crypto.proposals import ProposalSpec
from core.crypto.registry import SUPPORTED_DH, dh_name, encr_name, integ_name
from core.ike.constants import DhGroup, EncrId, IntegId
from core.ike.v1.constants import (
    KEY_IKE,
    AuthAlg,
    AuthMethod,
    EncapMode,
    HashAlg,
    IpsecAttr,
    LifeType,
    Phase1Attr,
    Phase1Encr,
    ProtocolId,
)
from core.ike.v1.errors import MalformedMessage, NoProposalChosen
from core.ike.v1.payloads import Attribute, Proposal, SaPayload, Transform

HASH_OF_INTEG: dict[IntegId, HashAlg] = {
    IntegId.HMAC_SHA1_96: HashAlg.SHA1,
    IntegId.HMAC_SHA2_256_128: HashAlg.SHA2_256,
    IntegId.HMAC_SHA2_384_192: HashAlg.SHA2_384,
    IntegId.HMAC_SHA2_512_256: HashAlg.SHA2_512,
}
INTEG_OF_HASH = {hash_alg: integ for integ, hash_alg in HASH_OF_INTEG.items()}
AUTH_OF_INTEG: dict[IntegId, AuthAlg] = {
    IntegId.HMAC_SHA1_96: AuthAlg.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: AuthAlg.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: AuthAlg.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: AuthAlg.HMAC_SHA2_512,
}
INTEG_OF_AUTH = {auth: integ for integ, auth in AUTH_OF_INTEG.items()}
ESP_CIPHERS = frozenset({EncrId.AES_CBC, EncrId.AES_GCM_16})
UDP_MODES = frozenset({EncapMode.UDP_TUNNEL, EncapMode.UDP_TRANSPORT,
                       EncapMode.UDP_TUNNEL_DRAFT, EncapMode.UDP_TRANSPORT_DRAFT})
_TUNNEL_MODES = frozenset({EncapMode.TUNNEL, EncapMode.UDP_TUNNEL, EncapMode.UDP_TUNNEL_DRAFT})


def _lifetime_attrs(type_attr: int, duration_attr: int, seconds: float) -> list[Attribute]:
    return [Attribute(type_attr, LifeType.SECONDS),
            Attribute.number(duration_attr, max(1, int(seconds)))]


def _seconds_of(attrs: tuple[Attribute, ...], type_attr: int, duration_attr: int
                ) -> float | None:
    """The seconds lifetime among LIFE_TYPE/LIFE_DURATION pairs (kilobytes are ignored)."""
    current: int | None = None
    seconds: float | None = None
    for attr in attrs:
        if attr.type == type_attr:
            current = attr.as_int()
        elif attr.type == duration_attr:
            if current is None:
                raise MalformedMessage("life duration without a life type")
            if current == LifeType.SECONDS:
                seconds = float(attr.as_int())
            current = None
    return seconds


def min_lifetime(offered: float | None, ours: float) -> float:
    """The lifetime an SA gets: the shorter of the proposed one (if any) and ours."""
    return ours if offered is None or offered <= 0 else min(offered, ours)


# -- phase 1 -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase1Choice:
    key_bits: int
    hash_alg: HashAlg
    group: DhGroup
    lifetime: float | None  # seconds as proposed; None: not given

    def describe(self) -> str:
        integ = INTEG_OF_HASH[self.hash_alg]
        prf = "PRF_" + integ_name(integ).rsplit("_", 1)[0]
        return "/".join((encr_name(EncrId.AES_CBC, self.key_bits), integ_name(integ),
                         prf, dh_name(self.group)))

    def same_suite(self, other: Phase1Choice) -> bool:
        return (self.key_bits, self.hash_alg, self.group) == (other.key_bits, other.hash_alg,
                                                              other.group)


def phase1_choices(specs: tuple[ProposalSpec, ...], lifetime: float,
                   group: DhGroup | None = None) -> list[Phase1Choice]:
    """Every suite our specs allow, most preferred first (only `group` if given)."""
    found: list[Phase1Choice] = []
    for spec in specs:
        for encr, bits in spec.encr:
            if encr != EncrId.AES_CBC:
                continue
            for integ in spec.integ:
                if integ not in HASH_OF_INTEG:
                    continue
                for dh in spec.dh:
                    if dh in SUPPORTED_DH and (group is None or dh == group):
                        choice = Phase1Choice(bits or 128, HASH_OF_INTEG[integ], dh, lifetime)
                        if choice not in found:
                            found.append(choice)
    return found


def phase1_transform(number: int, choice: Phase1Choice) -> Transform:
    attrs = [Attribute(Phase1Attr.ENCRYPTION, Phase1Encr.AES_CBC),
             Attribute(Phase1Attr.KEY_LENGTH, choice.key_bits),
             Attribute(Phase1Attr.HASH, choice.hash_alg),
             Attribute(Phase1Attr.AUTH_METHOD, AuthMethod.PSK),
             Attribute(Phase1Attr.GROUP, choice.group)]
    if choice.lifetime is not None:
        attrs += _lifetime_attrs(Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION, choice.lifetime)
    return Transform(number, KEY_IKE, tuple(attrs))


def phase1_offer(choices: list[Phase1Choice]) -> SaPayload:
    transforms = tuple(phase1_transform(n, c) for n, c in enumerate(choices, start=1))
    return SaPayload((Proposal(1, ProtocolId.ISAKMP, b"", transforms),))


_PHASE1_KNOWN = frozenset({Phase1Attr.ENCRYPTION, Phase1Attr.KEY_LENGTH, Phase1Attr.HASH,
                           Phase1Attr.AUTH_METHOD, Phase1Attr.GROUP, Phase1Attr.LIFE_TYPE,
                           Phase1Attr.LIFE_DURATION})


def parse_phase1_transform(transform: Transform) -> Phase1Choice | None:
    """The suite a transform describes, or None when we cannot use it."""
    if transform.transform_id != KEY_IKE:
        return None
    values: dict[int, int] = {}
    for attr in transform.attributes:
        if attr.type not in _PHASE1_KNOWN:
            return None  # PRF, group descriptions by value, ...: not supported
        if attr.type not in (Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION):
            values[attr.type] = attr.as_int()
    if values.get(Phase1Attr.ENCRYPTION) != Phase1Encr.AES_CBC or \
            values.get(Phase1Attr.AUTH_METHOD) != AuthMethod.PSK:
        return None
    bits = values.get(Phase1Attr.KEY_LENGTH, 128)
    hash_value, group_value = values.get(Phase1Attr.HASH), values.get(Phase1Attr.GROUP)
    if bits not in (128, 192, 256) or hash_value not in INTEG_OF_HASH \
            or group_value not in SUPPORTED_DH:
        return None
    lifetime = _seconds_of(transform.attributes, Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION)
    return Phase1Choice(bits, HashAlg(hash_value), DhGroup(group_value), lifetime)


def _single_proposal(sa: SaPayload, protocol: int) -> Proposal:
    proposals = [p for p in sa.proposals if p.protocol == protocol]
    if len(proposals) != 1 or len(sa.proposals) != 1:
        raise NoProposalChosen(f"expected a single protocol {protocol} proposal")
    return proposals[0]


def select_phase1(ours: list[Phase1Choice], offer: SaPayload,
                  group: DhGroup | None = None) -> tuple[SaPayload, Phase1Choice]:
    """Responder: the first of the peer's transforms we accept, returned unchanged (the
    choice carries the peer's proposed lifetime)."""
    proposal = _single_proposal(offer, ProtocolId.ISAKMP)
    for transform in proposal.transforms:
        choice = parse_phase1_transform(transform)
        if choice is None or (group is not None and choice.group != group):
            continue
        if any(choice.same_suite(mine) for mine in ours):
            return SaPayload((replace(proposal, transforms=(transform,)),)), choice
    raise NoProposalChosen(f"no acceptable ISAKMP transform among {len(proposal.transforms)}")


def accept_phase1(offered: list[Phase1Choice], answer: SaPayload) -> Phase1Choice:
    """Initiator: the responder's single transform must be one we offered."""
    proposal = _single_proposal(answer, ProtocolId.ISAKMP)
    if len(proposal.transforms) != 1:
        raise NoProposalChosen("responder returned more than one ISAKMP transform")
    choice = parse_phase1_transform(proposal.transforms[0])
    if choice is None or not any(choice.same_suite(mine) for mine in offered):
        raise NoProposalChosen("responder chose an ISAKMP transform we did not offer")
    return choice


# -- phase 2 (ESP) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EspChoice:
    encr: EncrId
    key_bits: int
    integ: IntegId | None
    group: DhGroup | None
    encap: EncapMode
    lifetime: float | None

    @property
    def tunnel(self) -> bool:
        return self.encap in _TUNNEL_MODES

    @property
    def udp(self) -> bool:
        return self.encap in UDP_MODES

    def describe(self) -> str:
        parts = [encr_name(self.encr, self.key_bits)]
        if self.integ is not None:
            parts.append(integ_name(self.integ))
        if self.group is not None:
            parts.append(dh_name(self.group))
        return "/".join(parts)

    def same_suite(self, other: EspChoice) -> bool:
        return (self.encr, self.key_bits, self.integ, self.group, self.encap) == (
            other.encr, other.key_bits, other.integ, other.group, other.encap)


def encap_mode(tunnel: bool, udp: bool, draft: bool) -> EncapMode:
    if not udp:
        return EncapMode.TUNNEL if tunnel else EncapMode.TRANSPORT
    if draft:
        return EncapMode.UDP_TUNNEL_DRAFT if tunnel else EncapMode.UDP_TRANSPORT_DRAFT
    return EncapMode.UDP_TUNNEL if tunnel else EncapMode.UDP_TRANSPORT


def pfs_group(specs: tuple[ProposalSpec, ...]) -> DhGroup | None:
    for spec in specs:
        if spec.dh:
            return spec.dh[0]
    return None


def esp_choices(spec: ProposalSpec, encap: EncapMode, group: DhGroup | None,
                lifetime: float) -> list[EspChoice]:
    found: list[EspChoice] = []
    for encr, bits in spec.encr:
        if encr not in ESP_CIPHERS:
            continue
        integs: list[IntegId | None] = [None] if encr == EncrId.AES_GCM_16 else [
            i for i in spec.integ if i in AUTH_OF_INTEG]
        for integ in integs:
            found.append(EspChoice(encr, bits or 128, integ, group, encap, lifetime))
    return found


def esp_transform(number: int, choice: EspChoice) -> Transform:
    attrs = _lifetime_attrs(IpsecAttr.LIFE_TYPE, IpsecAttr.LIFE_DURATION,
                            choice.lifetime or 0) if choice.lifetime else []
    if choice.group is not None:
        attrs.append(Attribute(IpsecAttr.GROUP, choice.group))
    attrs.append(Attribute(IpsecAttr.ENCAPSULATION, choice.encap))
    if choice.integ is not None:
        attrs.append(Attribute(IpsecAttr.AUTH_ALG, AUTH_OF_INTEG[choice.integ]))
    attrs.append(Attribute(IpsecAttr.KEY_LENGTH, choice.key_bits))
    return Transform(number, choice.encr, tuple(attrs))


def esp_offer(specs: tuple[ProposalSpec, ...], spi: bytes, encap: EncapMode,
              group: DhGroup | None, lifetime: float) -> SaPayload:
    proposals: list[Proposal] = []
    for spec in specs:
        choices = esp_choices(spec, encap, group, lifetime)
        if choices:
            transforms = tuple(esp_transform(n, c) for n, c in enumerate(choices, start=1))
            proposals.append(Proposal(len(proposals) + 1, ProtocolId.ESP, spi, transforms))
    if not proposals:
        raise NoProposalChosen("no ESP proposal usable with IKEv1 is configured")
    return SaPayload(tuple(proposals))


_ESP_KNOWN = frozenset({IpsecAttr.LIFE_TYPE, IpsecAttr.LIFE_DURATION, IpsecAttr.GROUP,
                        IpsecAttr.ENCAPSULATION, IpsecAttr.AUTH_ALG, IpsecAttr.KEY_LENGTH,
                        IpsecAttr.ESN})


def parse_esp_transform(transform: Transform) -> EspChoice | None:
    if transform.transform_id not in ESP_CIPHERS:
        return None
    values: dict[int, int] = {}
    for attr in transform.attributes:
        if attr.type not in _ESP_KNOWN:
            return None
        if attr.type not in (IpsecAttr.LIFE_TYPE, IpsecAttr.LIFE_DURATION):
            values[attr.type] = attr.as_int()
    if values.get(IpsecAttr.ESN, 0) != 0:
        return None
    encr = EncrId(transform.transform_id)
    bits = values.get(IpsecAttr.KEY_LENGTH)
    auth = values.get(IpsecAttr.AUTH_ALG)
    mode = values.get(IpsecAttr.ENCAPSULATION)
    group = values.get(IpsecAttr.GROUP)
    if bits not in (128, 192, 256) or mode is None or mode not in EncapMode._value2member_map_ or \
            (group is not None and group not in SUPPORTED_DH):
        return None
    if encr == EncrId.AES_GCM_16:
        if auth is not None:
            return None
        integ = None
    else:
        if auth not in INTEG_OF_AUTH:
            return None
        integ = INTEG_OF_AUTH[AuthAlg(auth)]
    lifetime = _seconds_of(transform.attributes, IpsecAttr.LIFE_TYPE, IpsecAttr.LIFE_DURATION)
    return EspChoice(encr, bits, integ, DhGroup(group) if group is not None else None,
                     EncapMode(mode), lifetime)


def _acceptable(choice: EspChoice, specs: tuple[ProposalSpec, ...], tunnel: bool,
                udp_allowed: bool) -> bool:
    if choice.tunnel != tunnel or (choice.udp and not udp_allowed):
        return False
    for spec in specs:
        if (choice.encr, choice.key_bits) not in [(e, b or 128) for e, b in spec.encr]:
            continue
        if choice.integ is not None and choice.integ not in spec.integ:
            continue
        if (choice.group is None) != (not spec.dh) or \
                (choice.group is not None and choice.group not in spec.dh):
            continue
        return True
    return False


def select_esp(specs: tuple[ProposalSpec, ...], offer: SaPayload, *, tunnel: bool,
               udp_allowed: bool) -> tuple[Proposal, EspChoice]:
    """Responder: the first acceptable ESP transform, in the peer's order (the choice
    carries the peer's proposed lifetime).  Proposals that bundle several protocols under
    one number (AH+ESP, IPComp) are skipped."""
    numbers = [p.number for p in offer.proposals]
    for proposal in offer.proposals:
        if proposal.protocol != ProtocolId.ESP or numbers.count(proposal.number) > 1:
            continue
        for transform in proposal.transforms:
            choice = parse_esp_transform(transform)
            if choice is not None and _acceptable(choice, specs, tunnel, udp_allowed):
                return replace(proposal, transforms=(transform,)), choice
    mode = "tunnel" if tunnel else "transport"
    raise NoProposalChosen(f"no acceptable ESP transform ({mode} mode) in the peer's offer")


def accept_esp(offer: SaPayload, answer: SaPayload) -> tuple[EspChoice, bytes]:
    """Initiator: the responder's single transform, one we offered; returns it and the
    responder's SPI."""
    proposal = _single_proposal(answer, ProtocolId.ESP)
    if len(proposal.transforms) != 1:
        raise NoProposalChosen("responder returned more than one ESP transform")
    choice = parse_esp_transform(proposal.transforms[0])
    offered = [parse_esp_transform(t) for p in offer.proposals for t in p.transforms]
    if choice is None or not any(o is not None and choice.same_suite(o) for o in offered):
        raise NoProposalChosen("responder chose an ESP transform we did not offer")
    if len(proposal.spi) != 4:
        raise NoProposalChosen(f"responder's ESP SPI is {len(proposal.spi)} bytes")
    return choice, proposal.spi
