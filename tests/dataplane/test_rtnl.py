"""The small rtnetlink client of the userspace dataplane (rtnl.py) and LinkConfig on it.

Encoding is checked against the layouts of linux/rtnetlink.h without root; the requests
themselves run in a namespace of their own against `ip`'s view of the result (root)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.dataplane.nlframes import NLMSGHDR
from core.dataplane.userspace import rtnl
from tests.integration.netlab import python_in, scratch_namespace

REPO = Path(__file__).resolve().parents[2]


def _attributes(body: bytes, offset: int) -> dict[int, bytes]:
    return dict(rtnl._attrs(body, offset))


def test_guard_route_encodes_type_priority_protocol_and_table() -> None:
    message = rtnl.ip_route("10.8.0.0", 24, table=254, replace=True, unreachable=True,
                              priority=0xFFFFFF00, protocol=114)  # fmt: skip
    assert message.kind == rtnl.RTM_NEWROUTE
    assert message.flags == rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    family, dst_len, _, _, table, protocol, scope, kind, _ = rtnl._RTMSG.unpack_from(message.body)
    assert (family, dst_len, table, protocol, kind) == (socket.AF_INET, 24, 254, 114, 7)
    assert scope == rtnl.RT_SCOPE_UNIVERSE
    attrs = _attributes(message.body, rtnl._RTMSG.size)
    assert attrs[rtnl.RTA_DST] == socket.inet_aton("10.8.0.0")
    assert struct.unpack("=I", attrs[rtnl.RTA_PRIORITY]) == (0xFFFFFF00,)
    assert struct.unpack("=I", attrs[rtnl.RTA_TABLE]) == (254,)
    assert rtnl.RTA_OIF not in attrs


def test_device_route_is_on_link_and_its_delete_matches_any_scope() -> None:
    add = rtnl.ip_route("10.8.0.0", 24, table=254, replace=True, oif=7, prefsrc="10.1.1.1")
    delete = rtnl.ip_route("10.8.0.0", 24, table=254, replace=False, oif=7)
    assert rtnl._RTMSG.unpack_from(add.body)[6] == rtnl.RT_SCOPE_LINK
    assert rtnl._RTMSG.unpack_from(delete.body)[6] == rtnl.RT_SCOPE_NOWHERE
    assert delete.kind == rtnl.RTM_DELROUTE and delete.flags == rtnl.NLM_F_ACK
    attrs = _attributes(add.body, rtnl._RTMSG.size)
    assert struct.unpack("=I", attrs[rtnl.RTA_OIF]) == (7,)
    assert attrs[rtnl.RTA_PREFSRC] == socket.inet_aton("10.1.1.1")


def test_link_change_touches_only_what_is_asked() -> None:
    mtu_only = rtnl.set_link(3, mtu=1400)
    _, _, index, flags, change = rtnl._IFINFOMSG.unpack_from(mtu_only.body)
    assert (index, flags, change) == (3, 0, 0)
    assert _attributes(mtu_only.body, rtnl._IFINFOMSG.size) == {
        rtnl.IFLA_MTU: struct.pack("=I", 1400)
    }
    down = rtnl.set_link(3, up=False)
    assert rtnl._IFINFOMSG.unpack_from(down.body)[3:] == (0, rtnl.IFF_UP)
    up = rtnl.set_link(3, up=True)
    assert rtnl._IFINFOMSG.unpack_from(up.body)[3:] == (rtnl.IFF_UP, rtnl.IFF_UP)


def test_link_group_joined_on_set_and_deleted_whole() -> None:
    joined = rtnl.set_link(3, mtu=1400, group=0x7262)
    assert _attributes(joined.body, rtnl._IFINFOMSG.size)[rtnl.IFLA_GROUP] == \
        struct.pack("=I", 0x7262)  # fmt: skip
    whole = rtnl.delete_link_group(0x7262)
    assert whole.kind == rtnl.RTM_DELLINK and whole.flags == rtnl.NLM_F_ACK
    assert rtnl._IFINFOMSG.unpack_from(whole.body)[2] == 0  # no index: the group decides
    assert _attributes(whole.body, rtnl._IFINFOMSG.size) == {
        rtnl.IFLA_GROUP: struct.pack("=I", 0x7262)
    }


def test_truncated_attributes_end_the_walk() -> None:
    good = rtnl._attr(rtnl.IFLA_IFNAME, b"ipsec1\0")
    assert list(rtnl._attrs(good + b"\x40\x00\x03\x00abc", 0)) == [(rtnl.IFLA_IFNAME, b"ipsec1\0")]
    assert list(rtnl._attrs(b"\x02\x00", 0)) == []


def test_link_parse_reads_name_and_kind() -> None:
    info = rtnl._attr(rtnl.IFLA_INFO_KIND, b"tun\0")
    body = rtnl._IFINFOMSG.pack(0, 0, 9, 0, 0) + rtnl._attr(rtnl.IFLA_IFNAME, b"ipsec4\0")
    body += rtnl._attr(rtnl.IFLA_LINKINFO, info)
    raw = NLMSGHDR.pack(16 + len(body), rtnl.RTM_NEWLINK, 0, 1, 0) + body
    assert rtnl._parse_link(raw) == rtnl.Link(9, "ipsec4", "tun")
    grouped = body + rtnl._u32(rtnl.IFLA_GROUP, 0x7262)
    raw = NLMSGHDR.pack(16 + len(grouped), rtnl.RTM_NEWLINK, 0, 1, 0) + grouped
    assert rtnl._parse_link(raw) == rtnl.Link(9, "ipsec4", "tun", 0x7262)


# -- against the kernel, in a namespace -----------------------------------------------------
SCRIPT = r"""
import asyncio, ipaddress, json, subprocess, sys
from core.dataplane.userspace import rtnl
from core.dataplane.userspace.tun import LinkConfig, open_tun

