"""What each supported algorithm needs: key, block, IV, ICV, salt and output sizes, names.

Sources: AES-CBC in IKE RFC 3602 / RFC 7296 3.14; AES-GCM in IKE RFC 5282 section 7.1 and
ESP RFC 4106 section 8.1 (4-byte salt taken after the key); ChaCha20-Poly1305 RFC 7634
section 2 (256-bit key plus 4-byte salt, 8-byte IV, 16-byte ICV); HMAC-SHA2 integrity and
PRF RFC 4868 section 2; HMAC-SHA1-96 RFC 2404; key exchange payload sizes RFC 3526
(MODP), RFC 5903 section 7 (ECP), RFC 8031 section 2 (Curve25519).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from core.errors import UsageError
from core.ike.constants import DhGroup, EncrId, EsnId, IntegId, PrfId


class UnsupportedAlgorithm(UsageError):
    """Asked for an algorithm (or key size) this implementation does not provide."""


@dataclass(frozen=True)
class EncrInfo:
    encr_id: EncrId
    name: str
    key_bits: tuple[int, ...]  # allowed Key Length attribute values; () = no attribute
    fixed_key_bits: int | None  # key size for algorithms without a Key Length attribute
    block_size: int  # padding unit of the plaintext (1 for AEAD stream modes)
    iv_size: int
    icv_size: int  # 0 for non-AEAD (the integrity transform provides the ICV)
    salt_size: int  # bytes of keying material taken after the key (the nonce salt)

    @property
    def is_aead(self) -> bool:
        return self.icv_size > 0


@dataclass(frozen=True)
class PrfInfo:
    prf_id: PrfId
    name: str
    hash_algorithm: hashes.HashAlgorithm
    output_size: int
    key_size: int  # preferred key size (RFC 7296 2.13: SK_d, SK_pi, SK_pr are this long)


@dataclass(frozen=True)
class IntegInfo:
    integ_id: IntegId
    name: str
    hash_algorithm: hashes.HashAlgorithm
    key_size: int
    icv_size: int  # output truncated to this many bytes


@dataclass(frozen=True)
class DhInfo:
    group: DhGroup
    name: str
    public_size: int  # KE payload data length
    shared_size: int  # g^ir length


_ENCR: dict[EncrId, EncrInfo] = {
    EncrId.AES_CBC: EncrInfo(EncrId.AES_CBC, "AES_CBC", (128, 192, 256), None, 16, 16, 0, 0),
    EncrId.AES_GCM_16: EncrInfo(
        EncrId.AES_GCM_16, "AES_GCM_16", (128, 192, 256), None, 1, 8, 16, 4
    ),
    EncrId.CHACHA20_POLY1305: EncrInfo(
        EncrId.CHACHA20_POLY1305, "CHACHA20_POLY1305", (), 256, 1, 8, 16, 4
    ),
}

_PRF: dict[PrfId, PrfInfo] = {
    PrfId.HMAC_SHA1: PrfInfo(PrfId.HMAC_SHA1, "PRF_HMAC_SHA1", hashes.SHA1(), 20, 20),
    PrfId.HMAC_SHA2_256: PrfInfo(PrfId.HMAC_SHA2_256, "PRF_HMAC_SHA2_256", hashes.SHA256(), 32, 32),
    PrfId.HMAC_SHA2_384: PrfInfo(PrfId.HMAC_SHA2_384, "PRF_HMAC_SHA2_384", hashes.SHA384(), 48, 48),
    PrfId.HMAC_SHA2_512: PrfInfo(PrfId.HMAC_SHA2_512, "PRF_HMAC_SHA2_512", hashes.SHA512(), 64, 64),
}

_INTEG: dict[IntegId, IntegInfo] = {
    IntegId.HMAC_SHA1_96: IntegInfo(IntegId.HMAC_SHA1_96, "HMAC_SHA1_96", hashes.SHA1(), 20, 12),
    IntegId.HMAC_SHA2_256_128: IntegInfo(
        IntegId.HMAC_SHA2_256_128, "HMAC_SHA2_256_128", hashes.SHA256(), 32, 16
    ),
    IntegId.HMAC_SHA2_384_192: IntegInfo(
        IntegId.HMAC_SHA2_384_192, "HMAC_SHA2_384_192", hashes.SHA384(), 48, 24
    ),
    IntegId.HMAC_SHA2_512_256: IntegInfo(
        IntegId.HMAC_SHA2_512_256, "HMAC_SHA2_512_256", hashes.SHA512(), 64, 32
    ),
}

_DH: dict[DhGroup, DhInfo] = {
    DhGroup.MODP_2048: DhInfo(DhGroup.MODP_2048, "MODP_2048", 256, 256),
    DhGroup.MODP_3072: DhInfo(DhGroup.MODP_3072, "MODP_3072", 384, 384),
    DhGroup.MODP_4096: DhInfo(DhGroup.MODP_4096, "MODP_4096", 512, 512),
    DhGroup.ECP_256: DhInfo(DhGroup.ECP_256, "ECP_256", 64, 32),
    DhGroup.ECP_384: DhInfo(DhGroup.ECP_384, "ECP_384", 96, 48),
    DhGroup.ECP_521: DhInfo(DhGroup.ECP_521, "ECP_521", 132, 66),
    DhGroup.CURVE25519: DhInfo(DhGroup.CURVE25519, "CURVE_25519", 32, 32),
}

_ESN_NAMES: dict[EsnId, str] = {EsnId.NO_ESN: "NO_EXT_SEQ", EsnId.ESN: "EXT_SEQ"}

SUPPORTED_ENCR: frozenset[EncrId] = frozenset(_ENCR)
SUPPORTED_PRF: frozenset[PrfId] = frozenset(_PRF)
SUPPORTED_INTEG: frozenset[IntegId] = frozenset(_INTEG)
SUPPORTED_DH: frozenset[DhGroup] = frozenset(_DH)


def encr_info(encr_id: int) -> EncrInfo:
    try:
        return _ENCR[EncrId(encr_id)]
    except (ValueError, KeyError):
        raise UnsupportedAlgorithm(f"unsupported encryption algorithm {encr_id}") from None


def prf_info(prf_id: int) -> PrfInfo:
    try:
        return _PRF[PrfId(prf_id)]
    except (ValueError, KeyError):
        raise UnsupportedAlgorithm(f"unsupported PRF {prf_id}") from None


def integ_info(integ_id: int) -> IntegInfo:
    try:
        return _INTEG[IntegId(integ_id)]
    except (ValueError, KeyError):
        raise UnsupportedAlgorithm(f"unsupported integrity algorithm {integ_id}") from None


def dh_info(group: int) -> DhInfo:
    try:
        return _DH[DhGroup(group)]
    except (ValueError, KeyError):
        raise UnsupportedAlgorithm(f"unsupported key exchange group {group}") from None


def is_aead(encr_id: int) -> bool:
    return encr_info(encr_id).is_aead


def is_supported_encr(encr_id: int, key_bits: int | None) -> bool:
    """Whether we implement `encr_id` with this Key Length attribute (None: attribute absent)."""
    info = _ENCR.get(EncrId(encr_id)) if encr_id in _ENCR else None
    if info is None:
        return False
    if info.key_bits:
        return key_bits in info.key_bits
    return key_bits is None


def encr_key_bits(encr_id: int, key_bits: int | None) -> int:
    """The cipher key size in bits (the Key Length attribute, or the algorithm's fixed size)."""
    info = encr_info(encr_id)
    if not is_supported_encr(encr_id, key_bits):
        raise UnsupportedAlgorithm(f"{info.name} does not take a key length of {key_bits}")
    return key_bits if key_bits is not None else (info.fixed_key_bits or 0)


def encr_keymat_size(encr_id: int, key_bits: int | None) -> int:
    """Bytes of keying material for one encryption key: the key plus its salt if any."""
    return encr_key_bits(encr_id, key_bits) // 8 + encr_info(encr_id).salt_size


def integ_keymat_size(integ_id: int | None) -> int:
    """Bytes of keying material for one integrity key (0 when there is none, as with AEAD)."""
    if integ_id is None or integ_id == IntegId.NONE:
        return 0
    return integ_info(integ_id).key_size


def ike_keymat_length(prf_id: int, encr_id: int, key_bits: int | None, integ_id: int | None) -> int:
    """Length of {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} (RFC 7296 2.14)."""
    prf_size = prf_info(prf_id).key_size
    return 3 * prf_size + 2 * integ_keymat_size(integ_id) + 2 * encr_keymat_size(encr_id, key_bits)


def child_keymat_length(encr_id: int, key_bits: int | None, integ_id: int | None) -> int:
    """Length of KEYMAT for one Child SA pair (RFC 7296 2.17): both directions."""
    return 2 * (encr_keymat_size(encr_id, key_bits) + integ_keymat_size(integ_id))


# -- human names (strongSwan's spelling, for status output) ------------------------------


def encr_name(encr_id: int, key_bits: int | None = None) -> str:
    info = _ENCR.get(EncrId(encr_id)) if encr_id in _ENCR else None
    base = info.name if info is not None else _enum_name(EncrId, encr_id)
    if key_bits is not None and (info is None or info.key_bits):
        return f"{base}_{key_bits}"
    return base


def integ_name(integ_id: int) -> str:
    info = _INTEG.get(IntegId(integ_id)) if integ_id in _INTEG else None
    return info.name if info is not None else _enum_name(IntegId, integ_id)


def prf_name(prf_id: int) -> str:
    info = _PRF.get(PrfId(prf_id)) if prf_id in _PRF else None
    return info.name if info is not None else "PRF_" + _enum_name(PrfId, prf_id)


def dh_name(group: int) -> str:
    info = _DH.get(DhGroup(group)) if group in _DH else None
    return info.name if info is not None else _enum_name(DhGroup, group)


def esn_name(esn: int) -> str:
    return _ESN_NAMES[EsnId(esn)] if esn in _ESN_NAMES else str(esn)


def _enum_name(enum: type[EncrId | IntegId | PrfId | DhGroup], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)
