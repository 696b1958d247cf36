"""Transport mode on the kernel dataplane: traffic to the peer redirected into ipsecN by tc.

Transport mode protects the traffic addressed to the peer's outer address.  Routing it
into the XFRM interface, as the userspace backend does (bypass.py), cannot work: a
transport-mode bundle keeps the route the packet came with (xfrm_bundle_create looks a
route up only for tunnel mode, so neither the SA's output mark nor anything else can
change it), that route's device is the XFRM interface itself, and xfrmi_xmit2 drops the
packet as "Local routing loop detected!" (collisions counter).  Measured on Debian's
6.1.0 kernel in the QEMU guest, and the check is unchanged in current kernels.

What works: the packet keeps its ordinary route over the outer link, and tc on that
link's egress hands it to ipsecN with that route still attached (mirred egress
redirect); xfrmi then encrypts it and sends the ESP packet out over the same route.
On the outer device (the one the route to the peer leaves by):

    tc qdisc add dev OUTER clsact
    tc filter add dev OUTER egress pref 29282 protocol all handle MARK/MASK fw action ok
    tc filter add dev OUTER egress pref 29283+N protocol ip flower dst_ip PEER \\
        action mirred egress redirect dev ipsecN

The first filter lets through what carries the bypass mark: IKE (the daemon's sockets
set SO_MARK) and the ESP of transport-mode SAs (their output mark, XFRMA_SET_MARK).
While ipsecN is down the redirected packets are dropped (the sender sees ENOBUFS), so
nothing to the peer leaves in clear.  The outer device is looked up again whenever an
SA is installed or the link comes up.  Blocking (subprocess): the backend calls this
from its worker thread.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from core.dataplane.model import BYPASS_MARK, BYPASS_MASK, IPAddress, TransportPeer

BYPASS_PREF = 0x7262  # 29282: our filters' priorities are this one and the next 64
_PEER_PREFS = range(BYPASS_PREF + 1, BYPASS_PREF + 65)
TC_TIMEOUT_SECONDS = 30.0
_PREF = re.compile(r"\bpref (\d+)\b")


class RedirectError(Exception):
    """tc or ip refused a command, or is not installed."""


@dataclass(frozen=True)
class Redirect:
    """One peer's redirect: where it is installed."""

    interface: str  # ipsecN
    peer: IPAddress  # the remote outer address
    outer: str  # the device the route to the peer leaves by
    pref: int


def peer_pref(if_id: int) -> int:
    """The filter priority of the interface with this if_id (index N: 29283 + N)."""
    return _PEER_PREFS[if_id & 0xFF]


def bypass_filter(outer: str) -> list[str]:
    return ["filter", "replace", "dev", outer, "egress", "pref", str(BYPASS_PREF),
            "protocol", "all", "handle", f"{BYPASS_MARK:#x}/{BYPASS_MASK:#x}", "fw",
            "action", "ok"]  # fmt: skip


def peer_filter(outer: str, pref: int, peer: IPAddress, interface: str) -> list[str]:
    protocol = "ip" if peer.version == 4 else "ipv6"
    return ["filter", "add", "dev", outer, "egress", "pref", str(pref), "protocol",
            protocol, "flower", "dst_ip", str(peer), "action", "mirred", "egress",
            "redirect", "dev", interface]  # fmt: skip


def delete_filter(outer: str, pref: int) -> list[str]:
    return ["filter", "del", "dev", outer, "egress", "pref", str(pref)]


def is_our_pref(pref: int) -> bool:
    return pref == BYPASS_PREF or pref in _PEER_PREFS


