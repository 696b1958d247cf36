"""Key exchange: both sides agree, fixed randomness gives fixed keys, bad values are refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from core.crypto.dh import (
    _EC_CURVES,
    _EC_ORDERS,
    MODP_PRIMES,
    InvalidKeyExchange,
    create_key_exchange,
    load_ecp_scalar,
    load_key_exchange,
    private_value_size,
)
from core.crypto.random import SeededRandomSource
from core.crypto.registry import SUPPORTED_DH, UnsupportedAlgorithm, dh_info
from core.errors import DecodeError
from core.ike.constants import DhGroup

ALL_GROUPS = sorted(SUPPORTED_DH)
MODP_GROUPS = [DhGroup.MODP_2048, DhGroup.MODP_3072, DhGroup.MODP_4096]
ECP_GROUPS = [DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.ECP_521]


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_both_sides_agree(group: DhGroup) -> None:
    rng = SeededRandomSource(int(group))
    initiator = create_key_exchange(group, rng)
    responder = create_key_exchange(group, rng)
    info = dh_info(group)
    assert initiator.group == group
    assert len(initiator.public_value) == info.public_size
    assert initiator.public_value != responder.public_value
    secret = initiator.shared_secret(responder.public_value)
    assert secret == responder.shared_secret(initiator.public_value)
    assert len(secret) == info.shared_size


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_fixed_randomness_gives_fixed_keys(group: DhGroup) -> None:
    first = create_key_exchange(group, SeededRandomSource(7))
    again = create_key_exchange(group, SeededRandomSource(7))
    other = create_key_exchange(group, SeededRandomSource(8))
    assert first.public_value == again.public_value
    assert first.public_value != other.public_value


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_private_value_never_shown(group: DhGroup) -> None:
    exchange = create_key_exchange(group, SeededRandomSource(1))
    assert repr(exchange) == f"<{type(exchange).__name__} {group.name}>"


def _pi_bits(bits: int) -> int:
    """floor(pi * 2^bits) by Machin's formula in integers (for checking RFC 3526 primes)."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inverse(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    return (4 * (4 * arctan_inverse(5) - arctan_inverse(239))) >> guard


@pytest.mark.parametrize(
    ("group", "bits", "offset"),
    # RFC 3526 sections 3, 4 and 5: p = 2^s - 2^(s-64) - 1 + 2^64 * ([2^(s-130) pi] + offset)
    [(DhGroup.MODP_2048, 2048, 124476), (DhGroup.MODP_3072, 3072, 1690314),
     (DhGroup.MODP_4096, 4096, 240904)],
)  # fmt: skip
def test_modp_primes_match_rfc3526_formula(group: DhGroup, bits: int, offset: int) -> None:
    expected = 2**bits - 2 ** (bits - 64) - 1 + 2**64 * (_pi_bits(bits - 130) + offset)
    assert MODP_PRIMES[group] == expected
    assert dh_info(group).public_size * 8 == bits


@pytest.mark.parametrize("group", ECP_GROUPS)
def test_ecp_orders_are_the_curve_orders(group: DhGroup) -> None:
    order = _EC_ORDERS[group]
    ec.derive_private_key(order - 1, _EC_CURVES[group])  # the largest valid scalar
    with pytest.raises(ValueError):
        ec.derive_private_key(order, _EC_CURVES[group])


@pytest.mark.parametrize("group", ALL_GROUPS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_length_refused(group: DhGroup, delta: int) -> None:
    exchange = create_key_exchange(group, SeededRandomSource(3))
    peer = create_key_exchange(group, SeededRandomSource(4)).public_value
    bad = peer[:-1] if delta < 0 else peer + b"\x00"
    with pytest.raises(InvalidKeyExchange):
        exchange.shared_secret(bad)


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_empty_value_refused(group: DhGroup) -> None:
    exchange = create_key_exchange(group, SeededRandomSource(3))
    with pytest.raises(DecodeError):
        exchange.shared_secret(b"")


@pytest.mark.parametrize("group", MODP_GROUPS)
def test_modp_degenerate_values_refused(group: DhGroup) -> None:
    exchange = create_key_exchange(group, SeededRandomSource(5))
    prime, size = MODP_PRIMES[group], dh_info(group).public_size
    for value in (0, 1, prime - 1, prime, prime + 1, 2 ** (8 * size) - 1):
        with pytest.raises(InvalidKeyExchange):
            exchange.shared_secret(value.to_bytes(size, "big"))


@pytest.mark.parametrize("group", ECP_GROUPS)
def test_ecp_point_off_the_curve_refused(group: DhGroup) -> None:
    exchange = create_key_exchange(group, SeededRandomSource(6))
    peer = bytearray(create_key_exchange(group, SeededRandomSource(9)).public_value)
    peer[-1] ^= 0x01  # y no longer matches x
    for bad in (bytes(peer), bytes(len(peer)), b"\xff" * len(peer)):
        with pytest.raises(InvalidKeyExchange):
            exchange.shared_secret(bad)


@pytest.mark.parametrize(
    "low_order_point",
    # u = 0 and u = 1: points of small order, X25519 with them is all zero (RFC 7748 6.1).
    [bytes(32), b"\x01" + bytes(31)],
)
def test_x25519_all_zero_secret_refused(low_order_point: bytes) -> None:
    exchange = create_key_exchange(DhGroup.CURVE25519, SeededRandomSource(1))
    with pytest.raises(InvalidKeyExchange):
        exchange.shared_secret(low_order_point)


@pytest.mark.parametrize("group", [DhGroup.MODP_1024, DhGroup.NONE])
def test_unsupported_group(group: DhGroup) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        create_key_exchange(group, SeededRandomSource(1))
    with pytest.raises(UnsupportedAlgorithm):
        private_value_size(group)


def test_load_checks_sizes() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        load_key_exchange(DhGroup.CURVE25519, bytes(31))
    with pytest.raises(UnsupportedAlgorithm):
        load_ecp_scalar(DhGroup.ECP_256, 0)
    with pytest.raises(UnsupportedAlgorithm):
        load_ecp_scalar(DhGroup.ECP_256, _EC_ORDERS[DhGroup.ECP_256])
    with pytest.raises(UnsupportedAlgorithm):
        load_ecp_scalar(DhGroup.CURVE25519, 5)
