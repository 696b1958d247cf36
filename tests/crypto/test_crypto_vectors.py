"""Known-answer tests for core/crypto against published vectors (tests/vectors/crypto/*.txt).

Each vector file names the RFC (or NIST document) and section of every vector.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from core.crypto.cipher import IkeProtector
from core.crypto.dh import load_ecp_scalar, load_key_exchange
from core.crypto.keymat import (
    compute_rekey_skeyseed,
    compute_skeyseed,
    derive_child_keys,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
)
from core.crypto.prf import Integrity, Prf
from core.ike.constants import DhGroup, EncrId, IntegId, PrfId

VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors" / "crypto"

Vector = dict[str, str]


def load(name: str) -> dict[str, Vector]:
    """Parses a vector file: `[name]` blocks of `key = value` lines; `#` lines are comments."""
    blocks: dict[str, Vector] = {}
    current: Vector | None = None
    for line in (VECTOR_DIR / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = blocks[line.strip("[] ")] = {}
            continue
        assert current is not None, f"{name}: value outside a block: {line!r}"
        key, _, value = line.partition(" = ")
        current[key.strip()] = value
    return blocks


def hx(vector: Vector, key: str) -> bytes:
    return bytes.fromhex(vector[key].replace(" ", ""))


class FixedRandom:
    """A RandomSource that hands out the given bytes (an IV from a vector) and then fails."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def bytes(self, n: int) -> bytes:
        assert n <= len(self._data), "vector test asked for more randomness than given"
        out, self._data = self._data[:n], self._data[n:]
        return out

    def uniform(self, low: float, high: float) -> float:
        return low


# -- X25519 (RFC 7748) ---------------------------------------------------------------------
X25519 = load("x25519.txt")


@pytest.mark.parametrize("name", ["rfc7748-5.2-1", "rfc7748-5.2-2"])
def test_x25519_scalar_mult(name: str) -> None:
    vector = X25519[name]
    exchange = load_key_exchange(DhGroup.CURVE25519, hx(vector, "scalar"))
    assert exchange.shared_secret(hx(vector, "u")) == hx(vector, "output")


def test_x25519_iterated_1000() -> None:
    vector = X25519["rfc7748-5.2-iterated"]
    k = u = hx(vector, "start")
    for iteration in range(1, 1001):
        k, u = load_key_exchange(DhGroup.CURVE25519, k).shared_secret(u), k
        if iteration == 1:
            assert k == hx(vector, "after_1")
    assert k == hx(vector, "after_1000")


def test_x25519_diffie_hellman() -> None:
    vector = X25519["rfc7748-6.1"]
    alice = load_key_exchange(DhGroup.CURVE25519, hx(vector, "alice_private"))
    bob = load_key_exchange(DhGroup.CURVE25519, hx(vector, "bob_private"))
    assert alice.public_value == hx(vector, "alice_public")
    assert bob.public_value == hx(vector, "bob_public")
    assert alice.shared_secret(bob.public_value) == hx(vector, "shared")
    assert bob.shared_secret(alice.public_value) == hx(vector, "shared")


# -- ECP (RFC 5903) ------------------------------------------------------------------------
ECP = load("ecp.txt")


@pytest.mark.parametrize("name", sorted(ECP))
def test_ecp_ke_payload_and_shared_secret(name: str) -> None:
    vector = ECP[name]
    group = DhGroup(int(vector["group_text"]))
    initiator = load_ecp_scalar(group, int.from_bytes(hx(vector, "i"), "big"))
    responder = load_ecp_scalar(group, int.from_bytes(hx(vector, "r"), "big"))
    assert initiator.public_value == hx(vector, "gix") + hx(vector, "giy")
    assert responder.public_value == hx(vector, "grx") + hx(vector, "gry")
    assert initiator.shared_secret(responder.public_value) == hx(vector, "girx")
    assert responder.shared_secret(initiator.public_value) == hx(vector, "girx")


# -- AES-CBC (RFC 3602) through the SK payload protector -----------------------------------
AES_CBC = load("aes_cbc.txt")