class Redirects:
    """The tc redirects of one network namespace, by interface name."""

    def __init__(self, netns: str | None) -> None:
        self._netns = netns
        self.installed: dict[str, Redirect] = {}

    # -- commands --------------------------------------------------------------------
    def _command(self, program: str, args: list[str]) -> list[str]:
        path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
        if path is None:
            raise RedirectError(f"{program} is not installed (needed for transport mode)")
        prefix = ["ip", "netns", "exec", self._netns] if self._netns else []
        return [*prefix, path, *args]

    def _run(self, program: str, args: list[str], *, check: bool = True) -> str:
        try:
            done = subprocess.run(self._command(program, args), capture_output=True, text=True,
                                  timeout=TC_TIMEOUT_SECONDS, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedirectError(f"{program} could not run: {exc}") from exc
        if check and done.returncode != 0:
            raise RedirectError(f"{program} {' '.join(args)}: {done.stderr.strip()}")
        return str(done.stdout)

    def _json(self, program: str, args: list[str]) -> list[Any]:
        """The command's JSON list; empty when it fails (nothing to show, or no tc)."""
        try:
            out = self._run(program, ["-j", *args], check=False).strip()
        except RedirectError:
            return []
        try:
            found = json.loads(out) if out else []
        except json.JSONDecodeError:
            return []
        return found if isinstance(found, list) else []

    def outer_device(self, peer: IPAddress) -> str:
        """The device a marked packet to `peer` leaves by (what IKE and ESP use)."""
        routes = self._json("ip", ["route", "get", str(peer), "mark", f"{BYPASS_MARK:#x}"])
        if not routes or "dev" not in routes[0]:
            raise RedirectError(f"no route to the transport-mode peer {peer}")
        return str(routes[0]["dev"])

    # -- the redirects -----------------------------------------------------------------
    def add(self, interface: str, if_id: int, peer: TransportPeer) -> None:
        """Install (or move) the redirect of `interface`; nothing stays if it fails."""
        outer = self.outer_device(peer.remote)
        wanted = Redirect(interface, peer.remote, outer, peer_pref(if_id))
        if self.installed.get(interface) == wanted:
            return  # (the local address does not matter here: the packet keeps its own)
        self.remove(interface)
        try:
            if "clsact" not in self._run("tc", ["qdisc", "show", "dev", outer]):
                self._run("tc", ["qdisc", "add", "dev", outer, "clsact"])
            self._run("tc", bypass_filter(outer))
            self._run("tc", delete_filter(outer, wanted.pref), check=False)
            self._run("tc", peer_filter(outer, wanted.pref, peer.remote, interface))
        except RedirectError:
            self._clean_device(outer)
            raise
        self.installed[interface] = wanted

    def refresh(self, interface: str, if_id: int) -> None:
        """Follow the route to the peer to another device, if it moved."""
        redirect = self.installed.get(interface)
        if redirect is not None:
            self.add(interface, if_id, TransportPeer(remote=redirect.peer))

    def remove(self, interface: str) -> None:
        redirect = self.installed.pop(interface, None)
        if redirect is not None:
            self._run("tc", delete_filter(redirect.outer, redirect.pref), check=False)
            self._clean_device(redirect.outer)

    def remove_all(self) -> None:
        """Our filters on every device (a crashed run's included), then empty clsacts."""
        for interface in list(self.installed):
            self.remove(interface)
        for link in self._json("ip", ["link", "show"]):
            name = str(link.get("ifname", ""))
            if not name:
                continue
            prefs = self._prefs(name, "egress")
            for pref in sorted(pref for pref in prefs if is_our_pref(pref)):
                self._run("tc", delete_filter(name, pref), check=False)
            if any(is_our_pref(pref) for pref in prefs):
                self._clean_device(name)

    def _prefs(self, device: str, direction: str) -> set[int]:
        """The filter priorities on one side of a device (tc's text output: its JSON
        output is not reliable for every classifier and action)."""
        try:
            out = self._run("tc", ["filter", "show", "dev", device, direction], check=False)
        except RedirectError:
            return set()
        return {int(found) for found in _PREF.findall(out)}

    def _clean_device(self, device: str) -> None:
        """The bypass filter and clsact go when no redirect of ours uses the device."""
        if any(redirect.outer == device for redirect in self.installed.values()):
            return
        self._run("tc", delete_filter(device, BYPASS_PREF), check=False)
        if not self._prefs(device, "egress") and not self._prefs(device, "ingress"):
            self._run("tc", ["qdisc", "del", "dev", device, "clsact"], check=False)
