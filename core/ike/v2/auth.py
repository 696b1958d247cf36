"""PSK authentication (RFC 7296 2.15) and NAT detection hashes (RFC 7296 2.23)."""

from __future__ import annotations

import hmac
import ipaddress

from cryptography.hazmat.primitives import hashes

from core.crypto.prf import Prf

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
    return prf.compute(prf.compute(psk, _KEY_PAD), octets)


def auth_matches(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)


def nat_detection_hash(spi_i: bytes, spi_r: bytes, host: str, port: int) -> bytes:
    """SHA-1(SPIi | SPIr | IP | Port), the data of a NAT_DETECTION_*_IP notify."""
    digest = hashes.Hash(hashes.SHA1())
    digest.update(spi_i + spi_r + ipaddress.ip_address(host).packed + port.to_bytes(2, "big"))
    return digest.finalize()
