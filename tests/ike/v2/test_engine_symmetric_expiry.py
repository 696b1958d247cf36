"""Both sides' Child SA expires at once (equal lifetimes, every rekey refused): both start
a replacement, but only the IKE SA initiator's goes through, so one SA pair results."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.ike.constants import NotifyType
from core.ike.errors import NoProposalChosen
from core.ike.v2.message import Message
from core.ike.v2.sa import IkeSa
from core.ike.v2.tasks import child_create
from core.ike.v2.tasks.common import Payloads
from tests.ike.v2.pair import Pair, mirror, policy
from tests.ike.v2.test_engine_lifecycle import assert_consistent, live_children


def _both_refuse_rekeys(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Both sides refuse Child SA rekeys while the returned switch is on."""
    responder = child_create.respond_create_child
    refusing = [True]

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if refusing[0] and message.notify(NotifyType.REKEY_SA) is not None:
            raise NoProposalChosen("test: rekeys refused")
        return responder(sa, message, now)

    monkeypatch.setattr(child_create, "respond_create_child", respond)
    return refusing


def _equal_lifetimes() -> Pair:
    p = replace(policy(), child_lifetime=600.0)
    pair = Pair(p, mirror(p))
    pair.connect()
    return pair


def test_simultaneous_expiry_leaves_one_sa_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = _equal_lifetimes()
    _both_refuse_rekeys(monkeypatch)
    (first,) = live_children(pair.a)
    pair.advance(640)
    assert len(live_children(pair.a)) == 1 and len(live_children(pair.b)) == 1
    assert first not in live_children(pair.a)
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and len(sa.children) == 1 and sa.children[0].usable
    assert_consistent(pair)


def test_one_sa_pair_stays_once_rekeys_work_again(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = _equal_lifetimes()
    refusing = _both_refuse_rekeys(monkeypatch)
    pair.advance(640)
    refusing[0] = False
    pair.advance(3000)
    assert len(live_children(pair.a)) == 1 and len(live_children(pair.b)) == 1
    assert_consistent(pair)
