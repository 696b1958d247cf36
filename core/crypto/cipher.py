"""The Encrypted (SK) payload's protection: IV || ciphertext || ICV (RFC 7296 section 3.14).

AEAD (RFC 5282 for AES-GCM, RFC 7634 for ChaCha20-Poly1305): nonce = salt (4 bytes, the
end of the key material) || IV (8 bytes, sent); the associated data is the IKE header and
the SK payload header, with their final lengths (RFC 5282 section 5.1).  The 16-byte tag is
the ICV.

CBC (RFC 3602 for AES): a random 16-byte IV, the plaintext padded to the block size, and
the ICV = the truncated HMAC over everything from the IKE header to the ciphertext's end.

In both the plaintext is the payload chain, padding (zero bytes; none for AEAD) and one
Pad Length octet.
"""

from __future__ import annotations

import hmac as _stdlib_hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from core.crypto.keymat import EncrChoice, IkeKeys
from core.crypto.prf import Integrity
from core.crypto.random import RandomSource
from core.crypto.registry import UnsupportedAlgorithm, encr_info, encr_key_bits
from core.errors import DecodeError, IntegrityError
from core.ike.constants import EncrId, IntegId


class EncryptedPayloadError(DecodeError):
    """The SK payload body is too short, misaligned or has a bad Pad Length."""


class IkeProtector:
    """Seals and opens SK payload bodies for one direction of one IKE SA."""

    def __init__(
        self,
        encr_id: EncrId,
        key_bits: int | None,
        integ_id: IntegId | None,
        encr_key: bytes,
        integ_key: bytes = b"",
    ) -> None:
        info = encr_info(encr_id)
        key_size = encr_key_bits(encr_id, key_bits) // 8
        if len(encr_key) != key_size + info.salt_size:
            raise UnsupportedAlgorithm(
                f"{info.name} needs {key_size + info.salt_size} bytes of key, got {len(encr_key)}"
            )
        self.encr_id = info.encr_id
        self.is_aead = info.is_aead
        self._iv_size = info.iv_size
        self._block_size = info.block_size
        self._key = encr_key[:key_size]
        self._salt = encr_key[key_size:]
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        self._integ: Integrity | None = None
        if info.is_aead:
            if integ_id not in (None, IntegId.NONE):
                raise UnsupportedAlgorithm(f"{info.name} takes no integrity algorithm")
            self._aead = (
                ChaCha20Poly1305(self._key)
                if encr_id == EncrId.CHACHA20_POLY1305
                else AESGCM(self._key)
            )
            self._icv_size = info.icv_size
        else:
            if integ_id is None or integ_id == IntegId.NONE:
                raise UnsupportedAlgorithm(f"{info.name} needs an integrity algorithm")
            self._integ = Integrity(integ_id)
            if len(integ_key) != self._integ.key_size:
                raise UnsupportedAlgorithm(
                    f"{self._integ.integ_id.name} needs a {self._integ.key_size}-byte key"
                )
            self._keyed_mac = self._integ.keyed(integ_key)
            self._icv_size = self._integ.icv_size

    def __repr__(self) -> str:
        return f"<IkeProtector {self.encr_id.name}>"

    @property
    def overhead_min(self) -> int:
        """The smallest number of bytes sealing adds (IV, ICV, pad length, no padding)."""
        return self._iv_size + 1 + self._icv_size

    def sealed_length(self, plaintext_len: int) -> int:
        """Length of IV || ciphertext || ICV for a payload chain of `plaintext_len` bytes."""
        return self._iv_size + self._padded_length(plaintext_len) + self._icv_size

    def _padded_length(self, plaintext_len: int) -> int:
        block = self._block_size
        return -(-(plaintext_len + 1) // block) * block

    def seal(self, associated: bytes, plaintext: bytes, rng: RandomSource) -> bytes:
        """IV || ciphertext || ICV.  `associated` is the IKE header and SK payload header."""
        pad_len = self._padded_length(len(plaintext)) - len(plaintext) - 1
        padded = plaintext + bytes(pad_len) + bytes((pad_len,))
        iv = rng.bytes(self._iv_size)
        if self._aead is not None:
            return iv + self._aead.encrypt(self._salt + iv, padded, associated)
        encryptor = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        body = iv + encryptor.update(padded) + encryptor.finalize()
        assert self._integ is not None
        return body + self._integ.sign_with(self._keyed_mac, associated, body)

    def open(self, associated: bytes, body: bytes) -> bytes:
        """The payload chain from IV || ciphertext || ICV; raises `IntegrityError` if the ICV
        fails and `EncryptedPayloadError` (a `DecodeError`) if the body is malformed."""
        iv_size, icv_size = self._iv_size, self._icv_size
        cipher_len = len(body) - iv_size - icv_size
        if cipher_len < max(1, self._block_size) or cipher_len % self._block_size:
            raise EncryptedPayloadError(
                f"SK payload body of {len(body)} bytes does not fit {self.encr_id.name}"
            )
        iv = body[:iv_size]
        if self._aead is not None:
            try:
                padded = self._aead.decrypt(self._salt + iv, body[iv_size:], associated)
            except InvalidTag:
                raise IntegrityError(f"{self.encr_id.name} ICV mismatch") from None
        else:
            assert self._integ is not None
            icv = self._integ.sign_with(self._keyed_mac, associated, body[:-icv_size])
            if not _stdlib_hmac.compare_digest(icv, body[-icv_size:]):
                raise IntegrityError(f"{self._integ.integ_id.name} ICV mismatch")
            decryptor = Cipher(algorithms.AES(self._key), modes.CBC(iv)).decryptor()
            padded = decryptor.update(body[iv_size:-icv_size]) + decryptor.finalize()
        pad_len = padded[-1]
        if pad_len + 1 > len(padded):
            raise EncryptedPayloadError(f"Pad Length {pad_len} exceeds the decrypted data")
        return padded[: len(padded) - pad_len - 1]


def create_ike_protectors(
    encr: EncrChoice, integ_id: IntegId | None, keys: IkeKeys, is_initiator: bool
) -> tuple[IkeProtector, IkeProtector]:
    """(outbound, inbound) protectors: the initiator sends with SK_ei/SK_ai and receives with
    SK_er/SK_ar (RFC 7296 2.14); the responder the other way round."""
    initiator_side = IkeProtector(encr[0], encr[1], integ_id, keys.sk_ei, keys.sk_ai)
    responder_side = IkeProtector(encr[0], encr[1], integ_id, keys.sk_er, keys.sk_ar)
    if is_initiator:
        return initiator_side, responder_side
    return responder_side, initiator_side
