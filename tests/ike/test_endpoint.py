"""What both IKE endpoints do alike (`core.ike.endpoint.PeerEndpoint`): re-establishing a
peer that does not answer with a growing backoff, starting over on connect(), and never
for a passive peer or one that was disconnected."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from core.crypto.random import SeededRandomSource
from core.ike.endpoint import PeerEndpoint
from core.ike.events import Address, DownReason, IkeSaDown, LogMessage
from core.ike.policy import PeerPolicy, Timing
from core.ike.v1.endpoint import Ikev1Endpoint
from core.ike.v2.endpoint import Ikev2Endpoint
from tests.ike.v1.pair import policy as v1_policy
from tests.ike.v2.pair import A_ADDR, B_ADDR
from tests.ike.v2.pair import policy as v2_policy

BACKOFF = (10.0, 20.0, 40.0)
FAST = Timing(retransmit_timeout=0.5, retransmit_tries=1, retransmit_jitter=0.0,
              reestablish_backoff=BACKOFF)
LOCAL, REMOTE = Address(A_ADDR, 500), Address(B_ADDR, 500)


def endpoint(version: int, **changes: Any) -> tuple[PeerEndpoint[Any], PeerPolicy]:
    make = v1_policy if version == 1 else v2_policy
    p = replace(make(timing=FAST), **changes)
    rng = SeededRandomSource(5)
    side: PeerEndpoint[Any] = Ikev1Endpoint([p], rng) if version == 1 else Ikev2Endpoint([p], rng)
    return side, p


def run(side: PeerEndpoint[Any], until: float, now: float) -> list[tuple[float, object]]:
    """Drive the timers of an endpoint whose peer never answers; (when, event) pairs."""
    seen: list[tuple[float, object]] = []
    while (deadline := side.next_timer()) is not None and deadline <= until:
        now = max(now, deadline)
        side.handle_timer(now)
        side.pop_datagrams()
        seen += [(now, e) for e in side.pop_events()]
    return seen


def attempts(seen: list[tuple[float, object]]) -> list[float]:
    return [at for at, e in seen if isinstance(e, LogMessage) and "re-establishing" in e.message]


def downs(seen: list[tuple[float, object]]) -> list[float]:
    return [at for at, e in seen if isinstance(e, IkeSaDown) and e.reason == DownReason.TIMEOUT]


@pytest.mark.parametrize("version", [1, 2])
def test_a_silent_peer_is_retried_with_the_growing_backoff(version: int) -> None:
    side, _ = endpoint(version)
    side.connect("peer", LOCAL, REMOTE, 0.0)
    seen = run(side, 200.0, 0.0)
    tries, failures = attempts(seen), downs(seen)
    assert len(tries) >= 4 and len(failures) >= 4
    for step, (failed_at, retried_at) in enumerate(zip(failures, tries, strict=False)):
        wait = BACKOFF[min(step, len(BACKOFF) - 1)]
        assert 0.8 * wait <= retried_at - failed_at <= 1.2 * wait
    # connect() starts over: the first step again after the next failure.
    side.connect("peer", LOCAL, REMOTE, 300.0)
    seen = run(side, 400.0, 300.0)
    assert 0.8 * BACKOFF[0] <= attempts(seen)[0] - downs(seen)[0] <= 1.2 * BACKOFF[0]


@pytest.mark.parametrize("version", [1, 2])
def test_disconnected_and_passive_peers_are_not_retried(version: int) -> None:
    side, _ = endpoint(version)
    side.connect("peer", LOCAL, REMOTE, 0.0)
    side.disconnect("peer", 0.1)
    assert attempts(run(side, 500.0, 0.1)) == [] and side.next_timer() is None
    passive, _ = endpoint(version, passive=True)
    passive.connect("peer", LOCAL, REMOTE, 0.0)
    assert passive.pop_datagrams() == [] and passive.next_timer() is None
