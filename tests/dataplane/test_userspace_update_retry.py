"""update_interface retried after a failed step: the old address's guard route, removed by
the first try, is already gone the second time, which is no error.  No root: the
backend's rtnetlink calls go to a fake."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
from typing import Any

from core.dataplane.api import DataplaneError
from core.dataplane.model import InterfaceSpec, if_id_for
from core.dataplane.userspace.backend import UserspaceDataplane, _Interface
from core.dataplane.userspace.rtnl import NetlinkError

Network = ipaddress.IPv4Network


class FakeLinks:
    """Guards as a set; `configure` fails while `fail_configure` is set."""

    def __init__(self, guards: set[Network]) -> None:
        self.guards = guards
        self.fail_configure = True

    async def delete_guard(self, prefix: Network) -> None:
        if prefix not in self.guards:
            raise NetlinkError(errno.ESRCH, "No such process")
        self.guards.discard(prefix)

    async def delete_guards(self, prefixes: Any) -> None:
        self.guards.difference_update(prefixes)

    async def configure(self, index: int, mtu: int, address: Any, *, set_address: bool,
                        fresh: bool = False, guard: Network | None = None) -> None:  # fmt: skip
        if self.fail_configure:
            raise NetlinkError(errno.ENOBUFS, "No buffer space available")
        if guard is not None:
            self.guards.add(guard)


def test_a_failed_update_can_be_retried_after_its_old_guard_is_gone() -> None:
    old = InterfaceSpec(name="ipsec1", if_id=if_id_for(1),
                        address=ipaddress.IPv4Interface("10.0.0.1/24"))  # fmt: skip
    new = dataclasses.replace(old, address=ipaddress.IPv4Interface("10.1.0.1/24"))
    links = FakeLinks({Network("10.0.0.0/24")})
    backend = UserspaceDataplane()
    backend._links = links  # type: ignore[assignment]
    backend._interfaces["ipsec1"] = _Interface(old, -1, 7)

    async def scenario() -> list[str]:
        outcomes = []
        for fails in (True, False):
            links.fail_configure = fails
            try:
                await backend.update_interface(new)
                outcomes.append("done")
            except DataplaneError as error:
                outcomes.append(str(error))
        return outcomes

    first, second = asyncio.run(scenario())
    assert "No buffer space" in first
    assert second == "done"
    assert links.guards == {Network("10.1.0.0/24")}
    assert backend._interfaces["ipsec1"].spec == new