def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

async def main():
    links = LinkConfig()
    await links.open()
    fd = open_tun("ipsec5")
    index = await links.ifindex("ipsec5")
    net = ipaddress.IPv4Network
    await links.configure(index, 1400, ipaddress.IPv4Interface("10.9.0.1/24"),
                          set_address=True, fresh=True, guard=net("10.9.0.0/24"))
    await links.set_up(index, True)
    await links.replace_routes(index, [net("10.8.0.0/24")], None)
    await links.replace_guard(net("10.8.0.0/24"))
    first = ip("-4", "route") + ip("-4", "addr", "show", "ipsec5") + ip("link", "show", "ipsec5")
    found = [await links.our_tun_links(), [str(p) for p in await links.our_guards()]]
    # a new address on an up link: its routes must survive (new address first)
    await links.configure(index, 1300, ipaddress.IPv4Interface("10.9.1.1/24"), set_address=True)
    second = ip("-4", "route") + ip("-4", "addr", "show", "ipsec5")
    await links.delete_route(index, net("10.8.0.0/24"))
    await links.delete_guards([net("10.8.0.0/24"), net("10.7.0.0/24")])  # 10.7: never there
    try:
        await links.delete_guard(net("10.7.0.0/24"))
        refused = None
    except OSError as error:
        refused = error.errno
    third = ip("-4", "route")
    missing = rtnl.ip_route("10.254.254.0", 24, table=254, replace=False, unreachable=True,
                              priority=0xFFFFFF00)
    outcomes = [error.errno if error else None for error in links._socket.transact(
        [missing, rtnl.set_link(index, mtu=1280), rtnl.set_link(0x7FFFFFF0, mtu=1400)])]
    for index, _ in await links.our_tun_links():
        await links.delete_link(index)
    print(json.dumps([first, found, second, refused, third, outcomes, ip("link")]))

asyncio.run(main())
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    with scratch_namespace("rbrtnl") as name:
        yield name


