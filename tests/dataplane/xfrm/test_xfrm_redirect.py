"""redirect.py without root: the tc and ip commands it runs, on a scripted runner."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json

import pytest

from core.dataplane.api import DataplaneError
from core.dataplane.model import BYPASS_MARK, InterfaceSpec, TransportPeer, if_id_for
from core.dataplane.xfrm import backend as backend_module
from core.dataplane.xfrm import redirect
from core.dataplane.xfrm.backend import XfrmDataplane
from core.dataplane.xfrm.linkwatch import EVERY_DEVICE
from core.dataplane.xfrm.redirect import Redirect, RedirectError, Redirects

PEER = TransportPeer(remote=ipaddress.ip_address("198.51.100.2"))
OTHER = TransportPeer(remote=ipaddress.ip_address("198.51.100.3"))
PEER_PREF = redirect.peer_pref(if_id_for(1))

# What tc 6.1 prints for our two kinds of filters (and one of someone else's).
SHOWN = {
    "bypass": (
        "filter protocol all pref 29282 fw chain 0 \n"
        "filter protocol all pref 29282 fw chain 0 handle 0x72620000/0xffff0000 \n"
        "\taction order 1: gact action pass\n"
    ),
    "redirect": (
        "filter protocol ip pref {pref} flower chain 0 \n"
        "filter protocol ip pref {pref} flower chain 0 handle 0x1 \n"
        "  eth_type ipv4\n  dst_ip {peer}\n  not_in_hw\n"
        "\taction order 1: mirred (Egress Redirect to device {interface}) stolen\n"
    ),
    "foreign": (
        "filter protocol ip pref {pref} flower chain 0 handle 0x1 \n"
        "  dst_ip 192.0.2.9\n\taction order 1: gact action drop\n"
    ),
}


class Scripted(Redirects):
    """Plays ip and tc (batch included): devices, clsact qdiscs and filters by pref."""

    def __init__(self, devices: tuple[str, ...] = ("lo", "outer0", "ipsec1")) -> None:
        super().__init__(None)
        self._marks_checked = True  # SO_MARK needs root (tested below)
        self.links = list(devices)
        self.commands: list[str] = []
        self.clsact: set[str] = set()
        self.filters: dict[str, dict[int, str]] = {}  # device -> pref -> shown text
        self.refuse: str | None = None  # a word that makes a tc command fail
        self.route_device = "outer0"  # where `ip route get` says traffic to a peer goes

    def _run(
        self, program: str, args: list[str], *, stdin: str | None = None
    ) -> tuple[int, str, str]:
        if args == ["-force", "-batch", "-"]:
            assert stdin is not None
            errors = []
            for number, line in enumerate(stdin.splitlines(), 1):
                if not self._tc(line.split()):
                    errors.append(f"Error: refused.\nCommand failed -:{number}\n")
            return (1 if errors else 0), "", "".join(errors)
        words = [word for word in args if word != "-j"]
        self.commands.append(" ".join([program, *words]))
        if words[:2] == ["link", "show"]:
            return 0, json.dumps([{"ifname": name} for name in self.links]), ""
        if words[:2] == ["route", "get"]:
            return 0, json.dumps([{"dst": words[2], "dev": self.route_device}]), ""
        if words[:2] == ["qdisc", "show"]:
            return 0, json.dumps([{"kind": "clsact", "dev": dev} for dev in self.clsact]), ""
        if words[:2] == ["filter", "show"]:
            found = self.filters.get(words[3], {}) if words[4] == "egress" else {}
            return 0, "".join(found[pref] for pref in sorted(found)), ""
        raise AssertionError(f"unexpected {program} {args}")

    def _tc(self, words: list[str]) -> bool:
        self.commands.append("tc " + " ".join(words))
        device = words[3]
        if (self.refuse is not None and self.refuse in words) or device not in self.links:
            return False
        if words[:2] == ["qdisc", "add"]:
            self.clsact.add(device)
        elif words[:2] == ["qdisc", "del"]:
            self.clsact.discard(device)
            self.filters.pop(device, None)
        elif words[1] == "replace" and device in self.clsact:
            pref = int(words[words.index("pref") + 1])
            if "fw" in words:
                shown = SHOWN["bypass"]
            else:
                interface = words[-1]
                shown = SHOWN["redirect"].format(pref=pref, peer=words[13], interface=interface)
            self.filters.setdefault(device, {})[pref] = shown
        elif words[1] == "del":
            return self.filters.get(device, {}).pop(int(words[6]), None) is not None
        else:
            return False
        return True

    def prefs(self, device: str) -> set[int]:
        return set(self.filters.get(device, {}))

    def peer_on(self, device: str, pref: int = PEER_PREF) -> str:
        return self.filters[device][pref].split("dst_ip ")[1].split()[0]


def test_filters_let_marked_packets_through_and_redirect_the_rest() -> None:
    bypass = redirect.bypass_filter("outer0").split()
    assert "fw" in bypass and f"{BYPASS_MARK:#x}/0xffff0000" in bypass
    assert bypass[:2] == ["filter", "replace"]
    peer = redirect.peer_filter("outer0", Redirect("ipsec1", PEER.remote, 29284)).split()
    assert peer[:2] == ["filter", "replace"] and "handle" in peer  # swapped atomically
    assert peer[peer.index("dst_ip") + 1] == "198.51.100.2"
    assert peer[-4:] == ["egress", "redirect", "dev", "ipsec1"]
    assert redirect.peer_pref(if_id_for(1)) == redirect.BYPASS_PREF + 2
    six = Redirect("ipsec1", ipaddress.ip_address("2001:db8::2"), 29284)
    assert redirect.peer_filter("outer0", six).split()[8] == "ipv6"


def test_the_redirect_goes_on_every_device_but_lo_and_ipsec() -> None:
    tc = Scripted(("lo", "outer0", "outer1", "ipsec1", "ipsec2"))
    tc.add("ipsec1", if_id_for(1), PEER)
    assert tc.clsact == {"outer0", "outer1"}
    assert tc.prefs("outer0") == tc.prefs("outer1") == {redirect.BYPASS_PREF, PEER_PREF}
    tc.links.append("wwan0")  # a device that appears later: covered at the next refresh
    tc.refresh("ipsec1")
    assert tc.prefs("wwan0") == {redirect.BYPASS_PREF, PEER_PREF}


def test_cover_puts_the_redirects_onto_devices_that_appear_or_come_back() -> None:
    tc = Scripted(("lo", "outer0", "ipsec1"))
    tc.cover({"outer0"})  # no redirect wanted: nothing to do
    assert tc.commands == []
    tc.add("ipsec1", if_id_for(1), PEER)
    ran = len(tc.commands)
    tc.cover({"lo", "ipsec1", "ipsec7"})  # never covered: no work
    assert len(tc.commands) == ran
    tc.links.append("wwan0")
    tc.cover({"wwan0"})
    assert tc.prefs("wwan0") == {redirect.BYPASS_PREF, PEER_PREF}
    # wwan0 reconnects: a new device by the same name, without our filters or clsact
    del tc.filters["wwan0"]
    tc.clsact.discard("wwan0")
    tc.cover({"wwan0"})
    assert tc.prefs("wwan0") == {redirect.BYPASS_PREF, PEER_PREF} and "wwan0" in tc.clsact
    tc.links.append("vlan9")
    tc.cover(set(), every=True)  # events were lost: every device is looked at
    assert tc.prefs("vlan9") == {redirect.BYPASS_PREF, PEER_PREF}


class HeardOf:
    """A LinkWatch that has heard of the given devices."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def drain(self) -> set[str]:
        names, self.names = self.names, set()
        return names


