"""The SK payload protector: round trips, tampering, short bodies and bad padding."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from core.crypto.cipher import EncryptedPayloadError, IkeProtector, create_ike_protectors
from core.crypto.keymat import derive_ike_keys
from core.crypto.prf import Integrity
from core.crypto.random import SeededRandomSource
from core.crypto.registry import UnsupportedAlgorithm, encr_keymat_size, integ_keymat_size
from core.errors import DecodeError, IntegrityError
from core.ike.constants import EncrId, IntegId, PrfId

Suite = tuple[EncrId, int | None, IntegId | None]

SUITES: list[Suite] = [
    (EncrId.AES_GCM_16, 128, None),
    (EncrId.AES_GCM_16, 256, None),
    (EncrId.CHACHA20_POLY1305, None, None),
    (EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128),
    (EncrId.AES_CBC, 192, IntegId.HMAC_SHA2_384_192),
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256),
]
HEADER = bytes(range(28)) + b"\x21\x00\x00\x00"  # an IKE header and an SK payload header


def make(suite: Suite, seed: int = 1) -> IkeProtector:
    encr_id, bits, integ = suite
    rng = SeededRandomSource(seed)
    return IkeProtector(
        encr_id, bits, integ, rng.bytes(encr_keymat_size(encr_id, bits)),
        rng.bytes(integ_keymat_size(integ)),
    )  # fmt: skip


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("length", [0, 1, 14, 15, 16, 17, 31, 32, 100, 1500])
def test_round_trip(suite: Suite, length: int) -> None:
    protector = make(suite)
    plaintext = bytes(i & 0xFF for i in range(length))
    sealed = protector.seal(HEADER, plaintext, SeededRandomSource(length))
    assert len(sealed) == protector.sealed_length(length)
    assert protector.open(HEADER, sealed) == plaintext


@pytest.mark.parametrize("suite", SUITES)
def test_sealed_length_formula(suite: Suite) -> None:
    protector = make(suite)
    if suite[2] is None:  # AEAD: 8-byte IV, one Pad Length byte, 16-byte tag, no padding
        assert protector.sealed_length(10) == 8 + 11 + 16
    else:  # CBC: 16-byte IV, padded to 16 bytes with the Pad Length byte, truncated ICV
        icv = Integrity(suite[2]).icv_size
        assert protector.sealed_length(15) == 16 + 16 + icv
        assert protector.sealed_length(16) == 16 + 32 + icv
    assert protector.overhead_min <= protector.sealed_length(0)


@pytest.mark.parametrize("suite", SUITES)
def test_fresh_iv_per_message(suite: Suite) -> None:
    protector = make(suite)
    rng = SeededRandomSource(2)
    assert protector.seal(HEADER, b"same", rng) != protector.seal(HEADER, b"same", rng)


@pytest.mark.parametrize("suite", SUITES)
def test_every_tampered_byte_fails_integrity(suite: Suite) -> None:
    protector = make(suite)
    sealed = protector.seal(HEADER, b"payload chain bytes", SeededRandomSource(3))
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x80
        with pytest.raises(IntegrityError):
            protector.open(HEADER, bytes(tampered))
    changed_header = HEADER[:-1] + b"\x01"
    with pytest.raises(IntegrityError):
        protector.open(changed_header, sealed)


@pytest.mark.parametrize("suite", SUITES)
def test_other_key_fails_integrity(suite: Suite) -> None:
    sealed = make(suite, seed=1).seal(HEADER, b"data", SeededRandomSource(4))
    with pytest.raises(IntegrityError):
        make(suite, seed=2).open(HEADER, sealed)


@pytest.mark.parametrize("suite", SUITES)
def test_short_body_is_a_decode_error(suite: Suite) -> None:
    protector = make(suite)
    shortest = protector.sealed_length(0)
    for length in range(shortest):
        with pytest.raises(EncryptedPayloadError) as caught:
            protector.open(HEADER, bytes(length))
        assert isinstance(caught.value, DecodeError)


@pytest.mark.parametrize("suite", [s for s in SUITES if s[2] is not None])
def test_cbc_misaligned_body_is_a_decode_error(suite: Suite) -> None:
    protector = make(suite)
    sealed = protector.seal(HEADER, b"x" * 20, SeededRandomSource(5))
    with pytest.raises(EncryptedPayloadError):
        protector.open(HEADER, sealed[:16] + sealed[17:])


def test_aead_bad_pad_length_is_a_decode_error() -> None:
    key, salt, iv = bytes(range(16)), b"salt", bytes(8)
    protector = IkeProtector(EncrId.AES_GCM_16, 128, None, key + salt)
    # Five bytes of data claiming 200 bytes of padding.
    body = iv + AESGCM(key).encrypt(salt + iv, b"abcd" + bytes((200,)), HEADER)
    with pytest.raises(EncryptedPayloadError):
        protector.open(HEADER, body)


def test_aead_accepts_any_padding() -> None:
    """RFC 7634 section 3 / RFC 5282: the receiver accepts any padding length."""
    key, salt, iv = bytes(range(16)), b"salt", bytes(8)
    protector = IkeProtector(EncrId.AES_GCM_16, 128, None, key + salt)
    body = iv + AESGCM(key).encrypt(salt + iv, b"data" + b"\x07\x07\x07" + b"\x03", HEADER)
    assert protector.open(HEADER, body) == b"data"


def test_cbc_bad_pad_length_is_a_decode_error() -> None:
    key, integ_key, iv = bytes(range(16)), bytes(32), bytes(range(16))
    protector = IkeProtector(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, key, integ_key)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(b"fifteen bytes!!" + bytes((16,))) + encryptor.finalize()
    icv = Integrity(IntegId.HMAC_SHA2_256_128).sign(integ_key, HEADER + iv + ciphertext)
    with pytest.raises(EncryptedPayloadError):
        protector.open(HEADER, iv + ciphertext + icv)


@pytest.mark.parametrize(
    ("encr_id", "bits", "integ", "encr_len", "integ_len"),
    [
        (EncrId.AES_GCM_16, 256, None, 32, 0),  # salt missing
        (EncrId.AES_GCM_16, 512, None, 68, 0),  # no such key size
        (EncrId.AES_GCM_16, 128, IntegId.HMAC_SHA2_256_128, 20, 32),  # AEAD with integrity
        (EncrId.CHACHA20_POLY1305, 256, None, 36, 0),  # no Key Length attribute allowed
        (EncrId.AES_CBC, 128, None, 16, 0),  # CBC without integrity
        (EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, 16, 20),  # short integrity key
        (EncrId.AES_CTR, 128, IntegId.HMAC_SHA2_256_128, 20, 32),  # not implemented
    ],
)
def test_misuse_raises(
    encr_id: EncrId, bits: int | None, integ: IntegId | None, encr_len: int, integ_len: int
) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        IkeProtector(encr_id, bits, integ, bytes(encr_len), bytes(integ_len))


@pytest.mark.parametrize("suite", SUITES)
def test_protector_pairs_follow_the_roles(suite: Suite) -> None:
    encr_id, bits, integ = suite
    keys = derive_ike_keys(
        PrfId.HMAC_SHA2_256, (encr_id, bits), integ, b"g" * 32, b"n" * 32, b"m" * 32,
        b"i" * 8, b"r" * 8,
    )  # fmt: skip
    i_out, i_in = create_ike_protectors((encr_id, bits), integ, keys, is_initiator=True)
    r_out, r_in = create_ike_protectors((encr_id, bits), integ, keys, is_initiator=False)
    rng = SeededRandomSource(6)
    assert r_in.open(HEADER, i_out.seal(HEADER, b"request", rng)) == b"request"
    assert i_in.open(HEADER, r_out.seal(HEADER, b"response", rng)) == b"response"
    with pytest.raises(IntegrityError):  # a reflected message does not open
        i_in.open(HEADER, i_out.seal(HEADER, b"reflected", rng))


@given(
    suite=st.sampled_from(SUITES),
    plaintext=st.binary(max_size=300),
    header=st.binary(min_size=0, max_size=40),
)
def test_property_round_trip(suite: Suite, plaintext: bytes, header: bytes) -> None:
    protector = make(suite)
    sealed = protector.seal(header, plaintext, SeededRandomSource(len(plaintext)))
    assert protector.open(header, sealed) == plaintext


@given(suite=st.sampled_from(SUITES), body=st.binary(max_size=200))
def test_property_garbage_raises_only_our_errors(suite: Suite, body: bytes) -> None:
    protector = make(suite)
    with pytest.raises((IntegrityError, DecodeError)):
        protector.open(HEADER, body)
