"""Key exchange for the KE payload: MODP (RFC 3526), ECP (RFC 5903), Curve25519 (RFC 8031).

Private values come from the caller's `RandomSource`, so fixed randomness gives fixed keys
in tests; the arithmetic is `cryptography`'s.  Wire formats (RFC 7296 3.4):
- MODP: g^x big-endian, zero-padded to the length of the prime; g^xy likewise.
- ECP: x || y, each zero-padded to the field size (RFC 5903 section 7); the shared secret
  is the x coordinate of the product only (RFC 5903 section 7).
- Curve25519: the raw 32-byte u-coordinate (RFC 8031 section 2); an all-zero shared
  secret is rejected (RFC 8031 section 2.3, RFC 7748 section 6.1).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives.asymmetric import dh, ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from core.crypto.random import RandomSource
from core.crypto.registry import UnsupportedAlgorithm, dh_info
from core.errors import DecodeError
from core.ike.constants import DhGroup


class InvalidKeyExchange(DecodeError):
    """The peer's key exchange data is malformed or not a valid group element."""


class KeyExchange(ABC):
    """One side of a Diffie-Hellman exchange: our public value and the shared secret."""

    group: DhGroup
    public_value: bytes

    @abstractmethod
    def shared_secret(self, peer_value: bytes) -> bytes:
        """g^ir from the peer's KE payload data; raises `InvalidKeyExchange` if it is bad."""

    def __repr__(self) -> str:  # never show the private value
        return f"<{type(self).__name__} {self.group.name}>"


# -- MODP groups ---------------------------------------------------------------------------
# RFC 3526 section 3 (group 14, 2048-bit), section 4 (group 15, 3072-bit), section 5
# (group 16, 4096-bit); generator 2.  Each prime is 2^s - 2^(s-64) - 1 + 2^64 * ([2^(s-130)
# pi] + offset); tests/crypto/test_dh.py recomputes them from that formula.
_RFC3526_PREFIX = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8A"
)
_RFC3526_3072_TAIL = (
    "AAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A9"
)
MODP_PRIMES: dict[DhGroup, int] = {
    DhGroup.MODP_2048: int(_RFC3526_PREFIX + "ACAA68FFFFFFFFFFFFFFFF", 16),
    DhGroup.MODP_3072: int(_RFC3526_PREFIX + _RFC3526_3072_TAIL + "3AD2CAFFFFFFFFFFFFFFFF", 16),
    DhGroup.MODP_4096: int(
        _RFC3526_PREFIX
        + _RFC3526_3072_TAIL
        + "2108011A723C12A787E6D7"
        + "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
        + "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
        + "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
        + "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
        16,
    ),
}
MODP_GENERATOR = 2

# Private exponent sizes: the low end of RFC 3526 section 8's ranges (220, 260, 300 bits),
# rounded up to whole bytes; each is at least twice the group's security strength.
_MODP_EXPONENT_BYTES: dict[DhGroup, int] = {
    DhGroup.MODP_2048: 28,
    DhGroup.MODP_3072: 33,
    DhGroup.MODP_4096: 38,
}


class _ModpGroup:
    """The cached parameter objects of one MODP group."""

    def __init__(self, group: DhGroup) -> None:
        self.group = group
        self.prime = MODP_PRIMES[group]
        self.size = dh_info(group).public_size
        self.exponent_bytes = _MODP_EXPONENT_BYTES[group]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            self.parameter_numbers = dh.DHParameterNumbers(self.prime, MODP_GENERATOR)
            # Our own public value is computed as an exchange with the generator.
            self.generator_key = dh.DHPublicNumbers(
                MODP_GENERATOR, self.parameter_numbers
            ).public_key()

    def private_key(self, exponent: int) -> dh.DHPrivateKey:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            # The public number is not checked against x; the real one is computed below.
            public = dh.DHPublicNumbers(MODP_GENERATOR, self.parameter_numbers)
            return dh.DHPrivateNumbers(exponent, public).private_key()

    def peer_key(self, value: int) -> dh.DHPublicKey:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return dh.DHPublicNumbers(value, self.parameter_numbers).public_key()


class _ModpKeyExchange(KeyExchange):
    def __init__(self, params: _ModpGroup, exponent: int) -> None:
        self.group = params.group
        self._params = params
        self._private = params.private_key(exponent)
        public = self._private.exchange(params.generator_key)
        self.public_value = public.rjust(params.size, b"\x00")

    def shared_secret(self, peer_value: bytes) -> bytes:
        params = self._params
        if len(peer_value) != params.size:
            raise InvalidKeyExchange(
                f"{self.group.name} public value is {len(peer_value)} bytes, not {params.size}"
            )
        value = int.from_bytes(peer_value, "big")
        # 1 < y < p-1: excludes the order-1 and order-2 elements (RFC 6989 section 2.1).
        if not 1 < value < params.prime - 1:
            raise InvalidKeyExchange(f"{self.group.name} public value out of range")
        try:
            secret = self._private.exchange(params.peer_key(value))
        except ValueError as exc:
            raise InvalidKeyExchange(f"{self.group.name} exchange failed: {exc}") from None
        return secret.rjust(params.size, b"\x00")


