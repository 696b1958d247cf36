"""SA payload proposals: from the operator's specs to the wire and back (RFC 7296 3.3).

The initiator offers one wire proposal per configured spec; the responder walks the
peer's proposals in the peer's order and takes the first that one of its own specs
accepts (RFC 7296 2.7), choosing one transform of each type.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.crypto.proposals import ProposalSpec
from core.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
    name_of,
)
from core.ike.errors import NoProposalChosen
from core.ike.v2.payloads import Proposal, Transform

AEAD_IDS = frozenset({EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16,
                      EncrId.CHACHA20_POLY1305})


@dataclass(frozen=True)
class Negotiated:
    """One transform of each type, as agreed."""

    encr: EncrId
    encr_bits: int
    integ: IntegId | None
    prf: PrfId | None  # IKE only
    dh: DhGroup | None  # IKE; ESP with PFS
    esn: bool = False

    @property
    def is_aead(self) -> bool:
        return self.encr in AEAD_IDS

    @property
    def encr_choice(self) -> tuple[EncrId, int | None]:
        """(algorithm, Key Length attribute): fixed-key ciphers carry none (RFC 7634)."""
        return self.encr, None if self.encr == EncrId.CHACHA20_POLY1305 else self.encr_bits

    def describe(self) -> str:
        parts = [f"{self.encr.name}_{self.encr_bits}"]
        if self.integ is not None:
            parts.append(self.integ.name)
        if self.prf is not None:
            parts.append(f"PRF_{self.prf.name}")
        if self.dh is not None:
            parts.append(self.dh.name)
        if self.esn:
            parts.append("ESN")
        return "/".join(parts)


def _default_bits(encr: EncrId) -> int:
    return 256 if encr == EncrId.CHACHA20_POLY1305 else 128


def spec_to_proposal(spec: ProposalSpec, number: int, protocol: ProtocolId, spi: bytes,
                     *, with_dh: bool = True) -> Proposal:
    """The wire proposal offering everything in `spec`."""
    transforms: list[Transform] = []
    for encr, bits in spec.encr:
        key_length = None if encr == EncrId.CHACHA20_POLY1305 else (bits or _default_bits(encr))
        transforms.append(Transform(TransformType.ENCR, encr, key_length))
    if protocol == ProtocolId.IKE:
        transforms += [Transform(TransformType.PRF, prf, None) for prf in spec.prf]
    transforms += [Transform(TransformType.INTEG, integ, None) for integ in spec.integ]
    if with_dh:
        transforms += [Transform(TransformType.DH, group, None) for group in spec.dh]
    if protocol == ProtocolId.ESP:
        esns = spec.esn or (EsnId.NO_ESN,)
        transforms += [Transform(TransformType.ESN, esn, None) for esn in esns]
    return Proposal(number, protocol, spi, tuple(transforms))


def offer(specs: tuple[ProposalSpec, ...], protocol: ProtocolId, spi: bytes,
          *, with_dh: bool = True) -> tuple[Proposal, ...]:
    return tuple(spec_to_proposal(spec, number, protocol, spi, with_dh=with_dh)
                 for number, spec in enumerate(specs, start=1))


def negotiated_to_proposal(chosen: Negotiated, number: int, protocol: ProtocolId,
                           spi: bytes) -> Proposal:
    """The single-transform-per-type proposal a responder returns."""
    key_length = None if chosen.encr == EncrId.CHACHA20_POLY1305 else chosen.encr_bits
    transforms = [Transform(TransformType.ENCR, chosen.encr, key_length)]
    if chosen.prf is not None:
        transforms.append(Transform(TransformType.PRF, chosen.prf, None))
    if chosen.integ is not None:
        transforms.append(Transform(TransformType.INTEG, chosen.integ, None))
    if chosen.dh is not None:
        transforms.append(Transform(TransformType.DH, chosen.dh, None))
    if protocol == ProtocolId.ESP:
        esn = EsnId.ESN if chosen.esn else EsnId.NO_ESN
        transforms.append(Transform(TransformType.ESN, esn, None))
    return Proposal(number, protocol, spi, tuple(transforms))


def _match(spec: ProposalSpec, proposal: Proposal, protocol: ProtocolId,
           need_dh: bool | None) -> Negotiated | None:
    """Pick one transform of each type from `proposal` that `spec` allows, or None.

    need_dh: True = a DH group is required (IKE, or ESP when we want PFS), False = the
    proposal must allow none, None = follow the spec."""
    by_type: dict[int, list[Transform]] = {}
    for transform in proposal.transforms:
        if transform.unknown_attributes:
            continue  # RFC 7296 3.3.6: a transform with attributes we do not know is unusable
        by_type.setdefault(int(transform.type), []).append(transform)

    encr_choice: tuple[EncrId, int] | None = None
    for t in by_type.get(TransformType.ENCR, []):
        for encr, bits in spec.encr:
            wanted = None if encr == EncrId.CHACHA20_POLY1305 else (bits or _default_bits(encr))
            if t.id == encr and t.key_length == wanted:
                encr_choice = (encr, wanted or 256)
                break
        if encr_choice:
            break
    if encr_choice is None:
        return None
    aead = encr_choice[0] in AEAD_IDS

    integ: IntegId | None = None
    offered_integ = [t.id for t in by_type.get(TransformType.INTEG, [])]
    if aead:
        if any(i != IntegId.NONE for i in offered_integ):
            return None  # AEAD must not be combined with an integrity algorithm
    else:
        integ = next((IntegId(i) for i in offered_integ if i in spec.integ), None)
        if integ is None:
            return None

    prf: PrfId | None = None
    if protocol == ProtocolId.IKE:
        prf = next((PrfId(t.id) for t in by_type.get(TransformType.PRF, [])
                    if t.id in spec.prf), None)
        if prf is None:
            return None

    offered_dh = [t.id for t in by_type.get(TransformType.DH, [])]
    dh: DhGroup | None = None
    wants_dh = bool(spec.dh) if need_dh is None else need_dh
    if wants_dh:
        dh = next((DhGroup(g) for g in offered_dh if g in spec.dh and g != DhGroup.NONE), None)
        if dh is None:
            return None
    elif offered_dh and DhGroup.NONE not in offered_dh:
        return None

    esn = False
    if protocol == ProtocolId.ESP:
        offered_esn = [t.id for t in by_type.get(TransformType.ESN, [])] or [EsnId.NO_ESN]
        ours = spec.esn or (EsnId.NO_ESN,)
        pick = next((e for e in offered_esn if e in ours), None)
        if pick is None:
            return None
        esn = pick == EsnId.ESN
    return Negotiated(encr_choice[0], encr_choice[1], integ, prf, dh, esn)


def select(ours: tuple[ProposalSpec, ...], theirs: tuple[Proposal, ...],
           protocol: ProtocolId, *, need_dh: bool | None = None
           ) -> tuple[Proposal, Negotiated]:
    """Responder: the first of the peer's proposals that one of our specs accepts."""
    for proposal in theirs:
        if proposal.protocol != protocol:
            continue
        for spec in ours:
            chosen = _match(spec, proposal, protocol, need_dh)
            if chosen is not None:
                return proposal, chosen
    offered = "; ".join(describe_offer(p) for p in theirs) or "nothing"
    raise NoProposalChosen(f"no acceptable proposal among: {offered}")