@pytest.mark.root
@pytest.mark.netns
def test_link_config_against_the_kernel(namespace: str) -> None:
    first, found, second, refused, third, outcomes, links_left = python_in(namespace, SCRIPT)
    assert "10.8.0.0/24 dev ipsec5 proto 114 scope link" in first
    assert "unreachable 10.8.0.0/24 proto 114 metric 4294967040" in first
    assert "unreachable 10.9.0.0/24 proto 114 metric 4294967040" in first
    assert "inet 10.9.0.1/24" in first and "mtu 1400" in first and ",UP," in first
    assert found == [[[found[0][0][0], "ipsec5"]], ["10.8.0.0/24", "10.9.0.0/24"]]
    assert "10.8.0.0/24 dev ipsec5" in second and "inet 10.9.1.1/24" in second
    assert "10.9.0.1" not in second
    assert refused == 3  # ESRCH: a single delete of a missing guard is an error
    assert "10.8.0.0/24" not in third
    assert outcomes == [3, None, 19]  # each request's own answer: ESRCH, done, ENODEV
    assert "ipsec5" not in links_left


def test_ipv6_route_and_fwmark_rule_encode() -> None:
    route = rtnl.ip_route("2001:db8::1", 128, table=29282, replace=True, oif=4,
                          protocol=114, prefsrc="2001:db8::2")  # fmt: skip
    fields = rtnl._RTMSG.unpack_from(route.body)
    assert (fields[0], fields[1], fields[4]) == (socket.AF_INET6, 128, 252)  # RT_TABLE_COMPAT
    attrs = _attributes(route.body, rtnl._RTMSG.size)
    assert attrs[rtnl.RTA_DST] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert struct.unpack("=I", attrs[rtnl.RTA_TABLE]) == (29282,)
    rule = rtnl.fwmark_rule(socket.AF_INET, table=29282, priority=29282, fwmark=0x72620000,
                            fwmask=0xFFFF0000, invert=True, add=True)  # fmt: skip
    assert rule.kind == rtnl.RTM_NEWRULE
    header = rtnl._FIB_RULE_HDR.unpack_from(rule.body)
    assert (header[0], header[7], header[8]) == (socket.AF_INET, 1, rtnl.FIB_RULE_INVERT)
    attrs = _attributes(rule.body, rtnl._FIB_RULE_HDR.size)
    assert struct.unpack("=I", attrs[rtnl.FRA_FWMARK]) == (0x72620000,)
    assert struct.unpack("=I", attrs[rtnl.FRA_FWMASK]) == (0xFFFF0000,)
    raw = NLMSGHDR.pack(16 + len(rule.body), rtnl.RTM_NEWRULE, 0, 1, 0) + rule.body
    assert rtnl._parse_rule(raw) == rtnl.Rule(socket.AF_INET, 29282, 29282, 2)


RULES_SCRIPT = r"""
import json, socket, subprocess
from core.dataplane.userspace import rtnl

def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

sock = rtnl.RtnlSocket()
rule = dict(table=29282, priority=29282, fwmark=0x72620000, fwmask=0xFFFF0000, invert=True)
sock.request(rtnl.fwmark_rule(socket.AF_INET, add=True, **rule),
             rtnl.ip_route("2001:db8::1", 128, table=29282, replace=True, unreachable=True,
                           priority=0xFFFFFF00, protocol=114))
shown = [ip("-4", "rule"), ip("-6", "route", "show", "table", "29282")]
found = [[r.table, r.priority, r.flags] for r in sock.rules(socket.AF_INET) if r.table == 29282]
routes = [[r.destination, r.prefixlen, r.table, r.protocol]
          for r in sock.routes(socket.AF_INET6) if r.table == 29282]
sock.request(rtnl.fwmark_rule(socket.AF_INET, add=False, **rule),
             rtnl.ip_route("2001:db8::1", 128, table=29282, replace=False, unreachable=True,
                           priority=0xFFFFFF00))
left = [ip("-4", "rule"), ip("-6", "route", "show", "table", "29282")]
print(json.dumps([shown, found, routes, left]))
"""


@pytest.mark.root
@pytest.mark.netns
def test_rules_and_ipv6_routes_against_the_kernel(namespace: str) -> None:
    shown, found, routes, left = python_in(namespace, RULES_SCRIPT)
    assert "29282:\tnot from all fwmark 0x72620000/0xffff0000 lookup 29282" in shown[0]
    assert "unreachable 2001:db8::1 dev lo proto 114 metric 4294967040" in shown[1]
    assert found == [[29282, 29282, 2]]
    assert routes == [["2001:db8::1", 128, 29282, 114]]
    assert "29282" not in left[0] and left[1] == ""


