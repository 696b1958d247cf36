"""PSK authentication (RFC 7296 2.15) and NAT detection hashes (RFC 7296 2.23)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from functools import lru_cache

from core.crypto.prf import Prf
from core.ike.constants import PrfId

_KEY_PAD = b"Key Pad for IKEv2"


def id_payload_body(id_type: int, data: bytes) -> bytes:
    """RestOfInitIDPayload / RestOfRespIDPayload: ID type, 3 reserved octets, the data."""
    return bytes([id_type, 0, 0, 0]) + data


def signed_octets(prf: Prf, first_message: bytes, peer_nonce: bytes, sk_p: bytes,
                  id_body: bytes) -> bytes:
    """RealMessage | NonceData | prf(SK_p, RestOfIDPayload)."""
    return first_message + peer_nonce + prf.compute(sk_p, id_body)


def psk_auth(prf: Prf, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf.compute(_padded_key(prf.prf_id, psk), octets)


@lru_cache(maxsize=128)
def _padded_key(prf_id: int, psk: bytes) -> bytes:
    """prf(Shared Secret, "Key Pad for IKEv2"): the same for every SA of a peer."""
    return Prf(PrfId(prf_id)).compute(psk, _KEY_PAD)


def auth_matches(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)


def nat_detection_hash(spi_i: bytes, spi_r: bytes, host: str, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port), the data of a NAT_DETECTION_*_IP notify.

    A digest of public values, not a MAC: hashlib's SHA-1 is the cheapest call here."""
    return hashlib.sha1(spi_i + spi_r + _packed(host) + port.to_bytes(2, "big")).digest()


@lru_cache(maxsize=256)
def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host).packed
