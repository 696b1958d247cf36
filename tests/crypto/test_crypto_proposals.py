"""The strongSwan-style proposal parser: valid strings to specs, invalid ones to errors."""

from __future__ import annotations

import pytest

from core.crypto.proposals import (
    ProposalError,
    ProposalSpec,
    describe,
    parse_esp_proposal,
    parse_esp_proposals,
    parse_ike_proposal,
)
from core.errors import UsageError
from core.ike.constants import DhGroup, EncrId, EsnId, IntegId, PrfId

GCM, CBC, CHACHA = EncrId.AES_GCM_16, EncrId.AES_CBC, EncrId.CHACHA20_POLY1305

IKE_VALID: list[tuple[str, ProposalSpec, str]] = [
    (
        "aes256gcm16-prfsha256-x25519",
        ProposalSpec(((GCM, 256),), (), (PrfId.HMAC_SHA2_256,), (DhGroup.CURVE25519,), (), ""),
        "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519",
    ),
    (
        "aes128gcm-prfsha384-curve25519-ecp256",
        ProposalSpec(
            ((GCM, 128),), (), (PrfId.HMAC_SHA2_384,), (DhGroup.CURVE25519, DhGroup.ECP_256), (), ""
        ),
        "AES_GCM_16_128/PRF_HMAC_SHA2_384/CURVE_25519/ECP_256",
    ),
    (
        "aes256-sha256-modp2048",
        ProposalSpec(
            ((CBC, 256),),
            (IntegId.HMAC_SHA2_256_128,),
            (PrfId.HMAC_SHA2_256,),
            (DhGroup.MODP_2048,),
            (),
            "",
        ),
        "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
    ),
    (
        "aes128-aes192-sha1-sha512-prfsha384-ecp384-ecp521-modp3072-modp4096",
        ProposalSpec(
            ((CBC, 128), (CBC, 192)),
            (IntegId.HMAC_SHA1_96, IntegId.HMAC_SHA2_512_256),
            (PrfId.HMAC_SHA2_384,),
            (DhGroup.ECP_384, DhGroup.ECP_521, DhGroup.MODP_3072, DhGroup.MODP_4096),
            (),
            "",
        ),
        "AES_CBC_128/AES_CBC_192/HMAC_SHA1_96/HMAC_SHA2_512_256/PRF_HMAC_SHA2_384"
        "/ECP_384/ECP_521/MODP_3072/MODP_4096",
    ),
    (
        " chacha20poly1305-aes256gcm16-prfsha512-prfsha1-x25519-x25519 ",
        ProposalSpec(
            ((CHACHA, None), (GCM, 256)),
            (),
            (PrfId.HMAC_SHA2_512, PrfId.HMAC_SHA1),
            (DhGroup.CURVE25519,),
            (),
            "",
        ),
        "CHACHA20_POLY1305/AES_GCM_16_256/PRF_HMAC_SHA2_512/PRF_HMAC_SHA1/CURVE_25519",
    ),
    (
        "AES256-SHA384-ECP384",
        ProposalSpec(
            ((CBC, 256),),
            (IntegId.HMAC_SHA2_384_192,),
            (PrfId.HMAC_SHA2_384,),
            (DhGroup.ECP_384,),
            (),
            "",
        ),
        "AES_CBC_256/HMAC_SHA2_384_192/PRF_HMAC_SHA2_384/ECP_384",
    ),
]


@pytest.mark.parametrize(("text", "expected", "name"), IKE_VALID)
def test_ike_valid(text: str, expected: ProposalSpec, name: str) -> None:
    spec = parse_ike_proposal(text)
    assert (spec.encr, spec.integ, spec.prf, spec.dh, spec.esn) == (
        expected.encr,
        expected.integ,
        expected.prf,
        expected.dh,
        expected.esn,
    )
    assert spec.text == text.strip()
    assert spec.is_aead == (not spec.integ)
    assert describe(spec) == name


ESP_VALID: list[tuple[str, str]] = [
    ("aes128gcm16", "AES_GCM_16_128/NO_EXT_SEQ"),
    ("aes256gcm16-esn", "AES_GCM_16_256/EXT_SEQ"),
    ("chacha20poly1305-esn-noesn", "CHACHA20_POLY1305/EXT_SEQ/NO_EXT_SEQ"),
    ("aes256-sha256-modp2048-noesn", "AES_CBC_256/HMAC_SHA2_256_128/MODP_2048/NO_EXT_SEQ"),
    ("aes128-sha1", "AES_CBC_128/HMAC_SHA1_96/NO_EXT_SEQ"),
    ("aes256gcm16-x25519", "AES_GCM_16_256/CURVE_25519/NO_EXT_SEQ"),
]


@pytest.mark.parametrize(("text", "name"), ESP_VALID)
def test_esp_valid(text: str, name: str) -> None:
    spec = parse_esp_proposal(text)
    assert describe(spec) == name
    assert spec.prf == ()


def test_esp_defaults_and_pfs() -> None:
    spec = parse_esp_proposal("aes256gcm16")
    assert spec.esn == (EsnId.NO_ESN,)
    assert spec.dh == ()
    assert spec.is_aead
    assert parse_esp_proposal("aes256gcm16-ecp256").dh == (DhGroup.ECP_256,)


def test_esp_list() -> None:
    specs = parse_esp_proposals("aes256gcm16, aes256-sha256")
    assert [s.text for s in specs] == ["aes256gcm16", "aes256-sha256"]


IKE_INVALID: list[tuple[str, str]] = [
    ("aes256-foo-x25519", "'foo'"),
    ("aes256gcm16-prfsha256-x448", "'x448'"),
    ("aes256gcm16-x25519", "explicit PRF"),
    ("aes256-sha256", "DH"),
    ("sha256-prfsha256-x25519", "no encryption"),
    ("aes256-prfsha256-x25519", "no integrity"),
    ("aes256gcm16-sha256-prfsha256-x25519", "'sha256'"),
    ("aes256gcm16-aes256-sha256-prfsha256-x25519", "mixed"),
    ("aes128gcm16-prfsha256-x25519-esn", "'esn'"),
    ("aes256--sha1-x25519", "empty token"),
    ("", "empty"),
    ("aes128gcm8-prfsha256-x25519", "'aes128gcm8'"),
]


@pytest.mark.parametrize(("text", "fragment"), IKE_INVALID)
def test_ike_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ProposalError) as caught:
        parse_ike_proposal(text)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, UsageError)
    assert isinstance(caught.value, ValueError)


ESP_INVALID: list[tuple[str, str]] = [
    ("aes256gcm16-prfsha256", "'prfsha256'"),
    ("aes256", "no integrity"),
    ("aes256gcm16-sha1", "'sha1'"),
    ("aes256gcm16-md5", "'md5'"),
    ("esn", "no encryption"),
]


@pytest.mark.parametrize(("text", "fragment"), ESP_INVALID)
def test_esp_invalid(text: str, fragment: str) -> None:
    with pytest.raises(ProposalError) as caught:
        parse_esp_proposal(text)
    assert fragment in str(caught.value)