def hear_of(tc: Scripted, *names: str) -> None:
    """A started kernel backend on `tc` (peer redirect wanted on ipsec1, a new device
    wwan0) hears link events naming `names` and covers them."""
    backend = XfrmDataplane()
    backend._xfrm = object()  # type: ignore[assignment]  # "started"
    backend._redirects = tc
    tc.add("ipsec1", if_id_for(1), PEER)
    tc.links.append("wwan0")

    async def hear() -> None:
        backend._loop = asyncio.get_running_loop()
        backend._link_watch = HeardOf(*names)  # type: ignore[assignment]
        backend._read_link_events()
        assert backend._covering is not None
        await backend._covering

    asyncio.run(hear())


def test_the_kernel_backend_covers_a_device_as_soon_as_it_hears_of_it() -> None:
    tc = Scripted()
    hear_of(tc, "wwan0")
    assert tc.peer_on("wwan0") == "198.51.100.2"


def test_the_kernel_backend_looks_at_every_device_when_link_events_were_lost() -> None:
    tc = Scripted()
    hear_of(tc, EVERY_DEVICE)
    assert tc.peer_on("wwan0") == "198.51.100.2"


def test_a_failed_cover_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_module, "COVER_RETRY_SECONDS", 0.0)

    class RefusingWwan0Once(Scripted):
        refusals = 0

        def _tc(self, words: list[str]) -> bool:
            if words[3] == "wwan0" and "flower" in words and not self.refusals:
                self.refusals += 1
                return False
            return super()._tc(words)

    tc = RefusingWwan0Once()
    tc.route_device = "wwan0"  # refused where the traffic goes: an error
    hear_of(tc, "wwan0")
    assert tc.refusals == 1 and tc.peer_on("wwan0") == "198.51.100.2"