# -- ECP groups ----------------------------------------------------------------------------
# Group orders n (RFC 5903 section 3 / SEC 2); private scalars are drawn in [1, n-1].
_EC_ORDERS: dict[DhGroup, int] = {
    DhGroup.ECP_256: int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    DhGroup.ECP_384: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    DhGroup.ECP_521: int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
        "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}
_EC_CURVES: dict[DhGroup, ec.EllipticCurve] = {
    DhGroup.ECP_256: ec.SECP256R1(),
    DhGroup.ECP_384: ec.SECP384R1(),
    DhGroup.ECP_521: ec.SECP521R1(),
}
_ECDH = ec.ECDH()


class _EcpKeyExchange(KeyExchange):
    def __init__(self, group: DhGroup, scalar: int) -> None:
        self.group = group
        self._curve = _EC_CURVES[group]
        self._size = dh_info(group).public_size
        self._private = ec.derive_private_key(scalar, self._curve)
        point = self._private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self.public_value = point[1:]  # drop the 0x04 "uncompressed" octet: x || y

    def shared_secret(self, peer_value: bytes) -> bytes:
        if len(peer_value) != self._size:
            raise InvalidKeyExchange(
                f"{self.group.name} public value is {len(peer_value)} bytes, not {self._size}"
            )
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_value)
            return self._private.exchange(_ECDH, peer)
        except (ValueError, _CryptoUnsupported):
            raise InvalidKeyExchange(
                f"{self.group.name} public value is not on the curve"
            ) from None


# -- Curve25519 ----------------------------------------------------------------------------
class _X25519KeyExchange(KeyExchange):
    def __init__(self, private_bytes: bytes) -> None:
        self.group = DhGroup.CURVE25519
        self._private = x25519.X25519PrivateKey.from_private_bytes(private_bytes)
        self.public_value = self._private.public_key().public_bytes_raw()

    def shared_secret(self, peer_value: bytes) -> bytes:
        if len(peer_value) != 32:
            raise InvalidKeyExchange(f"Curve25519 public value is {len(peer_value)} bytes, not 32")
        try:
            peer = x25519.X25519PublicKey.from_public_bytes(peer_value)
            secret = self._private.exchange(peer)
        except ValueError:
            # cryptography refuses the all-zero result of a low-order point.
            raise InvalidKeyExchange("Curve25519 shared secret is all zero") from None
        if secret == bytes(32):
            raise InvalidKeyExchange("Curve25519 shared secret is all zero")
        return secret


# -- construction --------------------------------------------------------------------------
_MODP_CACHE: dict[DhGroup, _ModpGroup] = {}


def _modp_params(group: DhGroup) -> _ModpGroup:
    params = _MODP_CACHE.get(group)
    if params is None:
        params = _MODP_CACHE[group] = _ModpGroup(group)
    return params


def private_value_size(group: DhGroup) -> int:
    """How many random bytes `create_key_exchange` draws for `group`."""
    if group in _MODP_EXPONENT_BYTES:
        return _MODP_EXPONENT_BYTES[group]
    if group in _EC_ORDERS:
        # 8 extra bytes make the bias of the reduction mod n negligible (FIPS 186-5 A.2.1).
        return (_EC_ORDERS[group].bit_length() + 7) // 8 + 8
    if group == DhGroup.CURVE25519:
        return 32
    raise UnsupportedAlgorithm(f"unsupported key exchange group {int(group)}")


def create_key_exchange(group: DhGroup, rng: RandomSource) -> KeyExchange:
    """A fresh key pair for `group`, its private value drawn from `rng`."""
    return load_key_exchange(group, rng.bytes(private_value_size(group)))


def load_key_exchange(group: DhGroup, private_value: bytes) -> KeyExchange:
    """A key pair from given private randomness (the bytes `create_key_exchange` draws).

    MODP: the exponent is the big-endian value with its top bit set (full length).
    ECP: the scalar is (value mod (n-1)) + 1.  Curve25519: the raw 32-byte scalar (clamped
    by X25519 itself, RFC 7748 section 5).  Use `load_ecp_scalar` for a known ECP scalar.
    """
    if group in _MODP_EXPONENT_BYTES:
        params = _modp_params(group)
        exponent = int.from_bytes(private_value, "big") | (1 << (8 * len(private_value) - 1))
        return _ModpKeyExchange(params, exponent)
    if group in _EC_ORDERS:
        order = _EC_ORDERS[group]
        return _EcpKeyExchange(group, int.from_bytes(private_value, "big") % (order - 1) + 1)
    if group == DhGroup.CURVE25519:
        if len(private_value) != 32:
            raise UnsupportedAlgorithm("Curve25519 private value must be 32 bytes")
        return _X25519KeyExchange(private_value)
    raise UnsupportedAlgorithm(f"unsupported key exchange group {int(group)}")


def load_ecp_scalar(group: DhGroup, scalar: int) -> KeyExchange:
    """An ECP key pair from a known private scalar in [1, n-1] (for known-answer tests)."""
    if group not in _EC_ORDERS or not 1 <= scalar < _EC_ORDERS[group]:
        raise UnsupportedAlgorithm(f"bad scalar for key exchange group {int(group)}")
    return _EcpKeyExchange(group, scalar)
