"""Algorithm sizes (from their RFCs), keying material lengths, names, and randomness sources."""

from __future__ import annotations

import pytest

from core.crypto.random import SeededRandomSource, SystemRandomSource
from core.crypto.registry import (
    UnsupportedAlgorithm,
    child_keymat_length,
    dh_info,
    dh_name,
    encr_info,
    encr_key_bits,
    encr_keymat_size,
    encr_name,
    esn_name,
    ike_keymat_length,
    integ_info,
    integ_keymat_size,
    integ_name,
    is_aead,
    is_supported_encr,
    prf_info,
    prf_name,
)
from core.errors import UsageError
from core.ike.constants import DhGroup, EncrId, EsnId, IntegId, PrfId


@pytest.mark.parametrize(
    ("integ", "key_size", "icv_size"),
    # RFC 4868 section 2.1.1 and RFC 2404.
    [
        (IntegId.HMAC_SHA1_96, 20, 12),
        (IntegId.HMAC_SHA2_256_128, 32, 16),
        (IntegId.HMAC_SHA2_384_192, 48, 24),
        (IntegId.HMAC_SHA2_512_256, 64, 32),
    ],
)
def test_integrity_sizes(integ: IntegId, key_size: int, icv_size: int) -> None:
    info = integ_info(integ)
    assert (info.key_size, info.icv_size) == (key_size, icv_size)
    assert integ_keymat_size(integ) == key_size


@pytest.mark.parametrize(
    ("prf", "size"),
    [(PrfId.HMAC_SHA1, 20), (PrfId.HMAC_SHA2_256, 32), (PrfId.HMAC_SHA2_384, 48),
     (PrfId.HMAC_SHA2_512, 64)],
)  # fmt: skip
def test_prf_sizes(prf: PrfId, size: int) -> None:
    info = prf_info(prf)
    assert (info.output_size, info.key_size) == (size, size)


@pytest.mark.parametrize(
    ("encr", "bits", "keymat", "iv", "icv", "block"),
    [
        (EncrId.AES_CBC, 128, 16, 16, 0, 16),  # RFC 3602
        (EncrId.AES_CBC, 256, 32, 16, 0, 16),
        (EncrId.AES_GCM_16, 128, 20, 8, 16, 1),  # RFC 5282 / 4106: key + 4-byte salt
        (EncrId.AES_GCM_16, 256, 36, 8, 16, 1),
        (EncrId.CHACHA20_POLY1305, None, 36, 8, 16, 1),  # RFC 7634
    ],
)
def test_encryption_sizes(
    encr: EncrId, bits: int | None, keymat: int, iv: int, icv: int, block: int
) -> None:
    info = encr_info(encr)
    assert encr_keymat_size(encr, bits) == keymat
    assert (info.iv_size, info.icv_size, info.block_size) == (iv, icv, block)
    assert is_aead(encr) == (icv > 0)


@pytest.mark.parametrize(
    ("group", "public", "shared"),
    [(DhGroup.MODP_2048, 256, 256), (DhGroup.MODP_3072, 384, 384), (DhGroup.MODP_4096, 512, 512),
     (DhGroup.ECP_256, 64, 32), (DhGroup.ECP_384, 96, 48), (DhGroup.ECP_521, 132, 66),
     (DhGroup.CURVE25519, 32, 32)],
)  # fmt: skip
def test_key_exchange_sizes(group: DhGroup, public: int, shared: int) -> None:
    info = dh_info(group)
    assert (info.public_size, info.shared_size) == (public, shared)


def test_key_lengths() -> None:
    assert is_supported_encr(EncrId.AES_GCM_16, 192)
    assert not is_supported_encr(EncrId.AES_GCM_16, None)
    assert not is_supported_encr(EncrId.CHACHA20_POLY1305, 256)
    assert is_supported_encr(EncrId.CHACHA20_POLY1305, None)
    assert not is_supported_encr(EncrId.DES3, None)
    assert not is_supported_encr(9999, 128)
    assert encr_key_bits(EncrId.CHACHA20_POLY1305, None) == 256
    with pytest.raises(UnsupportedAlgorithm):
        encr_key_bits(EncrId.AES_CBC, 100)


def test_keymat_lengths() -> None:
    # 3 PRF-sized keys, two integrity keys, two encryption keys with salt.
    assert ike_keymat_length(PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None) == 96 + 72
    assert (
        ike_keymat_length(PrfId.HMAC_SHA1, EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96)
        == 60 + 40 + 32
    )
    assert child_keymat_length(EncrId.AES_GCM_16, 128, None) == 40
    assert child_keymat_length(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256) == 2 * (32 + 64)
    assert child_keymat_length(EncrId.AES_CBC, 128, IntegId.NONE) == 32


@pytest.mark.parametrize(
    "call",
    [lambda: encr_info(EncrId.DES3), lambda: prf_info(PrfId.AES128_XCBC),
     lambda: integ_info(IntegId.AES_XCBC_96), lambda: dh_info(DhGroup.MODP_1536),
     lambda: encr_info(4242)],
)  # fmt: skip
def test_unsupported_lookups(call: object) -> None:
    assert callable(call)
    with pytest.raises(UnsupportedAlgorithm) as caught:
        call()
    assert isinstance(caught.value, UsageError)


def test_names() -> None:
    assert encr_name(EncrId.AES_GCM_16, 256) == "AES_GCM_16_256"
    assert encr_name(EncrId.AES_CBC, 128) == "AES_CBC_128"
    assert encr_name(EncrId.CHACHA20_POLY1305, None) == "CHACHA20_POLY1305"
    assert encr_name(EncrId.DES3) == "DES3"
    assert encr_name(4242) == "4242"
    assert integ_name(IntegId.HMAC_SHA2_256_128) == "HMAC_SHA2_256_128"
    assert prf_name(PrfId.HMAC_SHA2_384) == "PRF_HMAC_SHA2_384"
    assert prf_name(PrfId.AES128_XCBC) == "PRF_AES128_XCBC"
    assert dh_name(DhGroup.CURVE25519) == "CURVE_25519"
    assert dh_name(DhGroup.ECP_521) == "ECP_521"
    assert dh_name(77) == "77"
    assert esn_name(EsnId.ESN) == "EXT_SEQ"
    assert esn_name(EsnId.NO_ESN) == "NO_EXT_SEQ"


def test_seeded_random_is_deterministic() -> None:
    first, second = SeededRandomSource(42), SeededRandomSource(42)
    assert first.bytes(16) == second.bytes(16)
    assert first.uniform(1.0, 2.0) == second.uniform(1.0, 2.0)
    assert SeededRandomSource(43).bytes(16) != SeededRandomSource(42).bytes(16)


def test_system_random() -> None:
    rng = SystemRandomSource()
    assert len(rng.bytes(0)) == 0
    assert len(rng.bytes(33)) == 33
    assert rng.bytes(16) != rng.bytes(16)
    values = [rng.uniform(0.9, 1.1) for _ in range(200)]
    assert all(0.9 <= v <= 1.1 for v in values)
    assert len(set(values)) > 150
