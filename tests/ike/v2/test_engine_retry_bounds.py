"""Retries that must end: a new Child SA answered TEMPORARY_FAILURE again and again, and a
peer naming DH groups in turn with INVALID_KE_PAYLOAD, are taken as refusals (and retried
with the rekey backoff, or the tunnel re-established), never retried forever."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from core.ike.constants import DhGroup, NotifyType
from core.ike.errors import InvalidKePayload, NoProposalChosen, TemporaryFailure
from core.ike.events import ChildSaInstalled, DownReason, IkeSaDown, IkeSaRekeyed, LogMessage
from core.ike.v2.message import Message
from core.ike.v2.sa import IkeSa
from core.ike.v2.tasks import child_create, ike_rekey
from core.ike.v2.tasks.child_create import MAX_TEMPORARY_FAILURES
from core.ike.v2.tasks.common import Payloads
from tests.ike.v2.pair import B_ADDR, Pair, mirror, policy
from tests.ike.v2.test_engine_lifecycle import assert_consistent, live_children, up_pair


def _alternating_groups() -> list[DhGroup]:
    """The groups B asks for in turn: first one A did not offer (MODP_2048 is A's first)."""
    return [DhGroup.ECP_256, DhGroup.MODP_2048]


def test_replacement_answered_temporary_failure_gives_up_and_re_establishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = replace(policy(), child_lifetime=600.0)
    pair = Pair(p, replace(mirror(p), child_lifetime=6000.0))
    pair.connect()
    responder = child_create.respond_create_child
    busy: list[float] = []

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if sa.local.host == B_ADDR:
            if message.notify(NotifyType.REKEY_SA) is not None:
                raise NoProposalChosen("test: B refuses rekeys")
            busy.append(now)
            raise TemporaryFailure("test: B is busy")
        return responder(sa, message, now)

    monkeypatch.setattr(child_create, "respond_create_child", respond)
    pair.advance(3600)
    # Each IKE SA tries its replacement a bounded number of times, spaced out...
    assert 0 < len(busy) < 50
    first_tries = busy[:MAX_TEMPORARY_FAILURES]
    assert len(first_tries) == MAX_TEMPORARY_FAILURES
    gaps = [b - a for a, b in pairwise(first_tries)]
    assert gaps == sorted(gaps) and gaps[-1] > 10.0
    # ...then closes the IKE SA; IKE_AUTH brings the tunnel back with a Child SA.
    downs = pair.a.of(IkeSaDown)
    assert downs and downs[0].reason == DownReason.PROTOCOL_ERROR
    sa = pair.a.endpoint.current_sa("peer")
    assert sa is not None and sa.is_established and any(c.usable for c in sa.children)


def test_child_rekey_invalid_ke_alternating_groups_is_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = up_pair(esp="aes256gcm16-modp2048-ecp256")
    responder = child_create.respond_create_child
    groups = _alternating_groups()
    asked: list[float] = []

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if sa.local.host == B_ADDR and message.notify(NotifyType.REKEY_SA) is not None \
                and len(asked) < 10_000:
            asked.append(now)
            raise InvalidKePayload(groups[(len(asked) - 1) % 2])
        return responder(sa, message, now)

    monkeypatch.setattr(child_create, "respond_create_child", respond)
    start = pair.now
    assert pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver(rounds=400)
    assert len(asked) == 3  # ECP_256, MODP_2048, then ECP_256 named again: a refusal
    pair.advance(10)
    assert 3 < len(asked) <= 12  # retried with the rekey backoff, not at round-trip rate
    assert asked[3] >= start + 1.5
    assert live_children(pair.a)


def test_ike_rekey_invalid_ke_alternating_groups_is_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair = up_pair(ike="aes256-sha256-modp2048-ecp256")
    responder = ike_rekey.respond_ike_rekey
    groups = _alternating_groups()
    asked: list[float] = []

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if sa.local.host == B_ADDR and len(asked) < 10_000:
            asked.append(now)
            raise InvalidKePayload(groups[(len(asked) - 1) % 2])
        return responder(sa, message, now)

    monkeypatch.setattr(ike_rekey, "respond_ike_rekey", respond)
    assert pair.a.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver(rounds=400)
    assert len(asked) == 3
    assert not pair.a.of(IkeSaRekeyed) and not pair.a.of(IkeSaDown)
    assert_consistent(pair)


def test_no_time_left_to_retry_a_rekey_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    p = replace(policy(), child_lifetime=600.0)
    pair = Pair(p, replace(mirror(p), child_lifetime=6000.0))
    pair.connect()
    responder = child_create.respond_create_child

    def respond(sa: IkeSa, message: Message, now: float) -> Payloads:
        if sa.local.host == B_ADDR and message.notify(NotifyType.REKEY_SA) is not None:
            raise NoProposalChosen("test: B refuses rekeys")
        return responder(sa, message, now)

    monkeypatch.setattr(child_create, "respond_create_child", respond)
    pair.advance(640)
    notes = [e.message for e in pair.a.of(LogMessage) if "no time left" in e.message]
    assert len(notes) == 1 and "the expiry will replace it" in notes[0]
    assert len(pair.a.of(ChildSaInstalled)) == 2  # the replacement came


