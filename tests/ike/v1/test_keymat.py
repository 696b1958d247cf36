"""Known answers for IKEv1 key derivation (core/crypto/ikev1.py) and its expansion rules.

Vectors: tests/ike/v1/vectors/ikev1_psk.txt (recorded handshakes, source named there).
The expansion tests recompute RFC 2409 appendix B and section 5.5 with the standard
library's HMAC, step by step as the RFC writes them.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from core.crypto.ikev1 import (
    CbcCipher,
    Ikev1Prf,
    derive_phase1_keys,
    encryption_key,
    initial_iv,
    phase2_iv,
    quick_mode_keymat,
    skeyid_psk,
)
from core.crypto.registry import UnsupportedAlgorithm
from core.ike.v1.constants import HashAlg, Phase1Encr

VECTORS = Path(__file__).resolve().parent / "vectors" / "ikev1_psk.txt"


def _load() -> dict[str, dict[str, bytes]]:
    blocks: dict[str, dict[str, bytes]] = {}
    current: dict[str, bytes] = {}
    for line in VECTORS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = blocks[line.strip("[] ")] = {}
            continue
        key, _, value = line.partition("=")
        current[key.strip()] = bytes.fromhex(value.strip())
    return blocks


CASES = _load()


@pytest.mark.parametrize("name", sorted(CASES))
def test_phase1_keys_match_the_recorded_handshake(name: str) -> None:
    v = CASES[name]
    prf = Ikev1Prf(HashAlg.SHA1)
    skeyid = skeyid_psk(prf, v["psk"], v["ni"], v["nr"])
    keys = derive_phase1_keys(prf, skeyid, v["gxy"], v["cky_i"], v["cky_r"])
    assert keys.skeyid == v["skeyid"]
    assert keys.skeyid_d == v["skeyid_d"]
    assert keys.skeyid_a == v["skeyid_a"]
    assert keys.skeyid_e == v["skeyid_e"]
    assert encryption_key(prf, keys.skeyid_e, 16) == v["ka"]
    iv0 = initial_iv(prf, v["gxi"], v["gxr"], 16)
    assert iv0 == v["iv0"]
    hash_r = prf.prf(skeyid, v["gxr"], v["gxi"], v["cky_r"], v["cky_i"], v["sai_b"],
                     v["idir_b"])
    assert hash_r == v["hash_r"]
    if "mid" in v:
        assert phase2_iv(prf, iv0, int.from_bytes(v["mid"], "big"), 16) == v["iv_mid"]


def test_keys_repr_hides_them() -> None:
    v = CASES["rubnds-1"]
    prf = Ikev1Prf(HashAlg.SHA1)
    keys = derive_phase1_keys(prf, v["skeyid"], v["gxy"], v["cky_i"], v["cky_r"])
    assert v["skeyid"].hex() not in repr(keys) and "skeyid_e" not in repr(keys)


def test_encryption_key_expands_a_short_skeyid_e() -> None:
    """AES-256 with SHA-1: SKEYID_e has 20 bytes, the key needs 32 (appendix B)."""
    prf = Ikev1Prf(HashAlg.SHA1)
    skeyid_e = bytes(range(20))
    k1 = hmac.new(skeyid_e, b"\x00", hashlib.sha1).digest()
    k2 = hmac.new(skeyid_e, k1, hashlib.sha1).digest()
    assert encryption_key(prf, skeyid_e, 32) == (k1 + k2)[:32]
    # Long enough: its own first bytes, no expansion.
    assert encryption_key(Ikev1Prf(HashAlg.SHA2_256), bytes(32), 32) == bytes(32)


@pytest.mark.parametrize("shared", [None, b"\x42" * 32])
def test_quick_mode_keymat_follows_rfc2409_5_5(shared: bytes | None) -> None:
    prf = Ikev1Prf(HashAlg.SHA2_256)
    skeyid_d, ni, nr, spi = b"d" * 32, b"i" * 16, b"r" * 16, 0x12345678
    seed = (shared or b"") + b"\x03" + spi.to_bytes(4, "big") + ni + nr
    k1 = hmac.new(skeyid_d, seed, hashlib.sha256).digest()
    k2 = hmac.new(skeyid_d, k1 + seed, hashlib.sha256).digest()
    k3 = hmac.new(skeyid_d, k2 + seed, hashlib.sha256).digest()
    got = quick_mode_keymat(prf, skeyid_d, 3, spi, ni, nr, 80, shared)
    assert got == (k1 + k2 + k3)[:80]


@pytest.mark.parametrize(("alg", "size"), [(HashAlg.SHA1, 20), (HashAlg.SHA2_256, 32),
                                           (HashAlg.SHA2_384, 48), (HashAlg.SHA2_512, 64)])
def test_prf_is_hmac_of_the_negotiated_hash(alg: HashAlg, size: int) -> None:
    prf = Ikev1Prf(alg)
    name = {20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}[size]
    assert prf.output_size == size
    assert prf.prf(b"key", b"a", b"b") == hmac.new(b"key", b"ab", name).digest()
    assert prf.hash(b"a", b"b") == hashlib.new(name, b"ab").digest()


def test_unsupported_hash_and_cipher_are_refused() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        Ikev1Prf(HashAlg.MD5)
    with pytest.raises(UnsupportedAlgorithm):
        CbcCipher(Phase1Encr.DES3_CBC, bytes(24))
    with pytest.raises(UnsupportedAlgorithm):
        CbcCipher(Phase1Encr.AES_CBC, bytes(20))


def test_cbc_round_trip_and_chaining() -> None:
    cipher = CbcCipher(Phase1Encr.AES_CBC, bytes(range(32)))
    iv, plain = bytes(16), bytes(range(48))
    sealed = cipher.encrypt(iv, plain)
    assert len(sealed) == 48 and cipher.decrypt(iv, sealed) == plain
    # CBC: the second half decrypts with the first half's last block as its IV.
    assert cipher.decrypt(sealed[:16], sealed[16:]) == plain[16:]
