"""An operator's rekey of a passive peer is refused (False): a passive side never
initiates, the other side rekeys; the active side's rekey still works."""

from __future__ import annotations

import pytest

from tests.ike.v1 import pair as v1_pair
from tests.ike.v2 import pair as v2_pair


@pytest.mark.parametrize("ike", [False, True], ids=["child", "ike"])
def test_ikev2_passive_peer_does_not_rekey(ike: bool) -> None:
    p = v2_pair.policy()
    pair = v2_pair.Pair(p, v2_pair.mirror(p, passive=True))
    pair.connect()
    assert not pair.b.endpoint.rekey("peer", pair.now, ike=ike)
    assert pair.b.endpoint.pop_datagrams() == []
    assert pair.a.endpoint.rekey("peer", pair.now, ike=ike)


@pytest.mark.parametrize("ike", [False, True], ids=["child", "ike"])
def test_ikev1_passive_peer_does_not_rekey(ike: bool) -> None:
    p = v1_pair.policy(dpd_interval=0)
    pair = v1_pair.Pair(p, v1_pair.mirror(p, passive=True))
    pair.connect()
    assert not pair.b.endpoint.rekey("peer", pair.now, ike=ike)
    assert pair.b.endpoint.pop_datagrams() == []
    assert pair.a.endpoint.rekey("peer", pair.now, ike=ike)
