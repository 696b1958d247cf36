"""Mutated messages for both roles: no exception escapes an endpoint, and every mutation
either goes unnoticed without harm (both sides end up with their SAs) or is reported.

Conversations are deterministic (seeded randomness, fixed clock), so the n-th message of
a fresh run is the n-th message of the recorded one; the test mutates exactly that one on
its way and then lets both endpoints run their timers (retransmissions, retries).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.ike.events import (
    ChildSaInstalled,
    ExchangeFailed,
    IkeEvent,
    IkeSaUp,
    LogMessage,
)
from core.ike.v1.endpoint import Ikev1Endpoint
from tests.ike.v1.pair import Pair, Side, mirror, policy

MODES = {
    "main": policy(dpd_interval=0, ike="aes128-sha256-x25519", esp="aes128gcm16-x25519"),
    "aggressive": policy(dpd_interval=0, exchange_mode="aggressive", local_id="fqdn:a.example",
                         remote_id="fqdn:b.example", ike="aes128-sha1-x25519"),
}


def _run(mode: str, tamper: Any = None) -> Pair:
    p = MODES[mode]
    pair = Pair(p, mirror(p, local_id=p.remote_id, remote_id=p.local_id))
    if tamper is not None:
        pair.tamper = tamper
    pair.connect()
    rekeyed = pair.a.endpoint.rekey("peer", pair.now)  # one more quick mode, then deletes
    assert rekeyed or tamper is not None
    pair.deliver()
    pair.advance(40)
    return pair


RECORDED = {mode: _run(mode).delivered for mode in MODES}


def _mutate(data: bytes, kind: str, position: int, blob: bytes) -> bytes:
    if not data:
        return blob
    position %= len(data)
    if kind == "flip":
        return data[:position] + bytes((data[position] ^ (1 << (blob[0] % 8) if blob else 1),)) \
            + data[position + 1:]
    if kind == "truncate":
        return data[:position]
    if kind == "extend":
        return data + blob
    if kind == "splice":
        return data[:position] + blob + data[position + len(blob):]
    # "length": lie in the header's length field
    return data[:24] + (len(data) + (position % 64) - 32).to_bytes(4, "big", signed=True)[-4:] \
        + data[28:]


def _events(side: Side) -> list[IkeEvent]:
    assert all(isinstance(e, IkeEvent) for e in side.events)
    return side.events


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mode=st.sampled_from(sorted(MODES)),
       which=st.integers(min_value=0, max_value=40),
       kind=st.sampled_from(["flip", "truncate", "extend", "splice", "length"]),
       position=st.integers(min_value=0, max_value=2000),
       blob=st.binary(min_size=1, max_size=24))
def test_mutated_messages_never_escape_and_are_reported(mode: str, which: int, kind: str,
                                                        position: int, blob: bytes) -> None:
    target = which % RECORDED[mode]
    seen = [0]
    changed: list[tuple[bytes, bytes]] = []

    def tamper(sender: Side, data: bytes) -> bytes:
        index = seen[0]
        seen[0] += 1
        if index != target:
            return data
        mutated = _mutate(data, kind, position, blob)
        changed.append((data, mutated))
        return mutated

    pair = _run(mode, tamper)
    events = _events(pair.a) + _events(pair.b)
    assert changed
    original, mutated = changed[0]
    if mutated == original:
        return
    healthy = all(side.of(IkeSaUp) and side.of(ChildSaInstalled) for side in (pair.a, pair.b))
    reported = any(isinstance(e, ExchangeFailed | LogMessage) for e in events)
    assert healthy or reported


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(min_value=0, max_value=3))
def test_garbage_at_an_endpoint_is_dropped_quietly(data: bytes, variant: int) -> None:
    """Random datagrams, some with a valid-looking ISAKMP header, at a fresh endpoint and
    at one with an established SA."""
    p = MODES["main"]
    pair = Pair(p, mirror(p))
    pair.connect()
    endpoint: Ikev1Endpoint = pair.b.endpoint if variant % 2 else pair.a.endpoint
    sa = endpoint.current_sa("peer")
    assert sa is not None
    header = sa.cky_i + (sa.cky_r if variant >= 2 else bytes(8)) + bytes((8, 0x10))
    for candidate in (data, header + data[:2] + bytes(4) + (len(data) + 28).to_bytes(4, "big")
                      + data[2:]):
        from core.ike.events import Address

        endpoint.receive(candidate, Address("198.51.100.9", 500), Address("198.51.100.1", 500),
                         pair.now)
    events = endpoint.pop_events()
    assert all(isinstance(e, LogMessage | ExchangeFailed) for e in events)
    assert sa.is_established