SAME_SUBNET_SCRIPT = r"""
import asyncio, ipaddress, json, subprocess
from core.dataplane.userspace.tun import LinkConfig, open_tun

def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

async def main():
    links = LinkConfig()
    await links.open()
    fd = open_tun("ipsec6")
    index = await links.ifindex("ipsec6")
    net = ipaddress.IPv4Network
    await links.configure(index, 1400, ipaddress.IPv4Interface("10.9.0.1/24"),
                          set_address=True, fresh=True, guard=net("10.9.0.0/24"))
    await links.set_up(index, True)
    await links.replace_routes(index, [net("10.8.0.0/24")], None)
    # the new address in the same subnet: added as a secondary of the old one
    await links.configure(index, 1400, ipaddress.IPv4Interface("10.9.0.2/24"), set_address=True)
    after = ip("-4", "addr", "show", "ipsec6") + ip("-4", "route")
    for index, _ in await links.our_tun_links():
        await links.delete_link(index)
    print(json.dumps(after))

asyncio.run(main())
"""


@pytest.mark.root
@pytest.mark.netns
def test_new_address_in_the_same_subnet_keeps_address_and_routes(namespace: str) -> None:
    after = python_in(namespace, SAME_SUBNET_SCRIPT)
    assert "inet 10.9.0.2/24" in after and "10.9.0.1" not in after
    assert "10.8.0.0/24 dev ipsec6" in after  # not flushed with the old primary address


BIG_BATCH_SCRIPT = r"""
import json, subprocess
from core.dataplane.userspace import rtnl

sock = rtnl.RtnlSocket()
messages = [rtnl.ip_route(f"10.{n >> 8}.{n & 255}.0", 24, table=254, replace=True,
                          unreachable=True, priority=0xFFFFFF00, protocol=114)
            for n in range(1000)]
outcomes = sock.transact(messages)
count = len(subprocess.run(["ip", "-4", "route", "show", "proto", "114"], capture_output=True,
                           text=True, check=True).stdout.splitlines())
# then 1000 deletes, every other one of a route that is not there
deletes = [rtnl.ip_route(f"10.{n >> 8}.{n & 255}.0", 24 if n % 2 else 25, table=254,
                         replace=False, unreachable=True, priority=0xFFFFFF00)
           for n in range(1000)]
second = sock.transact(deletes)
try:
    sock.request(*deletes)
    refused = None
except rtnl.NetlinkError as error:
    refused = error.errno
print(json.dumps([[e is None for e in outcomes].count(True), len(outcomes), count,
                  [e.errno if e else None for e in second][:4], len(second), refused]))
"""


@pytest.mark.root
@pytest.mark.netns
def test_a_batch_of_1000_requests_is_answered_request_by_request(namespace: str) -> None:
    done, total, installed, first_deletes, deletes, refused = python_in(namespace, BIG_BATCH_SCRIPT)
    assert (done, total, installed) == (1000, 1000, 1000)
    assert first_deletes == [3, None, 3, None] and deletes == 1000
    assert refused == 3  # ESRCH: the first failure of the batch, as a NetlinkError


class _OverflowingSocket:
    """Takes every datagram; its first read fails as an overflowed netlink socket does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        raise OSError(105, "No buffer space available")

    def close(self) -> None:
        pass


def test_socket_overflow_is_a_netlink_error_and_batches_are_bounded() -> None:
    sock = rtnl.RtnlSocket()
    sock.close()
    fake = _OverflowingSocket()
    sock._sock = fake  # type: ignore[assignment]
    messages = [rtnl.set_link(3, mtu=1400)] * 300
    with pytest.raises(rtnl.NetlinkError) as raised:
        sock.transact(messages)
    assert raised.value.errno == 105 and "receive buffer" in str(raised.value)
    assert len(fake.sent) == 1  # the first datagram only: its answers were never read
    count = len(fake.sent[0]) // (NLMSGHDR.size + len(messages[0].body))
    assert count == rtnl.BATCH_SIZE <= 64


def test_sequence_numbers_stay_within_32_bits() -> None:
    sock = rtnl.RtnlSocket()
    sock.close()
    sock._seq = 0xFFFFFFFE
    assert [sock._next_seq() for _ in range(3)] == [0xFFFFFFFF, 1, 2]


FILTERED_SCRIPT = r"""
import asyncio, ipaddress, json, socket, subprocess
from core.dataplane.userspace import rtnl
from core.dataplane.userspace.tun import LinkConfig

