"""ISAKMP/IKEv1 registries: RFC 2408 (ISAKMP), RFC 2407 (IPsec DOI), RFC 2409 (IKE,
appendix A), RFC 3947 (NAT-T), RFC 3706 (DPD), with the IANA "ISAKMP" and "IPsec DOI"
numbers.  Several numbers coincide with IKEv2's but mean other things (e.g. notify 7 is
INVALID-EXCHANGE-TYPE here, INVALID_SYNTAX in IKEv2), so IKEv1 keeps its own enums.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

ISAKMP_VERSION = 0x10  # major 1, minor 0 (RFC 2408 3.1)
HEADER_SIZE = 28
GENERIC_HEADER_SIZE = 4
DOI_IPSEC = 1  # RFC 2407 4.2
SIT_IDENTITY_ONLY = 1  # RFC 2407 4.2.1
KEY_IKE = 1  # the only phase 1 transform ID (RFC 2409 appendix A)
NONCE_MIN, NONCE_MAX = 8, 256  # RFC 2409 5: nonce data length bounds
COOKIE_SIZE = 8


class PayloadType(IntEnum):
    """RFC 2408 3.1 next payload types; 20/21 RFC 3947; 130/131 the NAT-T drafts."""

    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CR = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR_ID = 13
    NAT_D = 20
    NAT_OA = 21
    NAT_D_DRAFT = 130
    NAT_OA_DRAFT = 131


class ExchangeType(IntEnum):
    """RFC 2408 3.1 / RFC 2409 (Quick Mode 32)."""

    BASE = 1
    MAIN = 2  # Identity Protection
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # mode config (not supported)
    QUICK = 32


class Flag(IntFlag):
    """RFC 2408 3.1 header flags."""

    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTH_ONLY = 0x04


class ProtocolId(IntEnum):
    """RFC 2407 4.4.1."""

    ISAKMP = 1
    AH = 2
    ESP = 3
    IPCOMP = 4


class Phase1Attr(IntEnum):
    """RFC 2409 appendix A, attribute classes (B = basic, V = variable)."""

    ENCRYPTION = 1  # B
    HASH = 2  # B
    AUTH_METHOD = 3  # B
    GROUP = 4  # B
    GROUP_TYPE = 5  # B
    GROUP_PRIME = 6  # V
    GROUP_GENERATOR_ONE = 7  # V
    GROUP_GENERATOR_TWO = 8  # V
    GROUP_CURVE_A = 9  # V
    GROUP_CURVE_B = 10  # V
    LIFE_TYPE = 11  # B
    LIFE_DURATION = 12  # V
    PRF = 13  # B
    KEY_LENGTH = 14  # B
    FIELD_SIZE = 15  # B
    GROUP_ORDER = 16  # V


class Phase1Encr(IntEnum):
    """RFC 2409 appendix A encryption algorithms; 7 = AES-CBC (RFC 3602 / IANA)."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_CBC = 4
    DES3_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7
    CAMELLIA_CBC = 8


class HashAlg(IntEnum):
    """RFC 2409 appendix A hash algorithms; 4-6 from RFC 4868 / IANA."""

    MD5 = 1
    SHA1 = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    """RFC 2409 appendix A authentication methods."""

    PSK = 1
    DSS_SIG = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_ENC_REVISED = 5


class LifeType(IntEnum):
    """RFC 2409 appendix A / RFC 2407 4.5."""

    SECONDS = 1
    KILOBYTES = 2


class IpsecAttr(IntEnum):
    """RFC 2407 4.5 SA attributes of phase 2 transforms."""

    LIFE_TYPE = 1
    LIFE_DURATION = 2
    GROUP = 3
    ENCAPSULATION = 4
    AUTH_ALG = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICT_SIZE = 8
    COMPRESS_PRIVATE_ALG = 9
    ESN = 11  # RFC 4304


class EncapMode(IntEnum):
    """RFC 2407 4.5; 3/4 RFC 3947; 61443/61444 draft-ietf-ipsec-nat-t-ike-0x."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3
    UDP_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443
    UDP_TRANSPORT_DRAFT = 61444


class EspTransform(IntEnum):
    """RFC 2407 4.4.4 ESP transform IDs (12 RFC 3602, 20 RFC 4106)."""

    DES = 2
    DES3 = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20


class AuthAlg(IntEnum):
    """RFC 2407 4.5 authentication algorithms (5-7 RFC 4868)."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    HMAC_RIPEMD = 8
    AES_XCBC_MAC = 9


class IdType(IntEnum):
    """RFC 2407 4.6.2.1."""

    IPV4_ADDR = 1
    FQDN = 2
    USER_FQDN = 3
    IPV4_ADDR_SUBNET = 4
    IPV6_ADDR = 5
    IPV6_ADDR_SUBNET = 6
    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    DER_ASN1_DN = 9
    DER_ASN1_GN = 10
    KEY_ID = 11


class NotifyType(IntEnum):
    """RFC 2408 3.14.1 (errors 1-30, CONNECTED), RFC 2407 4.6.3, RFC 3706 (DPD)."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137

    @property
    def is_error(self) -> bool:
        return self.value < 8192


def is_error_notify(value: int) -> bool:
    """RFC 2408 3.14.1: 1-8191 are errors (16384 and up are status)."""
    return 0 < value < 8192


# -- Vendor IDs ----------------------------------------------------------------------------
# RFC 3706 section 5.1: DPD, version 1.0.
VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
# MD5 of the names (RFC 3947 section 3.1 and the drafts it replaced); tests recompute them.
VID_NATT_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")  # "RFC 3947"
VID_NATT_DRAFT_03 = bytes.fromhex("7d9419a65310ca6f2c179d9215529d56")
VID_NATT_DRAFT_02 = bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448")
VID_NATT_DRAFT_02N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")  # "...-02\n"
NATT_DRAFT_VIDS = frozenset({VID_NATT_DRAFT_03, VID_NATT_DRAFT_02, VID_NATT_DRAFT_02N})


def name_of(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)
