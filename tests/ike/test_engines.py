"""IKEv1 and IKEv2 peers side by side behind one engine interface."""

from __future__ import annotations

from dataclasses import replace

from core.crypto.random import SeededRandomSource
from core.ike.constants import NON_ESP_MARKER
from core.ike.engines import IkeEngines
from core.ike.events import Address, ChildSaInstalled, IkeSaUp, LogMessage
from tests.ike.v2.pair import A_ADDR, B_ADDR, mirror, policy


def _exchange(a: IkeEngines, b: IkeEngines, now: float) -> None:
    for _ in range(50):
        moved = False
        for sender, receiver in ((a, b), (b, a)):
            for datagram in sender.pop_datagrams():
                moved = True
                data = datagram.data
                if data.startswith(NON_ESP_MARKER):
                    data = data[4:]
                receiver.receive(data, datagram.remote, datagram.local, now)
        if not moved:
            return


def test_v1_and_v2_peers_come_up_through_one_interface() -> None:
    v2 = policy("new")
    v1 = replace(policy("old", ike="aes256-sha256-modp2048", esp="aes256-sha256"),
                 ike_version=1, exchange_mode="main")
    a = IkeEngines([v2, v1], SeededRandomSource(1))
    b = IkeEngines([mirror(v2, "new"), mirror(v1, "old")], SeededRandomSource(2))
    now = 100.0
    for name in ("new", "old"):
        a.connect(name, Address(A_ADDR, 500), Address(B_ADDR, 500), now)
    _exchange(a, b, now)
    events = b.pop_events()
    ups = {e.info.peer: e.info for e in events if isinstance(e, IkeSaUp)}
    assert ups["new"].ike_version == 2 and ups["old"].ike_version == 1
    children = {e.info.peer for e in events if isinstance(e, ChildSaInstalled)}
    assert children == {"new", "old"}
    assert sorted(a.peer_names()) == ["new", "old"]
    sa_old, sa_new = a.current_sa("old"), a.current_sa("new")
    assert sa_old is not None and sa_new is not None and sa_old.is_established
    assert a.next_timer() is not None
    assert a.rekey("old", now) and a.rekey("new", now)
    _exchange(a, b, now)
    later = b.pop_events()
    assert {e.info.peer for e in later if isinstance(e, ChildSaInstalled)} == {"new", "old"}


def test_unknown_major_version_is_dropped_with_a_log_line() -> None:
    engines = IkeEngines([], SeededRandomSource(3))
    engines.receive(bytes(17) + b"\x30" + bytes(10), Address(B_ADDR, 500),
                    Address(A_ADDR, 500), 1.0)
    assert engines.pop_datagrams() == []
    assert any(isinstance(e, LogMessage) and "major version 3" in e.message
               for e in engines.pop_events())
