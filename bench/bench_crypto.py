"""Per-operation cost of core/crypto on this machine: run `python -m bench.bench_crypto`.

Prints microseconds per call for the pieces of an IKE SA setup (key exchange, key
derivation, SK payload sealing/opening), the numbers the responder budget is made of.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable

from core.crypto.cipher import IkeProtector
from core.crypto.dh import create_key_exchange
from core.crypto.keymat import derive_child_keys, derive_ike_keys
from core.crypto.random import SystemRandomSource
from core.ike.constants import DhGroup, EncrId, IntegId, PrfId


def _per_call_us(func: Callable[[], object], seconds: float = 0.3) -> float:
    timer = timeit.Timer(func)
    number, _ = timer.autorange()
    runs = max(1, int(seconds / max(timer.timeit(number) / number, 1e-9)))
    return min(timer.repeat(repeat=3, number=runs)) / runs * 1e6


def _protector_rows(
    name: str, protector: IkeProtector, header: bytes, payload: bytes
) -> list[tuple[str, float]]:
    rng = SystemRandomSource()
    sealed = protector.seal(header, payload, rng)
    return [
        (
            f"seal {len(payload)} B {name}",
            _per_call_us(lambda: protector.seal(header, payload, rng)),
        ),
        (f"open {len(payload)} B {name}", _per_call_us(lambda: protector.open(header, sealed))),
    ]


def main() -> None:
    rng = SystemRandomSource()
    rows: list[tuple[str, float]] = []
    for group in (DhGroup.CURVE25519, DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.MODP_2048):
        peer = create_key_exchange(group, rng).public_value

        def exchange(group: DhGroup = group, peer: bytes = peer) -> bytes:
            return create_key_exchange(group, rng).shared_secret(peer)

        rows.append((f"key exchange {group.name} (ours + shared secret)", _per_call_us(exchange)))

    nonce, spi, shared = rng.bytes(32), rng.bytes(8), rng.bytes(32)
    rows.append((
        "derive_ike_keys AES-GCM-256/SHA2-256",
        _per_call_us(lambda: derive_ike_keys(
            PrfId.HMAC_SHA2_256, (EncrId.AES_GCM_16, 256), None, shared, nonce, nonce, spi, spi
        )),
    ))  # fmt: skip
    rows.append((
        "derive_child_keys AES-GCM-256",
        _per_call_us(lambda: derive_child_keys(
            PrfId.HMAC_SHA2_256, shared, (EncrId.AES_GCM_16, 256), None, nonce, nonce
        )),
    ))  # fmt: skip
    header, payload = rng.bytes(32), rng.bytes(300)
    for name, protector in (
        ("AES-GCM-256", IkeProtector(EncrId.AES_GCM_16, 256, None, rng.bytes(36))),
        ("ChaCha20-Poly1305", IkeProtector(EncrId.CHACHA20_POLY1305, None, None, rng.bytes(36))),
        ("AES-CBC-256/SHA2-256-128", IkeProtector(
            EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128, rng.bytes(32), rng.bytes(32)
        )),
    ):  # fmt: skip
        rows += _protector_rows(name, protector, header, payload)
    width = max(len(name) for name, _ in rows)
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:9.1f} us")


if __name__ == "__main__":
    main()
