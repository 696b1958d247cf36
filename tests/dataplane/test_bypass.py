"""bypass.py without root: the rule and routes it asks for, on a recording IPRoute."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from core.dataplane import bypass
from core.dataplane.model import (
    BYPASS_MARK,
    BYPASS_MASK,
    TRANSPORT_RULE_PRIORITY,
    TRANSPORT_TABLE,
    TransportPeer,
)

T = TypeVar("T")
PEER = ipaddress.ip_address("198.51.100.2")
LOCAL = ipaddress.ip_address("198.51.100.1")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Dumped(dict[str, Any]):
    """A dumped netlink message: fields by key, attributes through get_attr."""

    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class RecordingIpr:
    """Records route/rule calls and keeps the table they build, like the kernel would.

    `fail_on` makes a command fail, from its `fail_from`-th call on (1: the first)."""

    def __init__(self, fail_on: str | None = None, fail_from: int = 1) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.rules: list[dict[str, Any]] = []
        self.table: dict[tuple[str, str], dict[str, Any]] = {}  # (dst, "guard"|"dev") -> args
        self.leftover_routes: list[Dumped] = []
        self.fail_on = fail_on
        self.fail_from = fail_from

    async def route(self, command: str, **args: Any) -> list[Any]:
        self.calls.append(("route", command, args))
        if command == self.fail_on:
            self.fail_from -= 1
            if self.fail_from <= 0:
                raise NetlinkError(1, "refused")
        if command == "dump":
            return [r for r in self.leftover_routes if r["family"] == args["family"]]
        key = (args["dst"], "guard" if args.get("type") == "unreachable" else "dev")
        if command == "replace":
            self.table[key] = args
        elif command == "del":
            self.table.pop(key, None)
        return []

    async def rule(self, command: str, **args: Any) -> list[Any]:
        self.calls.append(("rule", command, args))
        if command == "add":
            self.rules.append(args)
        elif command == "del":
            self.rules.remove(args)
        elif command == "dump":
            return [
                Dumped({"table": r["table"]}, {"FRA_PRIORITY": r["priority"]})
                for r in self.rules
                if r["family"] == args["family"]
            ]
        return []

    def commands(self, kind: str) -> list[str]:
        return [command for k, command, _ in self.calls if k == kind and command != "dump"]


def test_the_rule_skips_marked_packets_and_selects_our_table() -> None:
    args = bypass.rule_args(socket.AF_INET)
    assert args["fwmark"] == BYPASS_MARK and args["fwmask"] == BYPASS_MASK
    assert args["flags"] & bypass.FIB_RULE_INVERT  # "not fwmark"
    assert args["table"] == TRANSPORT_TABLE and args["priority"] == TRANSPORT_RULE_PRIORITY
    assert 0 < TRANSPORT_RULE_PRIORITY <= 10  # after 'local', before an admin's rules


def test_routes_are_host_routes_with_the_outer_source() -> None:
    route = bypass.route_args(TransportPeer(remote=PEER, local=LOCAL), 7)
    assert route["dst"] == "198.51.100.2/32" and route["oif"] == 7
    assert route["prefsrc"] == "198.51.100.1" and route["table"] == TRANSPORT_TABLE
    six = bypass.route_args(TransportPeer(remote=ipaddress.ip_address("2001:db8::2")), 7)
    assert six["dst"] == "2001:db8::2/128" and six["family"] == socket.AF_INET6
    assert "prefsrc" not in six
    guard = bypass.guard_args(PEER)
    assert guard["type"] == "unreachable" and "oif" not in guard
    assert guard["priority"] == bypass.GUARD_METRIC


def test_one_rule_per_family_while_any_peer_is_protected() -> None:
    ipr = RecordingIpr()
    routes = bypass.TransportRoutes(ipr)
    run(routes.add(7, TransportPeer(remote=PEER)))
    run(routes.add(8, TransportPeer(remote=ipaddress.ip_address("203.0.113.2"))))
    assert len(ipr.rules) == 1
    run(routes.remove(7))
    assert len(ipr.rules) == 1  # the other peer still needs it
    run(routes.restore(8))
    run(routes.remove(8))
    assert ipr.rules == []
    run(routes.remove(8))  # removing what is gone is fine
    route_commands = ipr.commands("route")
    assert route_commands.count("replace") == 5  # 2 x (guard + route) + the restore
    assert route_commands.count("del") == 4  # 2 x (route + guard)


def test_a_failed_add_leaves_nothing() -> None:
    ipr = RecordingIpr(fail_on="replace")
    routes = bypass.TransportRoutes(ipr)
    with pytest.raises(NetlinkError):
        run(routes.add(7, TransportPeer(remote=PEER)))
    assert routes.routes == {} and ipr.rules == []


def test_remove_all_clears_a_crashed_runs_rule_and_table() -> None:
    ipr = RecordingIpr()
    ipr.rules.append(bypass.rule_args(socket.AF_INET))
    ipr.leftover_routes = [
        Dumped(
            {"family": socket.AF_INET, "dst_len": 32, "type": 1},
            {"RTA_TABLE": TRANSPORT_TABLE, "RTA_DST": "198.51.100.2", "RTA_OIF": 9},
        ),
        Dumped(
            {"family": socket.AF_INET, "dst_len": 24, "type": 1},
            {"RTA_TABLE": 254, "RTA_DST": "198.51.100.0", "RTA_OIF": 2},
        ),
    ]
    run(bypass.TransportRoutes(ipr).remove_all())
    assert ipr.rules == []
    deleted = [args for kind, command, args in ipr.calls if (kind, command) == ("route", "del")]
    assert deleted == [
        {"family": socket.AF_INET, "dst": "198.51.100.2/32", "table": TRANSPORT_TABLE,
         "type": 1, "oif": 9},
    ]  # fmt: skip


def test_a_new_source_for_the_same_peer_replaces_the_route_in_place() -> None:
    ipr = RecordingIpr()
    routes = bypass.TransportRoutes(ipr)
    run(routes.add(7, TransportPeer(remote=PEER)))
    ipr.calls.clear()
    run(routes.add(7, TransportPeer(remote=PEER, local=LOCAL)))
    assert ipr.commands("route") == ["replace", "replace"] and ipr.commands("rule") == []
    assert routes.routes[7].local == LOCAL and len(ipr.rules) == 1


def test_a_failed_re_add_keeps_the_working_route_guard_and_rule() -> None:
    ipr = RecordingIpr(fail_on="replace", fail_from=4)  # 2 for the first add, then guard
    routes = bypass.TransportRoutes(ipr)
    run(routes.add(7, TransportPeer(remote=PEER)))
    working = dict(ipr.table)
    with pytest.raises(NetlinkError):  # the new source's route replace is refused
        run(routes.add(7, TransportPeer(remote=PEER, local=LOCAL)))
    assert routes.routes[7] == TransportPeer(remote=PEER) and len(ipr.rules) == 1
    assert ipr.table.keys() == working.keys() and "prefsrc" not in ipr.table[(f"{PEER}/32", "dev")]


def test_a_failed_move_to_another_peer_address_keeps_the_old_one() -> None:
    other = TransportPeer(remote=ipaddress.ip_address("203.0.113.2"))
    ipr = RecordingIpr(fail_on="replace", fail_from=4)
    routes = bypass.TransportRoutes(ipr)
    run(routes.add(7, TransportPeer(remote=PEER)))
    working = dict(ipr.table)
    with pytest.raises(NetlinkError):
        run(routes.add(7, other))
    assert routes.routes[7].remote == PEER and len(ipr.rules) == 1
    assert ipr.table == working  # the new guard is gone again, the old routes stay
    ipr.fail_on = None
    run(routes.add(7, other))  # works on the next try: the old peer's routes go after
    assert set(ipr.table) == {("203.0.113.2/32", "guard"), ("203.0.113.2/32", "dev")}
    assert len(ipr.rules) == 1


class FakeLinks:
    async def configure(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_the_userspace_backend_stores_a_transport_peer_only_once_it_is_routed() -> None:
    from core.dataplane.api import DataplaneError
    from core.dataplane.model import InterfaceSpec, if_id_for
    from core.dataplane.userspace.backend import UserspaceDataplane, _Interface

    async def scenario() -> None:
        ipr = RecordingIpr(fail_on="replace")
        backend = UserspaceDataplane()
        backend._links = FakeLinks()  # type: ignore[assignment]
        backend._transport = bypass.TransportRoutes(ipr)
        spec = InterfaceSpec(name="ipsec1", if_id=if_id_for(1))
        backend._interfaces["ipsec1"] = interface = _Interface(spec, -1, 7)
        wanted = InterfaceSpec(name="ipsec1", if_id=if_id_for(1), transport=TransportPeer(PEER))
        with pytest.raises(DataplaneError):
            await backend.update_interface(wanted)
        assert interface.spec.transport is None
        ipr.fail_on = None
        await backend.update_interface(wanted)  # the same spec again: tried again
        assert interface.spec == wanted and backend._transport.routes[7].remote == PEER

    run(scenario())
