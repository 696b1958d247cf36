"""IKEv1 key derivation and phase 1/2 encryption (RFC 2409 sections 5, 5.5 and appendix B).

Only HMAC PRFs are supported (no PRF attribute): prf(key, data) = HMAC-<hash>(key, data)
with the negotiated hash (RFC 2409 section 4).  With pre-shared keys:

    SKEYID   = prf(pre-shared-key, Ni_b | Nr_b)
    SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
    SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
    SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)

The encryption key is the start of SKEYID_e, or of K1 | K2 | ... with K1 = prf(SKEYID_e,
0) and Kn = prf(SKEYID_e, Kn-1) when SKEYID_e is too short (appendix B).  The first phase
1 IV is hash(g^xi | g^xr); each later message uses the last cipher block of the previous
one; a phase 2 or informational exchange starts from hash(last phase 1 IV | M-ID).
Quick mode KEYMAT (5.5) is prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
extended as K1 | K2 | ... with Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI |
Ni_b | Nr_b).  Messages are padded with zero bytes to the cipher block (appendix B).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC

from core.crypto.registry import UnsupportedAlgorithm
from core.ike.v1.constants import HashAlg, Phase1Encr

_HASHES: dict[HashAlg, type[hashes.HashAlgorithm]] = {
    HashAlg.SHA1: hashes.SHA1,
    HashAlg.SHA2_256: hashes.SHA256,
    HashAlg.SHA2_384: hashes.SHA384,
    HashAlg.SHA2_512: hashes.SHA512,
}

SUPPORTED_HASHES = frozenset(_HASHES)
SUPPORTED_PHASE1_ENCR = frozenset({Phase1Encr.AES_CBC})
AES_KEY_BITS = (128, 192, 256)


class Ikev1Prf:
    """The negotiated hash as a PRF (HMAC) and as a plain hash (IVs, NAT-D)."""

    __slots__ = ("_algorithm", "hash_alg", "output_size")

    def __init__(self, hash_alg: HashAlg) -> None:
        algorithm = _HASHES.get(hash_alg)
        if algorithm is None:
            raise UnsupportedAlgorithm(f"unsupported IKEv1 hash algorithm {int(hash_alg)}")
        self.hash_alg = hash_alg
        self._algorithm = algorithm
        self.output_size: int = algorithm().digest_size

    def prf(self, key: bytes, *parts: bytes) -> bytes:
        mac = HMAC(key, self._algorithm())
        for part in parts:
            mac.update(part)
        return mac.finalize()

    def hash(self, *parts: bytes) -> bytes:
        digest = hashes.Hash(self._algorithm())
        for part in parts:
            digest.update(part)
        return digest.finalize()

    def __repr__(self) -> str:
        return f"Ikev1Prf({self.hash_alg.name})"


@dataclass(frozen=True)
class Phase1Keys:
    """SKEYID and its three children; the repr shows no key."""

    skeyid: bytes = field(repr=False)
    skeyid_d: bytes = field(repr=False)
    skeyid_a: bytes = field(repr=False)
    skeyid_e: bytes = field(repr=False)


def skeyid_psk(prf: Ikev1Prf, psk: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYID for pre-shared key authentication (RFC 2409 5)."""
    return prf.prf(psk, ni, nr)


def derive_phase1_keys(prf: Ikev1Prf, skeyid: bytes, shared: bytes, cky_i: bytes,
                       cky_r: bytes) -> Phase1Keys:
    skeyid_d = prf.prf(skeyid, shared, cky_i, cky_r, b"\x00")
    skeyid_a = prf.prf(skeyid, skeyid_d, shared, cky_i, cky_r, b"\x01")
    skeyid_e = prf.prf(skeyid, skeyid_a, shared, cky_i, cky_r, b"\x02")
    return Phase1Keys(skeyid, skeyid_d, skeyid_a, skeyid_e)


def encryption_key(prf: Ikev1Prf, skeyid_e: bytes, length: int) -> bytes:
    """The phase 1 cipher key: SKEYID_e, expanded per appendix B when too short."""
    if len(skeyid_e) >= length:
        return skeyid_e[:length]
    material = bytearray()
    block = prf.prf(skeyid_e, b"\x00")
    while True:
        material += block
        if len(material) >= length:
            return bytes(material[:length])
        block = prf.prf(skeyid_e, block)


def initial_iv(prf: Ikev1Prf, gxi: bytes, gxr: bytes, block_size: int) -> bytes:
    return prf.hash(gxi, gxr)[:block_size]


def phase2_iv(prf: Ikev1Prf, phase1_iv: bytes, message_id: int, block_size: int) -> bytes:
    return prf.hash(phase1_iv, message_id.to_bytes(4, "big"))[:block_size]


def quick_mode_keymat(prf: Ikev1Prf, skeyid_d: bytes, protocol: int, spi: int, ni: bytes,
                      nr: bytes, length: int, shared: bytes | None = None) -> bytes:
    """KEYMAT for the SA whose SPI is `spi` (the SPI its receiver chose), RFC 2409 5.5."""
    seed = (shared or b"") + bytes((protocol,)) + spi.to_bytes(4, "big") + ni + nr
    material = bytearray()
    previous = b""
    while len(material) < length:
        previous = prf.prf(skeyid_d, previous, seed)
        material += previous
    return bytes(material[:length])


class CbcCipher:
    """AES-CBC over whole blocks for ISAKMP message bodies (no padding of its own)."""

    __slots__ = ("_algorithm", "block_size", "key_size")

    def __init__(self, encr: Phase1Encr, key: bytes) -> None:
        if encr != Phase1Encr.AES_CBC or len(key) * 8 not in AES_KEY_BITS:
            raise UnsupportedAlgorithm(f"unsupported IKEv1 cipher {int(encr)} "
                                       f"with a {len(key) * 8}-bit key")
        self._algorithm = algorithms.AES(key)
        self.block_size = 16
        self.key_size = len(key)

    def encrypt(self, iv: bytes, plaintext: bytes) -> bytes:
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize()

    def decrypt(self, iv: bytes, ciphertext: bytes) -> bytes:
        decryptor = Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()

    def __repr__(self) -> str:
        return f"CbcCipher(AES_CBC_{self.key_size * 8})"