commands = ["link add veth0 type veth peer name veth1", "link set veth1 up",
            "link set veth0 up", "addr add 198.51.100.1/24 dev veth0",
            "route add default via 198.51.100.254"]
commands += [f"route add 172.{16 + n // 256}.{n % 256}.0/24 via 198.51.100.254"
             for n in range(3000)]  # someone else's routes (a BGP table, in small)
commands += ["route add unreachable 10.9.0.0/24 proto 114 metric 4294967040",
             "route add unreachable 10.7.0.0/24 proto 115 metric 4294967040",
             "route add unreachable 10.6.0.0/24 proto 114 metric 4294967040 table 100"]
subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True)

async def main():
    links = LinkConfig()
    await links.open()
    guards = [str(prefix) for prefix in await links.our_guards()]
    sock = links._socket
    filtered = sock.kernel_filtered
    everything = len(sock.routes())
    default = sock.lookup_route("255.255.255.254")
    specific = sock.lookup_route("172.16.1.1")
    print(json.dumps([guards, filtered, everything, [default.prefixlen, default.oif],
                      [specific.destination, specific.prefixlen],
                      socket.if_nametoindex("veth0")]))

asyncio.run(main())
"""


@pytest.mark.root
@pytest.mark.netns
def test_guards_are_found_by_a_filtered_dump_and_routes_by_a_look_up(namespace: str) -> None:
    guards, filtered, everything, default, specific, veth0 = python_in(namespace, FILTERED_SCRIPT)
    assert guards == ["10.9.0.0/24"]  # not another protocol's, not another table's
    assert filtered  # the kernel sent only the matching routes
    assert everything > 3000
    assert default == [0, veth0]
    assert specific == ["172.16.1.0", 24]


GROUP_SCRIPT = r"""
import asyncio, json, os, subprocess
from core.dataplane.userspace.tun import LINK_GROUP, LinkConfig, open_tun

def names():
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())

async def main():
    links = LinkConfig()
    await links.open()
    fds = [open_tun(f"ipsec{n}") for n in (1, 2, 3)]
    for n in (1, 2, 3):
        await links.configure(await links.ifindex(f"ipsec{n}"), 1400, None, set_address=False,
                              fresh=True)
    subprocess.run(["ip", "link", "add", "other0", "type", "veth", "peer", "name", "other1"],
                   check=True)
    subprocess.run(["ip", "link", "set", "other0", "group", str(LINK_GROUP)], check=True)
    with_stranger = [await links.delete_our_links(), names()]  # other0 is in the group too
    subprocess.run(["ip", "link", "set", "other0", "group", "default"], check=True)
    ours_only = [await links.delete_our_links(), names()]
    for fd in fds:
        os.close(fd)  # the devices are gone already: nothing to wait for
    print(json.dumps([with_stranger, ours_only, await links.delete_our_links()]))

asyncio.run(main())
"""


@pytest.mark.root
@pytest.mark.netns
def test_our_link_group_goes_in_one_request_and_only_when_it_holds_ours_alone(
    namespace: str,
) -> None:
    with_stranger, ours_only, again = python_in(namespace, GROUP_SCRIPT)
    assert with_stranger == [False, ["ipsec1", "ipsec2", "ipsec3", "lo", "other0", "other1"]]
    assert ours_only == [True, ["lo", "other0", "other1"]]  # gone, their fds still open
    assert again is False  # nothing left in the group
