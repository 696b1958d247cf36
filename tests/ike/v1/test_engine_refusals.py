"""Which peer a refused first phase 1 message is pinned on (its `last_error`).

Any host may send a first phase 1 message.  A refusal is reported (ExchangeFailed) on the
peers configured with the request's source address, or in aggressive mode on the one peer
configured with the identity the message carries; otherwise it is only logged, so a
scanner cannot overwrite a dynamic peer's status.
"""

from __future__ import annotations

from typing import Any

from core.crypto.random import SeededRandomSource
from core.ike.events import Address, DownReason, ExchangeFailed, IkeSaDown, IkeSaUp, LogMessage
from core.ike.policy import PeerPolicy
from core.ike.v1.endpoint import Ikev1Endpoint
from tests.ike.v1.pair import A_ADDR, B_ADDR, Pair, policy

SCANNER = "203.0.113.66"
OLD_IKE = "aes128-sha1-modp2048"


def _dynamic(name: str, remote_id: str, **changes: Any) -> PeerPolicy:
    """A peer of B's with no fixed address, known by its FQDN."""
    return policy(name, local=B_ADDR, remote=None, local_id="fqdn:b.example",
                  remote_id=remote_id, dpd_interval=0, **changes)


def _pair_against(*peers_of_b: PeerPolicy, **changes_a: Any) -> Pair:
    """A (by default dynamic, so aggressive mode, as fqdn:a.example) against B holding
    `peers_of_b`."""
    settings: dict[str, Any] = {"local": None, "local_id": "fqdn:a.example",
                                "remote_id": "fqdn:b.example", "dpd_interval": 0}
    a = policy(**(settings | changes_a))
    pair = Pair(a, peers_of_b[0])
    pair.b.endpoint = Ikev1Endpoint(list(peers_of_b), SeededRandomSource(3))
    return pair


def _connect(pair: Pair, source: str = A_ADDR) -> None:
    pair.a.endpoint.connect("peer", Address(source, 500), Address(B_ADDR, 500), pair.now)
    pair.deliver()


def _refusal_lines(pair: Pair) -> list[LogMessage]:
    return [e for e in pair.b.of(LogMessage) if "refused the" in e.message]


def test_known_identity_with_a_wrong_proposal_is_recorded_on_that_peer() -> None:
    pair = _pair_against(_dynamic("other", "fqdn:c.example"), _dynamic("peer", "fqdn:a.example"),
                         ike=OLD_IKE)
    _connect(pair)
    (refused,) = pair.b.of(ExchangeFailed)
    assert refused.peer == "peer" and refused.notify == "NO_PROPOSAL_CHOSEN"
    assert pair.a.of(IkeSaDown)[0].reason == DownReason.NO_PROPOSAL


def test_unknown_identity_is_logged_not_pinned_on_a_dynamic_peer() -> None:
    pair = _pair_against(_dynamic("one", "fqdn:c.example"), _dynamic("two", "fqdn:d.example"))
    _connect(pair)
    assert pair.b.of(ExchangeFailed) == []
    (line,) = _refusal_lines(pair)
    assert line.peer == "" and A_ADDR in line.message and "a.example" in line.message
    assert "INVALID_ID_INFORMATION" in line.message and "one, two" in line.message
    assert all(e.peer == "" for e in pair.b.of(LogMessage))
    assert pair.a.of(ExchangeFailed)[0].notify == "INVALID_ID_INFORMATION"  # still answered


def test_identity_of_two_dynamic_peers_is_logged() -> None:
    pair = _pair_against(_dynamic("one", "fqdn:a.example", ike=OLD_IKE),
                         _dynamic("two", "fqdn:a.example", ike=OLD_IKE))
    _connect(pair)
    assert pair.b.of(ExchangeFailed) == []
    assert "NO_PROPOSAL_CHOSEN" in _refusal_lines(pair)[0].message


def test_main_mode_refused_for_dynamic_peers_is_logged() -> None:
    """Main mode carries no identity in its first message: nothing to pin it on."""
    pair = _pair_against(_dynamic("peer", "fqdn:a.example"), exchange_mode="main",
                         ike=OLD_IKE)
    pair.a.endpoint.remove_peer("peer", pair.now)
    pair.a.endpoint.add_peer(policy(local=A_ADDR, local_id="fqdn:a.example",
                                    remote_id="fqdn:b.example", ike=OLD_IKE))
    _connect(pair)
    assert pair.b.of(ExchangeFailed) == []
    (line,) = _refusal_lines(pair)
    assert "main mode" in line.message and "NO_PROPOSAL_CHOSEN" in line.message
    assert pair.a.of(ExchangeFailed)[0].notify == "NO_PROPOSAL_CHOSEN"


def test_refusal_is_recorded_on_every_peer_configured_with_the_source_address() -> None:
    fixed = [policy(name, local=B_ADDR, remote=A_ADDR, local_id=B_ADDR, remote_id=A_ADDR)
             for name in ("one", "two")]
    pair = _pair_against(*fixed, local=A_ADDR, ike=OLD_IKE, exchange_mode="main")
    _connect(pair)
    refused = pair.b.of(ExchangeFailed)
    assert sorted(e.peer for e in refused) == ["one", "two"]
    assert {e.notify for e in refused} == {"NO_PROPOSAL_CHOSEN"}


def test_unknown_identity_from_a_configured_address_is_recorded_on_that_peer() -> None:
    fixed = policy(local=B_ADDR, remote=A_ADDR, local_id="fqdn:b.example",
                   remote_id="fqdn:somebody.else")
    pair = _pair_against(fixed, local=A_ADDR, exchange_mode="aggressive")
    _connect(pair)
    (refused,) = pair.b.of(ExchangeFailed)
    assert refused.peer == "peer" and refused.notify == "INVALID_ID_INFORMATION"


def test_known_identity_from_elsewhere_leaves_a_peer_that_is_up_alone() -> None:
    pair = _pair_against(_dynamic("peer", "fqdn:a.example"))
    _connect(pair)
    assert pair.b.of(IkeSaUp)
    scanner = _pair_against(_dynamic("peer", "fqdn:a.example"), ike=OLD_IKE).a.endpoint
    scanner.connect("peer", Address(SCANNER, 500), Address(B_ADDR, 500), pair.now)
    [request] = scanner.pop_datagrams()
    pair.b.endpoint.receive(request.data, Address(B_ADDR, 500), Address(SCANNER, 500),
                            pair.now)
    events = pair.b.endpoint.pop_events()
    assert not [e for e in events if isinstance(e, ExchangeFailed)]
    assert any(isinstance(e, LogMessage) and SCANNER in e.message and e.peer == ""
               for e in events)
    assert pair.b.endpoint.pop_datagrams()  # the sender is still told (NO_PROPOSAL_CHOSEN)
