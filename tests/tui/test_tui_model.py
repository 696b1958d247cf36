"""The console's pure parts: status parsing, formats, rates, events, editor helpers."""

from __future__ import annotations

import pytest

from tui import format as fmt
from tui.config_edit import Problem, apply_form, form_values, peer_at_line, preview
from tui.eventlog import EventStore, describe
from tui.fake import FakeSource
from tui.model import GLOBAL_OFF, SaTimers, parse_status
from tui.traffic import TrafficMeter
from tui.widgets.cells import lifetime_role


def test_a_real_shaped_status_parses() -> None:
    snapshot = parse_status(FakeSource(8)._cmd_status(), taken_at=5.0)
    assert len(snapshot.tunnels) == 8 and snapshot.taken_at == 5.0 and snapshot.enabled
    nat = snapshot.tunnel("branch-nat")
    assert nat is not None and nat.remote is not None
    assert str(nat.remote) == "192.0.2.77:31874" and nat.nat.remote_behind_nat
    assert nat.ike_sa is not None and nat.ike_sa.spi_i == "1000000000001111"
    assert nat.child_sas[0].encap and nat.newest_child is nat.child_sas[0]
    assert snapshot.daemon["dataplane"] == "fake"
    assert snapshot.count("up") == 4


@pytest.mark.parametrize(
    "garbage",
    [None, 3, "x", [], {}, {"peers": "no"}, {"peers": [1, "a", None]},
     {"peers": [{"name": 5, "ike_sa": [], "child_sas": {}, "traffic": "x", "dpd": 7}]},
     [{"remote": {"address": 1, "port": "x"}, "ike_version": True}]],
)  # fmt: skip
def test_garbage_never_raises(garbage: object) -> None:
    snapshot = parse_status(garbage, taken_at=0.0)
    for tunnel in snapshot.tunnels:
        assert isinstance(tunnel.name, str) and isinstance(tunnel.traffic.bytes_in, int)


def test_disabled_by_global_is_told_apart() -> None:
    peers = [{"name": "a", "state": "disabled", "enabled": True},
             {"name": "b", "state": "disabled", "enabled": False}]  # fmt: skip
    off = parse_status({"daemon": {"enabled": False}, "peers": peers}, 0.0)
    assert [t.state for t in off.tunnels] == [GLOBAL_OFF, "disabled"]
    on = parse_status({"daemon": {"enabled": True}, "peers": peers}, 0.0)
    assert [t.state for t in on.tunnels] == ["disabled", "disabled"]


def test_lifetime_fraction_and_colour_roles() -> None:
    assert SaTimers(established_ago=75.0, rekey_in=25.0).fraction_left == 0.25
    assert SaTimers(established_ago=10.0, rekey_in=None, expire_in=30.0).fraction_left == 0.75
    assert SaTimers().fraction_left is None
    assert lifetime_role(SaTimers(established_ago=100.0, rekey_in=5000.0)) == "success"
    assert lifetime_role(SaTimers(established_ago=4000.0, rekey_in=1000.0)) == "warning"
    assert lifetime_role(SaTimers(established_ago=1000.0, rekey_in=200.0)) == "warning"
    assert lifetime_role(SaTimers(established_ago=1000.0, rekey_in=50.0)) == "error"
    assert lifetime_role(SaTimers()) == "muted"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600, "1h00m"),
     (90061, "1d01h"), (-5, "-5s")],
)  # fmt: skip
def test_duration(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_sizes_rates_and_bars() -> None:
    assert [fmt.size(n) for n in (0, 999, 1000, 1234, 15_000_000)] == [
        "0B", "999B", "1.0kB", "1.2kB", "15MB",
    ]  # fmt: skip
    assert fmt.rate(None) == "-" and fmt.rate(2500.0) == "2.5kB/s"
    assert fmt.bar(1.0, 4) == "████" and fmt.bar(0.0, 4) == "····"
    assert fmt.bar(0.5, 4) == "██··" and fmt.bar(None, 3) == "   "
    assert len(fmt.bar(0.33, 5)) == 5


def test_rates_come_from_counter_deltas_and_survive_resets() -> None:
    fake = FakeSource(2, all_up=True)
    meter = TrafficMeter()
    meter.update(parse_status(fake._cmd_status(), fake.clock()))
    assert meter.rates("hq") is None
    fake.advance(2.0)
    meter.update(parse_status(fake._cmd_status(), fake.clock()))
    rates = meter.rates("hq")
    assert rates is not None and rates.bytes_in == pytest.approx(1500.0, abs=1)
    fake._runtime["hq"].bytes_in = 0.0  # the interface was re-created
    fake.advance(1.0)
    meter.update(parse_status(fake._cmd_status(), fake.clock()))
    assert meter.rates("hq") is not None and meter.rates("hq").bytes_in == 0.0  # type: ignore[union-attr]
    assert len(meter.history("hq")[0]) == 2


def test_events_become_records_with_levels_and_peers() -> None:
    down = describe({"type": "IkeSaDown", "time": "2026-11-02T10:00:01.000Z", "peer": "a",
                     "reason": "peer dead (DPD)", "detail": ""})  # fmt: skip
    assert (down.clock, down.peer, down.level) == ("10:00:01", "a", "warning")
    quiet = describe({"type": "IkeSaDown", "peer": "a", "reason": "deleted"})
    assert quiet.level == "info"
    up = describe({"type": "IkeSaUp", "info": {"peer": "b", "remote": {"address": "203.0.113.2",
                   "port": 4500}, "algorithms": "AES"}})  # fmt: skip
    assert up.peer == "b" and up.text == "IKE SA up with 203.0.113.2:4500 (AES)"
    log = describe({"type": "Log", "level": "error", "peer": None, "message": "boom"})
    assert (log.level, log.text, log.peer) == ("error", "boom", None)
    odd = describe({"type": "Future", "count": 3, "nested": {"x": 1}})
    assert odd.text == "count=3" and odd.level == "info"
    store = EventStore(limit=2)
    for record in (down, up, log):
        store.add(record)
    assert len(store) == 2 and store.for_peer("a") == []
    assert store.matching("error") == [log] and store.matching("debug", "203.0.113") == [up]


def test_problem_lines_parse() -> None:
    problem = Problem.parse("/etc/x.toml:12: peer[0].mtu: must be 576..9000")
    assert (problem.line, problem.message) == (12, "peer[0].mtu: must be 576..9000")
    assert Problem.parse("x.toml: cannot read").line is None


def test_peer_at_line_and_form_edits_keep_the_rest() -> None:
    fake = FakeSource(3)
    text = fake.text
    assert peer_at_line(text, 1) is None
    assert peer_at_line(text, 9) == "hq" and peer_at_line(text, 19) == "branch-nat"
    assert peer_at_line("oops = [", 1) is None
    old = form_values(text, "branch-nat", fake.path)
    new = dict(old, name="branch-2", mtu=1300)
    edited = apply_form(text, "branch-nat", new, old)
    assert 'name = "branch-2"' in edited and "mtu = 1300" in edited
    assert edited.count("# ") == text.count("# ")
    change = preview(text, edited, fake.path)
    assert change.added == ("branch-2",) and change.removed == ("branch-nat",)
    assert change.unchanged == ("hq", "shop-passive")
    same = preview(text, text.replace("mtu", "mtu"), fake.path)
    assert same.is_empty
    broken_saved = preview("bad = [", text, fake.path)
    assert broken_saved.added == fake.config.peer_names and "problems" in broken_saved.note
