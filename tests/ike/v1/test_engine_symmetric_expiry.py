"""IKEv1: an IPsec SA expiring on both sides at once (equal lifetimes, rekeys refused) is
replaced by one quick mode, not one from each side (which left two SA pairs for good); a
rekey failing too close to the expiry to be retried says so."""

from __future__ import annotations

from typing import Any

import pytest

from core.ike.events import IkeSaDown, LogMessage
from core.ike.v1 import proposals, quick
from core.ike.v1.errors import NoProposalChosen
from core.ike.v1.sa import REPLACE_WAIT
from tests.ike.v1.pair import Pair, mirror, policy
from tests.ike.v1.test_engine_rekey_failures import assert_one_pair, expired, live_children


def _refuse_quick_modes_until(monkeypatch: pytest.MonkeyPatch, pair: Pair,
                              start: float, end: float) -> list[float]:
    """Both sides answer quick modes NO-PROPOSAL-CHOSEN between `start` and `end`."""
    selector = proposals.select_esp
    refused: list[float] = []

    def select(*args: Any, **kwargs: Any) -> Any:
        if start < pair.now < end:
            refused.append(pair.now)
            raise NoProposalChosen("test: quick mode refused")
        return selector(*args, **kwargs)

    monkeypatch.setattr(quick, "select_esp", select)
    return refused


def _expiry(pair: Pair) -> float:
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None
    return min(c.expire_at for c in sa.children)


def test_simultaneous_expiry_is_replaced_by_one_sa_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = policy(dpd_interval=0, child_lifetime=600)
    pair = Pair(p, mirror(p))
    pair.connect()
    expiry = _expiry(pair)
    refused = _refuse_quick_modes_until(monkeypatch, pair, pair.now + 100, expiry - 0.001)
    pair.advance(expiry - pair.now + 20)
    assert refused
    assert expired(pair.a) and expired(pair.b)
    assert len(live_children(pair.a)) == 1 and len(live_children(pair.b)) == 1
    assert_one_pair(pair)
    pair.advance(2000)  # later rekeys find the one pair on both sides
    assert len(live_children(pair.a)) == 1 and len(live_children(pair.b)) == 1
    assert_one_pair(pair)
    assert not pair.a.of(IkeSaDown) and not pair.b.of(IkeSaDown)


def test_passive_peer_leaves_the_replacement_to_us_within_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = policy(dpd_interval=0, child_lifetime=600)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    expiry = _expiry(pair)
    _refuse_quick_modes_until(monkeypatch, pair, pair.now, expiry - 0.001)
    pair.advance(expiry - pair.now + REPLACE_WAIT + 5)
    assert len(expired(pair.a)) == 1
    assert len(live_children(pair.a)) == 1
    assert_one_pair(pair)


def test_no_time_left_to_retry_a_rekey_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    p = policy(dpd_interval=0, child_lifetime=600)
    pair = Pair(p, mirror(p, passive=True))
    pair.connect()
    expiry = _expiry(pair)
    _refuse_quick_modes_until(monkeypatch, pair, pair.now, expiry + 1)
    pair.advance(expiry - pair.now)
    notes = [e.message for e in pair.a.of(LogMessage) if "no time left" in e.message]
    assert len(notes) == 1 and "the expiry will replace it" in notes[0]
