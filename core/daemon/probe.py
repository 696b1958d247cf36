"""Which dataplane to run: the kernel's XFRM interfaces and ESP, or userspace ESP over TUN.

`auto` picks the kernel when both of its parts work here, found by doing what the kernel
backend will do, once, and undoing it:
1. create a throwaway XFRM interface (fails with "Unknown device type" without xfrmi);
2. install a throwaway ESP SA with AES-GCM and delete it (fails with "Requested type not
   found" when ESP or the algorithm is missing).
Files such as /proc/net/xfrm_stat only show that XFRM is compiled in, not that ESP or
interfaces are, so they are not used.  The probe takes a few milliseconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from core.config import DataplaneChoice
from core.dataplane.api import Dataplane
from core.dataplane.model import (
    IF_ID_BASE,
    Direction,
    EspAlgorithm,
    SaMode,
    SaSpec,
    if_id_for,
)

log = logging.getLogger("rbipsec.probe")

PROBE_INTERFACE = "rbipsec-probe"
PROBE_IF_ID = IF_ID_BASE | 0xFFFF  # outside the ipsecN range: never clashes with a tunnel
PROBE_SPI = 0x7262FFFE
_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class Choice:
    backend: str  # "kernel" | "userspace"
    reason: str


def probe_kernel() -> str | None:
    """None when the kernel can carry our tunnels; else why not (blocking: run in a thread)."""
    from pyroute2 import IPRoute  # here: a daemon told to run userspace never imports it
    from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError

    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=PROBE_INTERFACE, kind="xfrm", xfrm_if_id=PROBE_IF_ID)
            ipr.link("del", ifname=PROBE_INTERFACE)
    except (Pyroute2NetlinkError, OSError) as error:
        return f"no XFRM interfaces ({_reason(error)})"
    from core.dataplane.xfrm import requests
    from core.dataplane.xfrm.netlink import XfrmSocket

    sa = SaSpec(
        spi=PROBE_SPI,
        direction=Direction.IN,
        src=_LOOPBACK,
        dst=_LOOPBACK,
        mode=SaMode.TUNNEL,
        algorithm=EspAlgorithm.AES_GCM_16,
        encryption_key=bytes(20),
        if_id=if_id_for(63),  # inside our range: a crashed probe's SA is cleaned at start
    )
    try:
        xfrm = XfrmSocket()
    except OSError as error:
        return f"no XFRM netlink ({_reason(error)})"
    try:
        xfrm.request(requests.newsa(sa))
        xfrm.request(requests.delsa(_LOOPBACK, PROBE_SPI))
    except OSError as error:
        return f"no ESP in the kernel ({_reason(error)})"
    finally:
        xfrm.close()
    return None


def _reason(error: BaseException) -> str:
    from pyroute2.netlink.exceptions import NetlinkError as Pyroute2NetlinkError

    if isinstance(error, Pyroute2NetlinkError):
        return str(error.args[-1]) if error.args else str(error)
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


async def choose(choice: DataplaneChoice) -> Choice:
    if choice is DataplaneChoice.KERNEL:
        return Choice("kernel", "configured")
    if choice is DataplaneChoice.USERSPACE:
        return Choice("userspace", "configured")
    missing = await asyncio.to_thread(probe_kernel)
    if missing is None:
        return Choice("kernel", "auto: the kernel has XFRM interfaces and ESP")
    return Choice("userspace", f"auto: {missing}")


def build(backend: str) -> Dataplane:
    if backend == "kernel":
        from core.dataplane.xfrm.backend import XfrmDataplane

        return XfrmDataplane()
    from core.dataplane.userspace.backend import UserspaceDataplane

    return UserspaceDataplane()