def test_add_refresh_remove_leave_the_devices_as_found() -> None:
    tc = Scripted(("lo", "outer0", "outer1"))
    tc.clsact.add("outer1")  # someone else's clsact: it stays
    tc.add("ipsec1", if_id_for(1), PEER)
    tc.add("ipsec2", if_id_for(2), OTHER)
    assert tc.prefs("outer0") == {redirect.BYPASS_PREF, PEER_PREF, PEER_PREF + 1}
    tc.remove("ipsec2")
    tc.remove("ipsec1")
    tc.remove("ipsec1")  # removing what is gone is fine
    assert tc.clsact == {"outer1"} and not tc.prefs("outer0") and not tc.prefs("outer1")


def test_a_new_peer_address_replaces_the_filter_in_place() -> None:
    tc = Scripted()
    tc.add("ipsec1", if_id_for(1), PEER)
    tc.commands.clear()
    tc.add("ipsec1", if_id_for(1), OTHER)
    assert not any(" del " in command for command in tc.commands)  # never without one
    assert tc.peer_on("outer0") == "198.51.100.3"


def test_a_refused_filter_keeps_the_old_redirect_and_is_retried() -> None:
    tc = Scripted()
    tc.add("ipsec1", if_id_for(1), PEER)
    tc.refuse = "198.51.100.3"
    with pytest.raises(RedirectError):
        tc.add("ipsec1", if_id_for(1), OTHER)
    assert tc.peer_on("outer0") == "198.51.100.2"  # the working redirect stays
    assert tc.wanted["ipsec1"].peer == PEER.remote
    tc.refuse = None
    tc.filters["outer0"].pop(PEER_PREF)  # lost somehow: the refresh puts it back
    tc.refresh("ipsec1")
    assert tc.peer_on("outer0") == "198.51.100.2"


def test_a_refused_first_filter_is_retried_by_refresh() -> None:
    tc = Scripted()
    tc.refuse = "flower"
    with pytest.raises(RedirectError):
        tc.add("ipsec1", if_id_for(1), PEER)
    assert "ipsec1" not in tc.wanted and PEER_PREF not in tc.prefs("outer0")
    tc.refuse = None
    tc.add("ipsec1", if_id_for(1), PEER)
    assert tc.peer_on("outer0") == "198.51.100.2"


def test_a_refusing_device_fails_the_redirect_only_where_the_peer_is_routed() -> None:
    tc = Scripted(("lo", "outer0", "odd0"))
    tc.refuse = "odd0"  # e.g. a device that takes no qdisc
    tc.add("ipsec1", if_id_for(1), PEER)  # a warning: the traffic goes by outer0
    assert tc.peer_on("outer0") == "198.51.100.2"
    tc.route_device = "odd0"
    with pytest.raises(RedirectError):
        tc.refresh("ipsec1")


def test_our_filters_are_told_from_others_whatever_tc_prints_first() -> None:
    shown = SHOWN["bypass"].replace("filter ", "filter parent ffff:fff3 ")
    assert redirect.our_filters(shown) == {redirect.BYPASS_PREF: "all"}
    assert redirect.our_filters(SHOWN["foreign"].format(pref=29284)) == {}