@pytest.mark.parametrize("name", sorted(AES_CBC))
def test_aes_cbc_through_protector(name: str) -> None:
    vector = AES_CBC[name]
    plaintext = (
        vector["plaintext_text"].encode() if "plaintext_text" in vector else hx(vector, "plaintext")
    )
    protector = IkeProtector(
        EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, hx(vector, "key"), bytes(32)
    )
    sealed = protector.seal(b"header", plaintext, FixedRandom(hx(vector, "iv")))
    ciphertext = hx(vector, "ciphertext")
    # IV first; the RFC's ciphertext is a prefix (our padding block follows it: CBC chains).
    assert sealed[:16] == hx(vector, "iv")
    assert sealed[16 : 16 + len(ciphertext)] == ciphertext
    assert protector.open(b"header", sealed) == plaintext


# -- HMAC PRFs and integrity (RFC 4868, RFC 4231, RFC 2202) --------------------------------
HMAC = load("hmac.txt")


def _data(vector: Vector) -> bytes:
    return vector["data_text"].encode() if "data_text" in vector else hx(vector, "data")


@pytest.mark.parametrize("name", sorted(HMAC))
def test_prf_hmac(name: str) -> None:
    vector = HMAC[name]
    prf = Prf(PrfId[vector["prf"]])
    mac = prf.compute(hx(vector, "key"), _data(vector))
    assert mac == hx(vector, "mac")
    assert prf.output_size == len(mac)


@pytest.mark.parametrize("name", sorted(n for n in HMAC if "integ" in HMAC[n]))
def test_integrity_truncated(name: str) -> None:
    vector = HMAC[name]
    integ = Integrity(IntegId[vector["integ"]])
    assert integ.sign(hx(vector, "key"), _data(vector)) == hx(vector, "icv")
    integ.verify(hx(vector, "key"), _data(vector), hx(vector, "icv"))


# -- AEAD (RFC 7634, RFC 8439, GCM specification) through the protector --------------------
AEAD = load("aead.txt")


def test_chacha20_poly1305_ikev2_example_rfc7634() -> None:
    vector = AEAD["rfc7634-appendix-b"]
    protector = IkeProtector(
        EncrId.CHACHA20_POLY1305, None, None, hx(vector, "key") + hx(vector, "salt")
    )
    payloads, aad = hx(vector, "payloads"), hx(vector, "aad")
    sealed = protector.seal(aad, payloads, FixedRandom(hx(vector, "iv")))
    assert sealed == hx(vector, "iv") + hx(vector, "ciphertext") + hx(vector, "tag")
    # The SK payload length in the AAD (0x29) is its 4-byte header plus the sealed body.
    assert protector.sealed_length(len(payloads)) == len(sealed) == aad[-2] * 256 + aad[-1] - 4
    assert protector.open(aad, sealed) == payloads


@pytest.mark.parametrize(
    ("name", "encr_id", "key_bits"),
    [
        ("rfc8439-2.8.2", EncrId.CHACHA20_POLY1305, None),
        ("gcm-spec-case4", EncrId.AES_GCM_16, 128),
        ("gcm-spec-case16", EncrId.AES_GCM_16, 256),
    ],
)
def test_aead_open_vector(name: str, encr_id: EncrId, key_bits: int | None) -> None:
    """nonce = salt || IV: the vector's first 4 nonce bytes play the salt, the rest the IV.

    The decrypted data ends in whatever byte the vector has, which the protector reads as
    the Pad Length (RFC 7296 3.14), so it returns the data before that padding."""
    vector = AEAD[name]
    nonce = hx(vector, "nonce")
    plaintext = (
        vector["plaintext_text"].encode() if "plaintext_text" in vector else hx(vector, "plaintext")
    )
    protector = IkeProtector(encr_id, key_bits, None, hx(vector, "key") + nonce[:4])
    body = nonce[4:] + hx(vector, "ciphertext") + hx(vector, "tag")
    pad_length = plaintext[-1]
    assert protector.open(hx(vector, "aad"), body) == plaintext[: -pad_length - 1]


