"""bypass.py without root: the rules and routes it asks for, on a fake rtnetlink socket."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from core.dataplane import bypass
from core.dataplane.model import (
    BYPASS_MARK,
    TRANSPORT_RULE_PRIORITY,
    TRANSPORT_TABLE,
    TransportPeer,
)
from core.dataplane.userspace import rtnl
from core.dataplane.userspace.rtnl import NetlinkError

T = TypeVar("T")
PEER = ipaddress.ip_address("198.51.100.2")
LOCAL = ipaddress.ip_address("198.51.100.1")
DEVICE_ROUTE = (f"{PEER}/32", rtnl.RTN_UNICAST)
GUARD = (f"{PEER}/32", rtnl.RTN_UNREACHABLE)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(autouse=True)
def marks_work(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(bypass, "marks_work", lambda: True)  # SO_MARK needs root
    yield


class FakeRtnl:
    """Keeps the routes and rules the requests make, like the kernel would.

    `fail_on` ("route-add", "route-del", "rule-add", "rule-del") makes that request fail
    from its `fail_from`-th time on (1: the first)."""

    def __init__(self, fail_on: str | None = None, fail_from: int = 1) -> None:
        self.sent: list[str] = []
        self.table: dict[tuple[str, int], tuple[rtnl.Route, bytes]] = {}  # (dst, RTN_*)
        self.rule_list: list[rtnl.Rule] = []
        self.fail_on = fail_on
        self.fail_from = fail_from

    def transact(self, messages: Sequence[rtnl.Message]) -> list[NetlinkError | None]:
        return [self._one(message) for message in messages]

    def request(self, *messages: rtnl.Message) -> None:
        for error in self.transact(messages):
            if error is not None:
                raise error

    def routes(self, family: int = socket.AF_INET, *, table: int = 0) -> list[rtnl.Route]:
        return [
            route
            for route, _body in self.table.values()
            if route.family == family and table in (0, route.table)
        ]

    def rules(self, family: int) -> list[rtnl.Rule]:
        return [rule for rule in self.rule_list if rule.family == family]

    def verbs(self, kind: str) -> list[str]:
        return [verb.split("-")[1] for verb in self.sent if verb.startswith(kind)]

    def _one(self, message: rtnl.Message) -> NetlinkError | None:
        raw = bytes(16) + message.body  # the header the parsers skip
        adding = message.kind in (rtnl.RTM_NEWROUTE, rtnl.RTM_NEWRULE)
        routing = message.kind in (rtnl.RTM_NEWROUTE, rtnl.RTM_DELROUTE)
        verb = f"{'route' if routing else 'rule'}-{'add' if adding else 'del'}"
        self.sent.append(verb)
        if verb == self.fail_on:
            self.fail_from -= 1
            if self.fail_from <= 0:
                return NetlinkError(errno.EPERM, "refused")
        if not routing:
            rule = rtnl._parse_rule(raw)
            if adding:
                self.rule_list.append(rule)
            elif rule in self.rule_list:
                self.rule_list.remove(rule)
            else:
                return NetlinkError(errno.ENOENT, "no such rule")
            return None
        route = rtnl._parse_route(raw)
        assert route is not None
        key = (f"{route.destination}/{route.prefixlen}", route.kind)
        if adding:
            self.table[key] = (route, message.body)
        elif self.table.pop(key, None) is None:
            return NetlinkError(errno.ESRCH, "no such route")
        return None

    def prefsrc(self, key: tuple[str, int]) -> bool:
        return socket.inet_aton(str(LOCAL)) in self.table[key][1]


def test_the_rule_skips_marked_packets_and_selects_our_table() -> None:
    message = bypass.rule_message(socket.AF_INET, add=True)
    rule = rtnl._parse_rule(bytes(16) + message.body)
    assert rule.table == TRANSPORT_TABLE and rule.priority == TRANSPORT_RULE_PRIORITY
    assert rule.flags & rtnl.FIB_RULE_INVERT  # "not fwmark"
    assert struct.pack("=I", BYPASS_MARK) in message.body
    assert 0 < TRANSPORT_RULE_PRIORITY <= 10  # after 'local', before an admin's rules


def test_routes_are_host_routes_with_the_outer_source() -> None:
    message = bypass.route_message(TransportPeer(remote=PEER, local=LOCAL), 7, replace=True)
    route = rtnl._parse_route(bytes(16) + message.body)
    assert route is not None and (route.destination, route.prefixlen) == ("198.51.100.2", 32)
    assert route.oif == 7 and route.table == TRANSPORT_TABLE
    assert socket.inet_aton("198.51.100.1") in message.body  # the preferred source
    six = bypass.route_message(TransportPeer(ipaddress.ip_address("2001:db8::2")), 7, replace=True)
    parsed = rtnl._parse_route(bytes(16) + six.body)
    assert parsed is not None and parsed.family == socket.AF_INET6 and parsed.prefixlen == 128
    guard = rtnl._parse_route(bytes(16) + bypass.guard_message(PEER, replace=True).body)
    assert guard is not None and guard.kind == rtnl.RTN_UNREACHABLE and guard.oif is None
    assert guard.priority == bypass.GUARD_METRIC


def test_one_rule_per_family_while_any_peer_is_protected() -> None:
    sock = FakeRtnl()
    routes = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
    run(routes.add(7, TransportPeer(remote=PEER)))
    run(routes.add(8, TransportPeer(remote=ipaddress.ip_address("203.0.113.2"))))
    assert len(sock.rule_list) == 1
    run(routes.remove(7))
    assert len(sock.rule_list) == 1  # the other peer still needs it
    run(routes.restore(8))
    run(routes.remove(8))
    assert sock.rule_list == [] and sock.table == {}
    run(routes.remove(8))  # removing what is gone is fine
    assert sock.verbs("route").count("add") == 5  # 2 x (guard + route) + the restore


def test_a_failed_add_leaves_nothing() -> None:
    sock = FakeRtnl(fail_on="route-add", fail_from=2)  # the guard, then the route fails
    routes = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
    with pytest.raises(NetlinkError):
        run(routes.add(7, TransportPeer(remote=PEER)))
    assert routes.routes == {} and sock.rule_list == [] and sock.table == {}


def test_remove_all_clears_a_crashed_runs_rules_and_table() -> None:
    sock = FakeRtnl()
    sock.request(bypass.rule_message(socket.AF_INET, add=True),
                 bypass.rule_message(socket.AF_INET, add=True, priority=29282),  # older run
                 bypass.route_message(TransportPeer(PEER), 9, replace=True),
                 bypass.guard_message(PEER, replace=True),
                 rtnl.ip_route("198.51.100.0", 24, table=254, replace=True, oif=2))  # fmt: skip
    run(bypass.TransportRoutes(sock).remove_all())  # type: ignore[arg-type]
    assert sock.rule_list == []
    assert list(sock.table) == [("198.51.100.0/24", rtnl.RTN_UNICAST)]  # not ours: stays


def test_a_new_source_for_the_same_peer_replaces_the_route_in_place() -> None:
    sock = FakeRtnl()
    routes = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
    run(routes.add(7, TransportPeer(remote=PEER)))
    sock.sent.clear()
    run(routes.add(7, TransportPeer(remote=PEER, local=LOCAL)))
    assert sock.sent == ["route-add", "route-add"]  # guard and route replaced, nothing deleted
    assert routes.routes[7].local == LOCAL and sock.prefsrc(DEVICE_ROUTE)


def test_a_failed_re_add_keeps_the_working_route_guard_and_rule() -> None:
    sock = FakeRtnl(fail_on="route-add", fail_from=4)  # 2 for the first add, then guard
    routes = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
    run(routes.add(7, TransportPeer(remote=PEER)))
    working = set(sock.table)
    with pytest.raises(NetlinkError):  # the new source's route replace is refused
        run(routes.add(7, TransportPeer(remote=PEER, local=LOCAL)))
    assert routes.routes[7] == TransportPeer(remote=PEER) and len(sock.rule_list) == 1
    assert set(sock.table) == working and not sock.prefsrc(DEVICE_ROUTE)


def test_a_failed_move_to_another_peer_address_keeps_the_old_one() -> None:
    other = TransportPeer(remote=ipaddress.ip_address("203.0.113.2"))
    sock = FakeRtnl(fail_on="route-add", fail_from=4)
    routes = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
    run(routes.add(7, TransportPeer(remote=PEER)))
    with pytest.raises(NetlinkError):
        run(routes.add(7, other))
    assert routes.routes[7].remote == PEER and len(sock.rule_list) == 1
    assert set(sock.table) == {DEVICE_ROUTE, GUARD}  # the new guard is gone again
    sock.fail_on = None
    run(routes.add(7, other))  # works on the next try: the old peer's routes go after
    assert set(sock.table) == {("203.0.113.2/32", rtnl.RTN_UNREACHABLE),
                               ("203.0.113.2/32", rtnl.RTN_UNICAST)}  # fmt: skip
    assert len(sock.rule_list) == 1


def test_transport_mode_is_refused_without_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bypass, "marks_work", lambda: False)
    sock = FakeRtnl()
    with pytest.raises(NetlinkError, match="SO_MARK"):
        run(bypass.TransportRoutes(sock).add(7, TransportPeer(remote=PEER)))  # type: ignore[arg-type]
    assert sock.sent == []


class FakeLinks:
    async def configure(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_the_userspace_backend_stores_a_transport_peer_only_once_it_is_routed() -> None:
    from core.dataplane.api import DataplaneError
    from core.dataplane.model import InterfaceSpec, if_id_for
    from core.dataplane.userspace.backend import UserspaceDataplane, _Interface

    async def scenario() -> None:
        sock = FakeRtnl(fail_on="route-add")
        backend = UserspaceDataplane()
        backend._links = FakeLinks()  # type: ignore[assignment]
        backend._transport = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
        spec = InterfaceSpec(name="ipsec1", if_id=if_id_for(1))
        backend._interfaces["ipsec1"] = interface = _Interface(spec, -1, 7)
        wanted = InterfaceSpec(name="ipsec1", if_id=if_id_for(1), transport=TransportPeer(PEER))
        with pytest.raises(DataplaneError):
            await backend.update_interface(wanted)
        assert interface.spec.transport is None
        sock.fail_on = None
        await backend.update_interface(wanted)  # the same spec again: tried again
        assert interface.spec == wanted and backend._transport.routes[7].remote == PEER

    run(scenario())


class UnmarkableSocket:
    def setsockopt(self, *args: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    def getsockname(self) -> tuple[str, int]:
        return ("0.0.0.0", 500)


def test_an_ike_socket_without_the_bypass_mark_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from core.daemon.transport import _mark_as_bypass

    with caplog.at_level("WARNING"):
        _mark_as_bypass(UnmarkableSocket())  # type: ignore[arg-type]
    assert "port 500: no bypass mark" in caplog.text


def test_a_crashed_runs_rule_and_guards_stay_until_replaced_or_stale() -> None:
    gone = ipaddress.ip_address("203.0.113.9")  # a peer of the crashed run only
    sock = FakeRtnl()
    sock.request(bypass.rule_message(socket.AF_INET, add=True),
                 bypass.guard_message(PEER, replace=True),
                 bypass.guard_message(gone, replace=True))  # fmt: skip
    routes = bypass.TransportRoutes(sock)  # type: ignore[arg-type]
    run(routes.adopt_leftovers())
    assert sock.verbs("rule") == ["add"] and sock.verbs("route") == ["add", "add"]
    run(routes.add(7, TransportPeer(remote=PEER)))
    assert "del" not in sock.verbs("rule") + sock.verbs("route")  # never a moment without
    assert len(sock.rule_list) == 1 and (f"{gone}/32", rtnl.RTN_UNREACHABLE) in sock.table
    routes._sweep_at = 0.0  # STALE_SECONDS later, the next link up sweeps
    run(routes.restore(7))
    assert set(sock.table) == {DEVICE_ROUTE, GUARD} and len(sock.rule_list) == 1
    run(routes.remove(7))
    assert sock.table == {} and sock.rule_list == []