def test_a_device_that_vanished_meanwhile_is_no_error() -> None:
    class Vanishing(Scripted):
        def _tc(self, words: list[str]) -> bool:
            if words[3] == "veth9" and "veth9" in self.links:
                self.links.remove("veth9")  # gone between the listing and tc
            return super()._tc(words)

    tc = Vanishing(("lo", "outer0", "veth9"))
    tc.add("ipsec1", if_id_for(1), PEER)
    assert tc.peer_on("outer0") == "198.51.100.2"


def test_remove_all_clears_a_crashed_runs_filters_only() -> None:
    tc = Scripted(("lo", "outer0", "outer1"))
    tc.clsact = {"outer0", "outer1"}
    tc.filters = {
        "outer0": {
            redirect.BYPASS_PREF: SHOWN["bypass"],
            29284: SHOWN["redirect"].format(pref=29284, peer="198.51.100.2", interface="ipsec1"),
        },
        "outer1": {
            29285: SHOWN["foreign"].format(pref=29285),
            10: SHOWN["foreign"].format(pref=10),
        },
    }
    tc.remove_all()
    assert tc.prefs("outer0") == set()
    assert tc.prefs("outer1") == {10, 29285}  # in our range, but not ours
    assert tc.clsact == {"outer0", "outer1"}  # clsacts this run did not add stay


def test_at_start_a_crashed_runs_redirects_stay_until_replaced() -> None:
    tc = Scripted(("lo", "outer0"))
    tc.clsact = {"outer0"}
    left = SHOWN["redirect"].format(pref=PEER_PREF, peer="198.51.100.2", interface="ipsec1")
    gone = SHOWN["redirect"].format(pref=PEER_PREF + 5, peer="198.51.100.9", interface="ipsec6")
    tc.filters = {"outer0": {redirect.BYPASS_PREF: SHOWN["bypass"], PEER_PREF: left,
                             PEER_PREF + 5: gone}}  # fmt: skip
    tc.adopt_leftovers()
    assert tc.prefs("outer0") == {redirect.BYPASS_PREF, PEER_PREF, PEER_PREF + 5}
    tc.add("ipsec1", if_id_for(1), PEER)
    assert not any(" del " in command for command in tc.commands)
    assert tc.stale == {("outer0", PEER_PREF + 5): "ip"}
    tc._sweep_at = 0.0  # STALE_SECONDS later: what no interface took over goes
    tc.refresh("ipsec1")
    assert tc.prefs("outer0") == {redirect.BYPASS_PREF, PEER_PREF}
    tc.remove_all()
    assert tc.prefs("outer0") == set()


def test_no_device_is_an_error() -> None:
    tc = Scripted(("lo", "ipsec1"))
    with pytest.raises(RedirectError, match="no device"):
        tc.add("ipsec1", if_id_for(1), PEER)


class FakeInterfaces:
    def __init__(self, spec: InterfaceSpec) -> None:
        self.specs = {spec.name: spec}

    def spec(self, name: str) -> InterfaceSpec:
        return self.specs[name]

    def update(self, spec: InterfaceSpec) -> None:
        self.specs[spec.name] = spec


def test_the_kernel_backend_stores_a_transport_peer_only_once_it_is_redirected() -> None:
    backend = XfrmDataplane()
    backend._xfrm = object()  # type: ignore[assignment]  # "started"
    backend._redirects = tc = Scripted()
    spec = InterfaceSpec(name="ipsec1", if_id=if_id_for(1))
    backend._interfaces = interfaces = FakeInterfaces(spec)  # type: ignore[assignment]
    wanted = dataclasses.replace(spec, transport=PEER)
    tc.refuse = "flower"
    with pytest.raises(DataplaneError):
        asyncio.run(backend.update_interface(wanted))
    assert interfaces.specs["ipsec1"].transport is None
    tc.refuse = None
    asyncio.run(backend.update_interface(wanted))  # the same spec again: tried again
    assert interfaces.specs["ipsec1"] == wanted and tc.peer_on("outer0") == "198.51.100.2"


def test_transport_mode_is_refused_without_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redirect, "marks_work", lambda: False)
    tc = Scripted()
    tc._marks_checked = False
    with pytest.raises(RedirectError, match="SO_MARK"):
        tc.add("ipsec1", if_id_for(1), PEER)
    assert tc.commands == []