# -- IKEv2 KDF (NIST SP 800-135 CAVS) ------------------------------------------------------
KDF = load("ikev2_kdf.txt")["cavs-ikev2-sha1-0"]


def test_cavs_skeyseed_and_dkm() -> None:
    ni, nr, spii, spir = (hx(KDF, k) for k in ("ni", "nr", "spii", "spir"))
    assert compute_skeyseed(PrfId.HMAC_SHA1, hx(KDF, "gir"), ni, nr) == hx(KDF, "skeyseed")
    dkm = hx(KDF, "dkm")
    assert Prf(PrfId.HMAC_SHA1).plus(hx(KDF, "skeyseed"), ni + nr + spii + spir, len(dkm)) == dkm
    # AES-CBC-128 with HMAC-SHA1-96 and PRF-HMAC-SHA1 needs exactly the 132 bytes of DKM.
    keys = derive_ike_keys(
        PrfId.HMAC_SHA1, (EncrId.AES_CBC, 128), IntegId.HMAC_SHA1_96, hx(KDF, "gir"),
        ni, nr, spii, spir,
    )  # fmt: skip
    parts = (keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)
    assert [len(p) for p in parts] == [20, 20, 20, 16, 16, 20, 20]
    assert b"".join(parts) == dkm


def test_cavs_child_sa_keymat() -> None:
    ni, nr = hx(KDF, "ni"), hx(KDF, "nr")
    sk_d = hx(KDF, "dkm")[:20]
    encr, integ = (EncrId.AES_CBC, 256), IntegId.HMAC_SHA2_256_128
    plain = derive_child_keys(PrfId.HMAC_SHA1, sk_d, encr, integ, ni, nr)
    joined = plain.encr_i + plain.integ_i + plain.encr_r + plain.integ_r
    assert joined == hx(KDF, "dkm_child")[: len(joined)] and len(joined) == 128
    pfs = derive_child_keys(PrfId.HMAC_SHA1, sk_d, encr, integ, ni, nr, hx(KDF, "gir_new"))
    joined = pfs.encr_i + pfs.integ_i + pfs.encr_r + pfs.integ_r
    assert joined == hx(KDF, "dkm_child_dh")[:128]


def test_cavs_rekey_skeyseed() -> None:
    ni, nr, spii, spir = (hx(KDF, k) for k in ("ni", "nr", "spii", "spir"))
    sk_d = hx(KDF, "dkm")[:20]
    rekey_seed = compute_rekey_skeyseed(PrfId.HMAC_SHA1, sk_d, hx(KDF, "gir_new"), ni, nr)
    assert rekey_seed == hx(KDF, "skeyseed_rekey")
    keys = derive_rekeyed_ike_keys(
        PrfId.HMAC_SHA1, sk_d, PrfId.HMAC_SHA1, (EncrId.AES_GCM_16, 128), None,
        hx(KDF, "gir_new"), ni, nr, spii, spir,
    )  # fmt: skip
    expected = Prf(PrfId.HMAC_SHA1).plus(rekey_seed, ni + nr + spii + spir, 20)
    assert keys.sk_d == expected


def test_prf_plus_against_the_rfc_formula() -> None:
    """prf+ written out from RFC 7296 2.13 with the standard library's HMAC (hand-checked:
    T1 = prf(K, S | 0x01), T2 = prf(K, T1 | S | 0x02), T3 = prf(K, T2 | S | 0x03))."""
    key, seed = bytes(range(40)), b"seed material"

    def prf(data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha256).digest()

    t1 = prf(seed + b"\x01")
    t2 = prf(t1 + seed + b"\x02")
    t3 = prf(t2 + seed + b"\x03")
    assert Prf(PrfId.HMAC_SHA2_256).plus(key, seed, 80) == (t1 + t2 + t3)[:80]
    assert Prf(PrfId.HMAC_SHA2_256).plus(key, seed, 32) == t1
