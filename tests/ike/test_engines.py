"""IKEv1 and IKEv2 peers side by side behind one engine interface."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from core.crypto.random import SeededRandomSource
from core.ike.constants import NON_ESP_MARKER
from core.ike.engines import IkeEngines
from core.ike.events import Address, ChildSaInstalled, IkeSaUp, LogMessage
from core.ike.policy import PeerPolicy
from core.ike.v1.endpoint import Ikev1Endpoint
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


def _v1_policy(name: str, **changes: object) -> PeerPolicy:
    settings: dict[str, object] = {"ike_version": 1, "exchange_mode": "main"}
    return replace(policy(name, ike="aes256-sha256-modp2048", esp="aes256-sha256"),
                   **(settings | changes))  # type: ignore[arg-type]


def _isakmp_messages() -> list[bytes]:
    """First main and aggressive mode messages, an encrypted first message, a message for
    cookies nobody holds and a malformed one."""
    messages = []
    for mode in ("main", "aggressive"):
        initiator = Ikev1Endpoint([_v1_policy("p", exchange_mode=mode)], SeededRandomSource(9))
        initiator.connect("p", Address(A_ADDR, 500), Address(B_ADDR, 500), 1.0)
        messages.append(initiator.pop_datagrams()[0].data)
    first = messages[0]
    encrypted = first[:19] + bytes([first[19] | 1]) + first[20:]
    unknown = first[:8] + b"\x01" * 8 + first[16:]
    malformed = first[:24] + (len(first) + 1).to_bytes(4, "big") + first[28:]
    return [*messages, encrypted, unknown, malformed]


def test_ikev1_is_imported_only_with_the_first_ikev1_peer() -> None:
    script = """
import sys
from dataclasses import replace
from core.crypto.random import SeededRandomSource
from core.ike.engines import IkeEngines
from tests.ike.v2.pair import policy
engines = IkeEngines([policy("new")], SeededRandomSource(1))
assert engines.v1 is None
assert not [m for m in sys.modules if m.startswith("core.ike.v1")], "imported at start"
engines.add_peer(replace(policy("old"), ike_version=1, exchange_mode="main"))
assert engines.v1 is not None and "core.ike.v1.endpoint" in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_isakmp_without_ikev1_peers_is_answered_as_an_empty_ikev1_endpoint_would() -> None:
    engines = IkeEngines([policy("new")], SeededRandomSource(3))
    empty = Ikev1Endpoint([], SeededRandomSource(3))
    here, source = Address(B_ADDR, 500), Address(A_ADDR, 500)
    for data in _isakmp_messages():
        engines.receive(data, here, source, 1.0)
        empty.receive(data, here, source, 1.0)
        ours, theirs = engines.pop_datagrams(), empty.pop_datagrams()
        # the same answer, apart from its random message ID (octets 20-23)
        assert [(d.data[:20], d.data[24:], d.local, d.remote) for d in ours] == \
            [(d.data[:20], d.data[24:], d.local, d.remote) for d in theirs]
        assert engines.pop_events() == empty.pop_events()
    assert engines.v1 is None
    assert engines.half_open_count == 0 and engines.next_timer() is None


def test_ikev1_peer_added_later_gets_the_ikev1_endpoint() -> None:
    v1 = _v1_policy("old")
    a = IkeEngines([policy("new")], SeededRandomSource(1))
    b = IkeEngines([mirror(policy("new"), "new")], SeededRandomSource(2))
    a.receive(_isakmp_messages()[0], Address(A_ADDR, 500), Address(B_ADDR, 500), 1.0)
    assert a.pop_datagrams() and a.v1 is None  # refused: no IKEv1 peer yet
    a.add_peer(v1)
    b.add_peer(mirror(v1, "old"))
    a.connect("old", Address(A_ADDR, 500), Address(B_ADDR, 500), 2.0)
    _exchange(a, b, 2.0)
    assert any(isinstance(e, IkeSaUp) and e.info.ike_version == 1 for e in b.pop_events())
