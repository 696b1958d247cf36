"""The in-memory FakeDataplane: state, rules, call log and test controls."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from core.dataplane.api import Dataplane, DataplaneError
from core.dataplane.fake import FakeDataplane
from core.dataplane.model import (
    DataplaneEvent,
    Direction,
    EspAlgorithm,
    ExpiryKind,
    InterfaceSpec,
    SaExpired,
    SaMode,
    SaSpec,
    TrafficWhileDown,
    TransportPeer,
    if_id_for,
)

T = TypeVar("T")
IF_ID = if_id_for(1)
NET = ipaddress.IPv4Network("10.1.0.0/16")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def sa_spec(spi: int = 0x1000, direction: Direction = Direction.OUT, key_len: int = 20) -> SaSpec:
    return SaSpec(
        spi=spi,
        direction=direction,
        src=ipaddress.IPv4Address("198.51.100.1"),
        dst=ipaddress.IPv4Address("198.51.100.2"),
        mode=SaMode.TUNNEL,
        algorithm=EspAlgorithm.AES_GCM_16,
        encryption_key=bytes(key_len),
        if_id=IF_ID,
    )


@pytest.fixture
def started() -> tuple[FakeDataplane, list[DataplaneEvent]]:
    dataplane = FakeDataplane()
    events: list[DataplaneEvent] = []
    run(dataplane.start(events.append))
    run(dataplane.create_interface(InterfaceSpec(name="ipsec1", if_id=IF_ID)))
    return dataplane, events


def test_it_satisfies_the_protocol() -> None:
    dataplane: Dataplane = FakeDataplane()
    assert dataplane.name == "fake"


def test_calls_before_start_are_refused() -> None:
    with pytest.raises(DataplaneError, match="not started"):
        run(FakeDataplane().create_interface(InterfaceSpec(name="ipsec1", if_id=IF_ID)))


def test_interface_lifecycle_and_routes(started: tuple[FakeDataplane, list[Any]]) -> None:
    dataplane, _ = started
    interface = dataplane.interfaces["ipsec1"]
    assert interface.up is False  # created down: no SA yet
    run(dataplane.set_link("ipsec1", True))
    run(dataplane.add_route("ipsec1", NET))
    run(dataplane.add_route("ipsec1", NET))
    assert interface.up and interface.routes == {NET}
    run(dataplane.update_interface(InterfaceSpec(name="ipsec1", if_id=IF_ID, mtu=1300)))
    assert dataplane.interfaces["ipsec1"].spec.mtu == 1300
    run(dataplane.delete_route("ipsec1", NET))
    run(dataplane.delete_interface("ipsec1"))
    run(dataplane.delete_interface("ipsec1"))  # deleting what is gone is fine
    assert dataplane.interfaces == {}
    assert [name for name, _ in dataplane.calls].count("add_route") == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (InterfaceSpec(name="eth0", if_id=if_id_for(2)), "names are ipsec0..ipsec63"),
        (InterfaceSpec(name="ipsec64", if_id=if_id_for(2)), "names are ipsec0..ipsec63"),
        (InterfaceSpec(name="ipsec1", if_id=if_id_for(2)), "exists already"),
        (InterfaceSpec(name="ipsec2", if_id=IF_ID), "in use"),
        (InterfaceSpec(name="ipsec2", if_id=if_id_for(2), mtu=20), "MTU"),
        (InterfaceSpec(name="ipsec2", if_id=if_id_for(2), tcp_mss=10), "MSS"),
        (
            InterfaceSpec(
                name="ipsec2",
                if_id=if_id_for(2),
                transport=TransportPeer(
                    remote=ipaddress.ip_address("2001:db8::2"),
                    local=ipaddress.ip_address("198.51.100.1"),
                ),
            ),
            "two families",
        ),
    ],
)
def test_interface_rules(
    started: tuple[FakeDataplane, list[Any]], spec: InterfaceSpec, message: str
) -> None:
    dataplane, _ = started
    with pytest.raises(DataplaneError, match=message):
        run(dataplane.create_interface(spec))
    assert set(dataplane.interfaces) == {"ipsec1"}


def test_unknown_interfaces_are_errors(started: tuple[FakeDataplane, list[Any]]) -> None:
    dataplane, _ = started
    for call in (
        dataplane.set_link("ipsec9", True),
        dataplane.add_route("ipsec9", NET),
        dataplane.interface_counters("ipsec9"),
        dataplane.update_interface(InterfaceSpec(name="ipsec9", if_id=if_id_for(9))),
    ):
        with pytest.raises(DataplaneError, match="ipsec9"):
            run(call)


def test_sas_need_a_known_if_id_and_good_keys(started: tuple[FakeDataplane, list[Any]]) -> None:
    dataplane, _ = started
    with pytest.raises(DataplaneError, match="no interface has if_id"):
        run(dataplane.add_sa(SaSpec(**{**sa_spec().__dict__, "if_id": if_id_for(7)})))
    with pytest.raises(DataplaneError, match="AES-GCM"):
        run(dataplane.add_sa(sa_spec(key_len=16)))
    run(dataplane.add_sa(sa_spec()))
    run(dataplane.add_sa(sa_spec()))  # same SPI, direction and if_id: replaced
    assert len(dataplane.sas) == 1
    run(dataplane.delete_sa(0x1000, Direction.OUT, IF_ID))
    run(dataplane.delete_sa(0x1000, Direction.OUT, IF_ID))
    with pytest.raises(DataplaneError, match="no such SA"):
        run(dataplane.sa_counters(0x1000, Direction.OUT, IF_ID))


def test_policies(started: tuple[FakeDataplane, list[Any]]) -> None:
    dataplane, _ = started
    run(dataplane.add_policies(IF_ID))
    assert dataplane.policies == {IF_ID}
    with pytest.raises(DataplaneError):
        run(dataplane.add_policies(if_id_for(5)))
    run(dataplane.delete_policies(IF_ID))
    assert dataplane.policies == set()


def test_counters_can_be_bumped(started: tuple[FakeDataplane, list[Any]]) -> None:
    dataplane, _ = started
    run(dataplane.add_sa(sa_spec()))
    dataplane.bump_sa(0x1000, Direction.OUT, IF_ID, packets=3, bytes=300, now=5.0)
    counters = run(dataplane.sa_counters(0x1000, Direction.OUT, IF_ID))
    assert (counters.packets, counters.bytes, counters.last_used) == (3, 300, 5.0)
    dataplane.bump_interface("ipsec1", rx_errors=2)
    assert run(dataplane.interface_counters("ipsec1")).rx_errors == 2
    with pytest.raises(DataplaneError, match="no such counter"):
        dataplane.bump_interface("ipsec1", nonsense=1)


def test_simulated_traffic_follows_link_and_sa_state(
    started: tuple[FakeDataplane, list[DataplaneEvent]],
) -> None:
    dataplane, events = started
    dataplane.simulate_outbound("ipsec1", packets=2)  # link down: dropped, no event
    assert run(dataplane.interface_counters("ipsec1")).tx_dropped_down == 2
    assert events == []
    run(dataplane.set_link("ipsec1", True))
    dataplane.simulate_outbound("ipsec1")  # up without SA: the rekey-gap event
    assert events == [TrafficWhileDown(if_id=IF_ID, interface="ipsec1")]
    run(dataplane.add_sa(sa_spec()))
    dataplane.simulate_outbound("ipsec1", packets=4, size=50)
    assert run(dataplane.sa_counters(0x1000, Direction.OUT, IF_ID)).bytes == 200


def test_events_injected_failures_and_stop(
    started: tuple[FakeDataplane, list[DataplaneEvent]],
) -> None:
    dataplane, events = started
    run(dataplane.add_sa(sa_spec()))
    dataplane.expire(0x1000, Direction.OUT, IF_ID, ExpiryKind.SOFT)
    assert events == [SaExpired(0x1000, Direction.OUT, ExpiryKind.SOFT, IF_ID)]
    dataplane.fail_next("add_sa", "netlink said no")
    with pytest.raises(DataplaneError, match="netlink said no"):
        run(dataplane.add_sa(sa_spec(spi=0x2000)))
    assert (0x2000, Direction.OUT, IF_ID) not in dataplane.sas
    run(dataplane.add_sa(sa_spec(spi=0x2000)))  # only the next call failed
    dataplane.handle_encapsulated_esp(b"esp", ("198.51.100.1", 4500), ("198.51.100.2", 4500))
    assert dataplane.encapsulated_received[0][0] == b"esp"
    run(dataplane.stop())
    assert not dataplane.interfaces and not dataplane.sas and not dataplane.started


def test_transport_peers_follow_the_interfaces(started: tuple[FakeDataplane, list[Any]]) -> None:
    dataplane, _ = started
    peer = ipaddress.ip_address("198.51.100.2")
    spec = InterfaceSpec(name="ipsec2", if_id=if_id_for(2), transport=TransportPeer(remote=peer))
    run(dataplane.create_interface(spec))
    assert dataplane.transport_peers() == {"ipsec2": peer}
    run(dataplane.update_interface(InterfaceSpec(name="ipsec2", if_id=if_id_for(2))))
    assert dataplane.transport_peers() == {}
    run(dataplane.update_interface(spec))
    run(dataplane.delete_interface("ipsec2"))
    assert dataplane.transport_peers() == {}
