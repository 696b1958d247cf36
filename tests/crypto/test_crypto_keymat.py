"""IKEv2 key derivation: key sizes, ordering, the rekey PRF rule, and no keys in reprs."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.crypto.keymat import (
    ChildKeys,
    derive_child_keys,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
)
from core.crypto.prf import Integrity, Prf
from core.crypto.registry import UnsupportedAlgorithm, ike_keymat_length
from core.errors import IntegrityError
from core.ike.constants import EncrId, IntegId, PrfId

NI, NR, SPI_I, SPI_R = b"\x11" * 32, b"\x22" * 16, bytes(range(8)), bytes(range(8, 16))
SHARED = bytes(range(256)) * 1


@pytest.mark.parametrize(
    ("prf_id", "encr", "integ", "sizes"),
    [
        # (SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr)
        (PrfId.HMAC_SHA2_256, (EncrId.AES_GCM_16, 256), None, (32, 0, 0, 36, 36, 32, 32)),
        (PrfId.HMAC_SHA2_384, (EncrId.AES_GCM_16, 128), None, (48, 0, 0, 20, 20, 48, 48)),
        (PrfId.HMAC_SHA2_512, (EncrId.CHACHA20_POLY1305, None), None, (64, 0, 0, 36, 36, 64, 64)),
        (PrfId.HMAC_SHA1, (EncrId.AES_CBC, 128), IntegId.HMAC_SHA1_96,
         (20, 20, 20, 16, 16, 20, 20)),
        (PrfId.HMAC_SHA2_256, (EncrId.AES_CBC, 256), IntegId.HMAC_SHA2_256_128,
         (32, 32, 32, 32, 32, 32, 32)),
        (PrfId.HMAC_SHA2_384, (EncrId.AES_CBC, 256), IntegId.HMAC_SHA2_384_192,
         (48, 48, 48, 32, 32, 48, 48)),
        (PrfId.HMAC_SHA2_512, (EncrId.AES_CBC, 192), IntegId.HMAC_SHA2_512_256,
         (64, 64, 64, 24, 24, 64, 64)),
    ],
)  # fmt: skip
def test_ike_key_sizes_and_order(
    prf_id: PrfId,
    encr: tuple[EncrId, int | None],
    integ: IntegId | None,
    sizes: tuple[int, ...],
) -> None:
    keys = derive_ike_keys(prf_id, encr, integ, SHARED, NI, NR, SPI_I, SPI_R)
    parts = (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)
    assert tuple(len(p) for p in parts) == sizes
    assert sum(sizes) == ike_keymat_length(prf_id, encr[0], encr[1], integ)
    prf = Prf(prf_id)
    skeyseed = prf.compute(NI + NR, SHARED)
    assert b"".join(parts) == prf.plus(skeyseed, NI + NR + SPI_I + SPI_R, sum(sizes))


def test_skeyseed_keys_the_prf_with_the_nonces() -> None:
    """RFC 7296 2.14: SKEYSEED = prf(Ni | Nr, g^ir), the nonces are the HMAC key."""
    keys = derive_ike_keys(
        PrfId.HMAC_SHA2_256, (EncrId.AES_GCM_16, 128), None, SHARED, NI, NR, SPI_I, SPI_R
    )
    skeyseed = hmac.new(NI + NR, SHARED, hashlib.sha256).digest()
    t1 = hmac.new(skeyseed, NI + NR + SPI_I + SPI_R + b"\x01", hashlib.sha256).digest()
    assert keys.sk_d == t1


def test_rekeyed_ike_keys_use_the_old_prf_for_skeyseed() -> None:
    old_sk_d = b"\x5a" * 20
    keys = derive_rekeyed_ike_keys(
        PrfId.HMAC_SHA1, old_sk_d, PrfId.HMAC_SHA2_256, (EncrId.AES_GCM_16, 256), None,
        SHARED, NI, NR, SPI_I, SPI_R,
    )  # fmt: skip
    skeyseed = hmac.new(old_sk_d, SHARED + NI + NR, hashlib.sha1).digest()
    stream = Prf(PrfId.HMAC_SHA2_256).plus(skeyseed, NI + NR + SPI_I + SPI_R, 32 * 3 + 36 * 2)
    assert keys.sk_d == stream[:32]
    assert keys.sk_ei == stream[32:68]
    assert keys.sk_pr == stream[-32:]


@pytest.mark.parametrize("pfs", [False, True])
def test_child_keys_order(pfs: bool) -> None:
    sk_d = b"\x77" * 32
    shared = SHARED if pfs else None
    keys = derive_child_keys(
        PrfId.HMAC_SHA2_256, sk_d, (EncrId.AES_CBC, 128), IntegId.HMAC_SHA2_256_128, NI, NR,
        shared,
    )  # fmt: skip
    seed = (SHARED if pfs else b"") + NI + NR
    stream = Prf(PrfId.HMAC_SHA2_256).plus(sk_d, seed, 2 * (16 + 32))
    # 2.17: initiator->responder encryption, then integrity, then the other direction.
    assert keys.encr_i == stream[:16]
    assert keys.integ_i == stream[16:48]
    assert keys.encr_r == stream[48:64]
    assert keys.integ_r == stream[64:]


def test_child_keys_aead_carry_salt_and_no_integrity() -> None:
    keys = derive_child_keys(PrfId.HMAC_SHA2_256, b"k" * 32, (EncrId.AES_GCM_16, 256), None, NI, NR)
    assert (len(keys.encr_i), len(keys.integ_i), len(keys.encr_r), len(keys.integ_r)) == (
        36, 0, 36, 0,
    )  # fmt: skip
    assert keys.encr_i != keys.encr_r


def test_pfs_changes_the_keys() -> None:
    args = (PrfId.HMAC_SHA2_256, b"k" * 32, (EncrId.AES_GCM_16, 128), None, NI, NR)
    assert derive_child_keys(*args) != derive_child_keys(*args, SHARED)


def test_no_key_material_in_reprs() -> None:
    ike = derive_ike_keys(
        PrfId.HMAC_SHA2_256, (EncrId.AES_CBC, 128), IntegId.HMAC_SHA2_256_128, SHARED, NI, NR,
        SPI_I, SPI_R,
    )  # fmt: skip
    child = ChildKeys(b"\xaa" * 16, b"\xbb" * 32, b"\xcc" * 16, b"\xdd" * 32)
    assert repr(ike) == "IkeKeys()"
    assert repr(child) == "ChildKeys()"


def test_prf_plus_limit() -> None:
    prf = Prf(PrfId.HMAC_SHA1)
    assert len(prf.plus(b"k", b"s", 255 * 20)) == 255 * 20
    with pytest.raises(UnsupportedAlgorithm):
        prf.plus(b"k", b"s", 255 * 20 + 1)


def test_integrity_verify_rejects_wrong_icv() -> None:
    integ = Integrity(IntegId.HMAC_SHA2_256_128)
    icv = integ.sign(b"k" * 32, b"data")
    integ.verify(b"k" * 32, b"data", icv)
    for bad in (icv[:-1], icv[:-1] + bytes((icv[-1] ^ 1,)), b""):
        with pytest.raises(IntegrityError):
            integ.verify(b"k" * 32, b"data", bad)
