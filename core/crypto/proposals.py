"""strongSwan-style proposal strings ("aes256gcm16-prfsha256-x25519") parsed into specs.

One string is one proposal: tokens joined by "-", each naming one transform (strongSwan's
proposal keywords).  Several alternatives of one transform type may appear; their order
is the order of preference.  A config that lists several proposals splits them on ","
itself, or calls `parse_ike_proposals` / `parse_esp_proposals`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from core.crypto.registry import dh_name, encr_name, esn_name, integ_name, is_aead, prf_name
from core.errors import UsageError
from core.ike.constants import DhGroup, EncrId, EsnId, IntegId, PrfId


class ProposalError(UsageError, ValueError):
    """A proposal string that names an unknown transform or an impossible combination."""


EncrChoice = tuple[EncrId, int | None]


@dataclass(frozen=True)
class ProposalSpec:
    """The transforms of one proposal, each tuple in order of preference.

    `encr` pairs the algorithm with its key length in bits (None for fixed-key algorithms
    such as ChaCha20-Poly1305, which carry no Key Length attribute, RFC 7634 section 2).
    `prf` is empty for ESP; `dh` is empty for ESP without PFS; `esn` is empty for IKE.
    """

    encr: tuple[EncrChoice, ...]
    integ: tuple[IntegId, ...]
    prf: tuple[PrfId, ...]
    dh: tuple[DhGroup, ...]
    esn: tuple[EsnId, ...]
    text: str

    @property
    def is_aead(self) -> bool:
        return bool(self.encr) and is_aead(self.encr[0][0])


_ENCR_TOKENS: dict[str, EncrChoice] = {
    "aes128": (EncrId.AES_CBC, 128),
    "aes192": (EncrId.AES_CBC, 192),
    "aes256": (EncrId.AES_CBC, 256),
    "aes128gcm16": (EncrId.AES_GCM_16, 128),
    "aes192gcm16": (EncrId.AES_GCM_16, 192),
    "aes256gcm16": (EncrId.AES_GCM_16, 256),
    "aes128gcm": (EncrId.AES_GCM_16, 128),
    "aes192gcm": (EncrId.AES_GCM_16, 192),
    "aes256gcm": (EncrId.AES_GCM_16, 256),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, None),
}

_INTEG_TOKENS: dict[str, IntegId] = {
    "sha1": IntegId.HMAC_SHA1_96,
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
}

# strongSwan derives the PRF from the integrity algorithm when none is named explicitly.
_PRF_OF_INTEG: dict[IntegId, PrfId] = {
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}

_PRF_TOKENS: dict[str, PrfId] = {
    "prfsha1": PrfId.HMAC_SHA1,
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
}

_DH_TOKENS: dict[str, DhGroup] = {
    "modp2048": DhGroup.MODP_2048,
    "modp3072": DhGroup.MODP_3072,
    "modp4096": DhGroup.MODP_4096,
    "ecp256": DhGroup.ECP_256,
    "ecp384": DhGroup.ECP_384,
    "ecp521": DhGroup.ECP_521,
    "x25519": DhGroup.CURVE25519,
    "curve25519": DhGroup.CURVE25519,
}

_ESN_TOKENS: dict[str, EsnId] = {"esn": EsnId.ESN, "noesn": EsnId.NO_ESN}

_T = TypeVar("_T")


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


@dataclass
class _Tokens:
    encr: list[EncrChoice]
    integ: list[IntegId]
    prf: list[PrfId]
    dh: list[DhGroup]
    esn: list[EsnId]
    raw: dict[str, str]  # transform kind -> its first token as written, for messages


def _split(text: str, kind: str) -> _Tokens:
    stripped = text.strip()
    if not stripped:
        raise ProposalError(f"empty {kind} proposal")
    found = _Tokens([], [], [], [], [], {})
    for raw in stripped.split("-"):
        token = raw.strip().lower()
        if token in _INTEG_TOKENS:
            found.raw.setdefault("integ", raw.strip())
        elif token in _PRF_TOKENS:
            found.raw.setdefault("prf", raw.strip())
        elif token in _ESN_TOKENS:
            found.raw.setdefault("esn", raw.strip())
        if token in _ENCR_TOKENS:
            found.encr.append(_ENCR_TOKENS[token])
        elif token in _INTEG_TOKENS:
            found.integ.append(_INTEG_TOKENS[token])
        elif token in _PRF_TOKENS:
            found.prf.append(_PRF_TOKENS[token])
        elif token in _DH_TOKENS:
            found.dh.append(_DH_TOKENS[token])
        elif token in _ESN_TOKENS:
            found.esn.append(_ESN_TOKENS[token])
        elif not token:
            raise ProposalError(f"{kind} proposal {stripped!r}: empty token (stray '-')")
        else:
            raise ProposalError(f"{kind} proposal {stripped!r}: unknown algorithm {raw.strip()!r}")
    return found


def _check_encr(found: _Tokens, kind: str, text: str) -> bool:
    """Checks the encryption/integrity combination; returns whether the proposal is AEAD."""
    if not found.encr:
        raise ProposalError(f"{kind} proposal {text!r}: no encryption algorithm")
    aead = [is_aead(encr_id) for encr_id, _bits in found.encr]
    if any(aead) and not all(aead):
        raise ProposalError(
            f"{kind} proposal {text!r}: AEAD and non-AEAD encryption algorithms mixed"
        )
    if all(aead) and found.integ:
        raise ProposalError(
            f"{kind} proposal {text!r}: integrity algorithm {found.raw['integ']!r}"
            " given with an AEAD algorithm (AEAD needs no integrity algorithm)"
        )
    if not all(aead) and not found.integ:
        raise ProposalError(f"{kind} proposal {text!r}: no integrity algorithm")
    return all(aead)


def parse_ike_proposal(text: str) -> ProposalSpec:
    """Parses one IKE proposal, e.g. "aes256-sha256-modp2048" or "aes128gcm16-prfsha256-x25519"."""
    found = _split(text, "IKE")
    stripped = text.strip()
    aead = _check_encr(found, "IKE", stripped)
    if found.esn:
        raise ProposalError(
            f"IKE proposal {stripped!r}: {found.raw['esn']!r} applies to ESP proposals only"
        )
    prf = found.prf
    if not prf:
        if aead:
            raise ProposalError(
                f"IKE proposal {stripped!r}: an AEAD proposal needs an explicit PRF"
                " (e.g. prfsha256)"
            )
        prf = [_PRF_OF_INTEG[integ] for integ in found.integ]
    if not found.dh:
        raise ProposalError(f"IKE proposal {stripped!r}: no key exchange (DH) group")
    return ProposalSpec(
        encr=_unique(found.encr),
        integ=_unique(found.integ),
        prf=_unique(prf),
        dh=_unique(found.dh),
        esn=(),
        text=stripped,
    )


def parse_esp_proposal(text: str) -> ProposalSpec:
    """Parses one ESP proposal, e.g. "aes128gcm16", "aes256-sha256-modp2048-esn"."""
    found = _split(text, "ESP")
    stripped = text.strip()
    _check_encr(found, "ESP", stripped)
    if found.prf:
        raise ProposalError(
            f"ESP proposal {stripped!r}: PRF {found.raw['prf']!r} applies to IKE proposals only"
        )
    return ProposalSpec(
        encr=_unique(found.encr),
        integ=_unique(found.integ),
        prf=(),
        dh=_unique(found.dh),
        esn=_unique(found.esn) or (EsnId.NO_ESN,),
        text=stripped,
    )


def parse_ike_proposals(text: str) -> tuple[ProposalSpec, ...]:
    """Parses a comma-separated list of IKE proposals, most preferred first."""
    return tuple(parse_ike_proposal(part) for part in text.split(","))


def parse_esp_proposals(text: str) -> tuple[ProposalSpec, ...]:
    """Parses a comma-separated list of ESP proposals, most preferred first."""
    return tuple(parse_esp_proposal(part) for part in text.split(","))


def describe(spec: ProposalSpec) -> str:
    """A strongSwan-like canonical name: "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"."""
    parts = [encr_name(encr_id, bits) for encr_id, bits in spec.encr]
    parts += [integ_name(integ) for integ in spec.integ]
    parts += [prf_name(prf) for prf in spec.prf]
    parts += [dh_name(group) for group in spec.dh]
    parts += [esn_name(esn) for esn in spec.esn]
    return "/".join(parts)
