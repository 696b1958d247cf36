"""IKEv2 key derivation: the IKE SA keys (RFC 7296 2.14), their rekey (2.18) and Child SA
KEYMAT (2.17).

Only HMAC PRFs are supported, so the whole Ni | Nr is the PRF key when computing SKEYSEED
(the fixed-key-size rule of 2.14 applies to AES-XCBC/CMAC PRFs only).  Encryption keys of
AES-GCM and ChaCha20-Poly1305 include their 4-byte salt at the end (RFC 5282 7.1, RFC 7634 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.crypto.prf import Prf
from core.crypto.registry import encr_keymat_size, integ_keymat_size
from core.ike.constants import EncrId, IntegId, PrfId

EncrChoice = tuple[EncrId, int | None]  # (algorithm, Key Length attribute in bits)


@dataclass(frozen=True)
class IkeKeys:
    """The seven IKE SA keys; SK_ai/SK_ar are empty for AEAD.  The repr shows no key."""

    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)


@dataclass(frozen=True)
class ChildKeys:
    """One Child SA's keys: `_i` protect initiator->responder traffic, `_r` the reverse.

    Encryption keys include the salt where the algorithm has one; integrity keys are
    empty for AEAD.  The repr shows no key.
    """

    encr_i: bytes = field(repr=False)
    integ_i: bytes = field(repr=False)
    encr_r: bytes = field(repr=False)
    integ_r: bytes = field(repr=False)


def compute_skeyseed(prf_id: PrfId, shared_secret: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 2.14)."""
    return Prf(prf_id).compute(ni + nr, shared_secret)


def compute_rekey_skeyseed(
    old_prf_id: PrfId, old_sk_d: bytes, shared_secret: bytes, ni: bytes, nr: bytes
) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the old IKE SA's PRF (2.18)."""
    return Prf(old_prf_id).compute(old_sk_d, shared_secret + ni + nr)


def _split_ike_keys(
    prf: Prf,
    skeyseed: bytes,
    encr: EncrChoice,
    integ_id: IntegId | None,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    prf_size = prf.key_size
    integ_size = integ_keymat_size(integ_id)
    encr_size = encr_keymat_size(*encr)
    total = 3 * prf_size + 2 * integ_size + 2 * encr_size
    stream = prf.plus(skeyseed, ni + nr + spi_i + spi_r, total)
    sizes = (prf_size, integ_size, integ_size, encr_size, encr_size, prf_size, prf_size)
    parts: list[bytes] = []
    offset = 0
    for size in sizes:
        parts.append(stream[offset : offset + size])
        offset += size
    return IkeKeys(*parts)


def derive_ike_keys(
    prf_id: PrfId,
    encr: EncrChoice,
    integ_id: IntegId | None,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (RFC 7296 2.14).  SPIs are the 8-byte values."""
    skeyseed = compute_skeyseed(prf_id, shared_secret, ni, nr)
    return _split_ike_keys(Prf(prf_id), skeyseed, encr, integ_id, ni, nr, spi_i, spi_r)


def derive_rekeyed_ike_keys(
    old_prf_id: PrfId,
    old_sk_d: bytes,
    new_prf_id: PrfId,
    encr: EncrChoice,
    integ_id: IntegId | None,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    """The keys of an IKE SA created by rekeying (RFC 7296 2.18).

    SKEYSEED comes from the old SA's PRF and SK_d; the expansion uses the new SA's PRF, and
    Ni, Nr, SPIi, SPIr are those of the new CREATE_CHILD_SA exchange and the new SA.
    """
    skeyseed = compute_rekey_skeyseed(old_prf_id, old_sk_d, shared_secret, ni, nr)
    return _split_ike_keys(Prf(new_prf_id), skeyseed, encr, integ_id, ni, nr, spi_i, spi_r)


def derive_child_keys(
    prf_id: PrfId,
    sk_d: bytes,
    encr: EncrChoice,
    integ_id: IntegId | None,
    ni: bytes,
    nr: bytes,
    shared_secret: bytes | None = None,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 2.17).

    Taken in order: initiator->responder encryption then integrity key, then the
    responder->initiator pair.  `shared_secret` is given only with PFS (a KE payload in
    CREATE_CHILD_SA); Ni and Nr are those of the exchange creating the Child SA.
    """
    encr_size = encr_keymat_size(*encr)
    integ_size = integ_keymat_size(integ_id)
    seed = (shared_secret or b"") + ni + nr
    stream = Prf(prf_id).plus(sk_d, seed, 2 * (encr_size + integ_size))
    half = encr_size + integ_size
    return ChildKeys(
        encr_i=stream[:encr_size],
        integ_i=stream[encr_size:half],
        encr_r=stream[half : half + encr_size],
        integ_r=stream[half + encr_size :],
    )
