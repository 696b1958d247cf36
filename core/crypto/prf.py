"""The IKEv2 PRF with prf+ (RFC 7296 section 2.13) and the truncated HMAC integrity check.

HMAC PRFs: RFC 2104 with SHA-1 (RFC 7296 3.3.2) and SHA-2 (RFC 4868 section 2.1.2).
Integrity: HMAC-SHA1-96 (RFC 2404) and HMAC-SHA-256-128 / -384-192 / -512-256 (RFC 4868
section 2.1.1): the HMAC output truncated to its left-most bits.
"""

from __future__ import annotations

import hmac as _stdlib_hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC

from core.crypto.registry import UnsupportedAlgorithm, integ_info, prf_info
from core.errors import IntegrityError
from core.ike.constants import IntegId, PrfId

# RFC 7296 2.13: prf+ may produce at most 255 blocks (the counter is one octet).
_MAX_PRF_PLUS_BLOCKS = 255


class Prf:
    """An HMAC-based IKEv2 PRF."""

    __slots__ = ("_hash", "key_size", "output_size", "prf_id")

    def __init__(self, prf_id: PrfId) -> None:
        info = prf_info(prf_id)
        self.prf_id = info.prf_id
        self.output_size = info.output_size
        self.key_size = info.key_size
        self._hash: hashes.HashAlgorithm = info.hash_algorithm

    def compute(self, key: bytes, data: bytes) -> bytes:
        """prf(key, data)."""
        mac = HMAC(key, self._hash)
        mac.update(data)
        return mac.finalize()

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+(key, seed) truncated to `length` bytes (RFC 7296 2.13).

        T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); the output is T1 | T2 | ...
        """
        blocks = -(-length // self.output_size)
        if blocks > _MAX_PRF_PLUS_BLOCKS:
            raise UnsupportedAlgorithm(f"prf+ cannot produce {length} bytes")
        keyed = HMAC(key, self._hash)  # copied per block: the key schedule is done once
        output = bytearray()
        previous = b""
        for counter in range(1, blocks + 1):
            mac = keyed.copy()
            mac.update(previous + seed + bytes((counter,)))
            previous = mac.finalize()
            output += previous
        return bytes(output[:length])

    def __repr__(self) -> str:
        return f"Prf({self.prf_id.name})"


class Integrity:
    """An HMAC integrity transform with its truncated ICV."""

    __slots__ = ("_hash", "icv_size", "integ_id", "key_size")

    def __init__(self, integ_id: IntegId) -> None:
        info = integ_info(integ_id)
        self.integ_id = info.integ_id
        self.key_size = info.key_size
        self.icv_size = info.icv_size
        self._hash: hashes.HashAlgorithm = info.hash_algorithm

    def keyed(self, key: bytes) -> HMAC:
        """An HMAC context with `key` set up, to copy per message (see `sign_with`)."""
        return HMAC(key, self._hash)

    def sign_with(self, keyed: HMAC, *parts: bytes) -> bytes:
        """The truncated ICV over the concatenated `parts`, from a context made by `keyed`."""
        mac = keyed.copy()
        for part in parts:
            mac.update(part)
        return mac.finalize()[: self.icv_size]

    def sign(self, key: bytes, data: bytes) -> bytes:
        """The truncated ICV of `data`."""
        return self.sign_with(self.keyed(key), data)

    def verify(self, key: bytes, data: bytes, icv: bytes) -> None:
        """Raises `IntegrityError` unless `icv` is the truncated ICV of `data`."""
        if not _stdlib_hmac.compare_digest(self.sign(key, data), icv):
            raise IntegrityError(f"{self.integ_id.name} ICV mismatch")

    def __repr__(self) -> str:
        return f"Integrity({self.integ_id.name})"
