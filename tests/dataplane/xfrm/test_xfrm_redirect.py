"""redirect.py without root: the tc and ip commands it runs, on a scripted runner."""

from __future__ import annotations

import ipaddress
import json

import pytest

from core.dataplane.model import BYPASS_MARK, TransportPeer, if_id_for
from core.dataplane.xfrm import redirect
from core.dataplane.xfrm.redirect import RedirectError, Redirects

PEER = TransportPeer(remote=ipaddress.ip_address("198.51.100.2"))


class Scripted(Redirects):
    """Answers `ip route get` with a device, tracks clsact and our filters like tc."""

    def __init__(self, device: str = "outer0") -> None:
        super().__init__(None)
        self.device = device
        self.commands: list[list[str]] = []
        self.clsact: set[str] = set()
        self.filters: dict[str, set[int]] = {}
        self.refuse: str | None = None

    def _run(self, program: str, args: list[str], *, check: bool = True) -> str:
        self.commands.append([program, *args])
        words = [word for word in args if word != "-j"]
        if self.refuse is not None and self.refuse in words:
            raise RedirectError(f"{program} refused")
        if words[:2] == ["route", "get"]:
            return json.dumps([{"dst": words[2], "dev": self.device}] if self.device else [])
        if words[:2] == ["link", "show"]:
            return json.dumps([{"ifname": name} for name in ("lo", "outer0", "outer1")])
        if words[:2] == ["qdisc", "show"]:
            return "qdisc clsact ffff:" if words[3] in self.clsact else "qdisc noqueue 0:"
        if words[:2] == ["qdisc", "add"]:
            self.clsact.add(words[3])
        if words[:2] == ["qdisc", "del"]:
            self.clsact.discard(words[3])
        if words[0] == "filter":
            prefs = self.filters.setdefault(words[3], set())
            if words[1] in ("add", "replace"):
                prefs.add(int(words[words.index("pref") + 1]))
            elif words[1] == "del":
                prefs.discard(int(words[6]))
            elif words[1] == "show":
                egress = sorted(prefs) if words[4] == "egress" else []
                return "".join(f"filter protocol all pref {pref} fw chain 0\n" for pref in egress)
        return ""


def test_filters_let_marked_packets_through_and_redirect_the_rest() -> None:
    bypass = redirect.bypass_filter("outer0")
    assert "fw" in bypass and f"{BYPASS_MARK:#x}/0xffff0000" in bypass
    peer = redirect.peer_filter("outer0", 29284, PEER.remote, "ipsec1")
    assert peer[peer.index("dst_ip") + 1] == "198.51.100.2"
    assert peer[-4:] == ["egress", "redirect", "dev", "ipsec1"]
    assert redirect.peer_pref(if_id_for(1)) == redirect.BYPASS_PREF + 2
    six = redirect.peer_filter("outer0", 29284, ipaddress.ip_address("2001:db8::2"), "ipsec1")
    assert six[six.index("protocol") + 1] == "ipv6"


def test_add_refresh_remove_leave_the_device_as_found() -> None:
    tc = Scripted()
    tc.add("ipsec1", if_id_for(1), PEER)
    tc.add("ipsec2", if_id_for(2), TransportPeer(remote=ipaddress.ip_address("198.51.100.3")))
    assert tc.clsact == {"outer0"}
    assert tc.filters["outer0"] == {redirect.BYPASS_PREF, 29284, 29285}
    tc.device = "outer1"  # the route to the peers moved
    tc.refresh("ipsec1", if_id_for(1))
    assert tc.filters["outer1"] == {redirect.BYPASS_PREF, 29284}
    assert tc.filters["outer0"] == {redirect.BYPASS_PREF, 29285}
    tc.remove("ipsec2")
    tc.remove("ipsec1")
    tc.remove("ipsec1")  # removing what is gone is fine
    assert tc.clsact == set() and not any(tc.filters.values())


def test_a_refused_filter_leaves_nothing_behind() -> None:
    tc = Scripted()
    tc.refuse = "flower"
    with pytest.raises(RedirectError):
        tc.add("ipsec1", if_id_for(1), PEER)
    assert tc.installed == {} and tc.clsact == set() and not any(tc.filters.values())


def test_remove_all_clears_a_crashed_runs_filters_only() -> None:
    tc = Scripted()
    tc.clsact = {"outer0", "outer1"}
    tc.filters = {"outer0": {redirect.BYPASS_PREF, 29284}, "outer1": {10}}
    tc.remove_all()
    assert tc.filters == {"lo": set(), "outer0": set(), "outer1": {10}}
    assert tc.clsact == {"outer1"}  # someone else's filter keeps its clsact


def test_no_route_to_the_peer_is_an_error() -> None:
    tc = Scripted()
    tc.device = ""  # `ip route get` names no device
    with pytest.raises(RedirectError, match="no route"):
        tc.add("ipsec1", if_id_for(1), PEER)