def accept_response(ours: tuple[ProposalSpec, ...], proposal: Proposal,
                    protocol: ProtocolId, *, need_dh: bool | None = None) -> Negotiated:
    """Initiator: check the responder's single choice against what we offered."""
    types = [int(t.type) for t in proposal.transforms]
    if len(types) != len(set(types)) or proposal.protocol != protocol:
        raise NoProposalChosen("responder returned more than one transform of a type")
    if not 1 <= proposal.number <= len(ours):
        raise NoProposalChosen(f"responder chose proposal #{proposal.number} we did not offer")
    chosen = _match(ours[proposal.number - 1], proposal, protocol, need_dh)
    if chosen is None:
        raise NoProposalChosen(f"responder chose transforms we did not offer: "
                               f"{describe_offer(proposal)}")
    return chosen


def describe_offer(proposal: Proposal) -> str:
    names: list[str] = []
    registries: dict[int, type] = {TransformType.ENCR: EncrId, TransformType.PRF: PrfId,
                                   TransformType.INTEG: IntegId, TransformType.DH: DhGroup,
                                   TransformType.ESN: EsnId}
    for t in proposal.transforms:
        registry = registries.get(int(t.type))
        name = name_of(registry, t.id) if registry else f"{t.type}:{t.id}"
        names.append(f"{name}_{t.key_length}" if t.key_length else name)
    return "/".join(names)
