"""Transport mode on the kernel dataplane: traffic to the peer redirected into ipsecN by tc.

Transport mode protects the traffic addressed to the peer's outer address.  Routing it
into the XFRM interface, as the userspace backend does (bypass.py), cannot work: a
transport-mode bundle keeps the route the packet came with (xfrm_bundle_create looks a
route up only for tunnel mode, so neither the SA's output mark nor anything else can
change it), that route's device is the XFRM interface itself, and xfrmi_xmit2 drops the
packet as "Local routing loop detected!" (collisions counter).  Measured on Debian's
6.1.0 kernel in the QEMU guest, and the check is unchanged in current kernels.

What works: the packet keeps its ordinary route, and tc at the egress of the device it
leaves by hands it to ipsecN with that route still attached (mirred egress redirect);
xfrmi then encrypts it and sends the ESP packet out over the same route.  Which device
that is can change (failover, multipath, policy routing), so every device but lo and
the ipsecN interfaces gets, in one `tc -batch`:

    qdisc add dev DEV clsact                      (unless it has one)
    filter replace dev DEV egress pref 29282 protocol all handle MARK/MASK fw action ok
    filter replace dev DEV egress pref 29283+N protocol ip handle 1 flower dst_ip PEER \\
        action mirred egress redirect dev ipsecN

The first filter lets through what carries the bypass mark: IKE (the daemon's sockets
set SO_MARK) and the ESP of transport-mode SAs (their output mark, XFRMA_SET_MARK).
While ipsecN is down (or gone) the redirected packets are dropped, so nothing to the
peer leaves in clear.  `replace` with a fixed handle swaps a filter atomically: a new
peer address or a re-installation never leaves a device without a redirect.  Devices
that appear later get it as soon as the kernel backend hears of them (linkwatch.py), and
every SA installation (rekeys included) and link up installs it again.  At start a
crashed run's filters stay (they drop the traffic: their target device is gone) until
the new ones replace them; those no interface takes over go STALE_SECONDS later, or at
stop.  Blocking (subprocess): the backend calls this from its worker thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from core.dataplane.bypass import marks_work
from core.dataplane.model import BYPASS_MARK, BYPASS_MASK, IPAddress, TransportPeer

log = logging.getLogger(__name__)

BYPASS_PREF = 0x7262  # 29282: our filters' priorities are this one and the next 64
_PEER_PREFS = range(BYPASS_PREF + 1, BYPASS_PREF + 65)
TC_TIMEOUT_SECONDS = 30.0
STALE_SECONDS = 30.0  # a crashed run's filters no new interface took over go after this
_PREF = re.compile(r"\bpref (\d+)\b")
_HEADER = re.compile(r"^filter\b.*?\bprotocol (\S+) pref (\d+)\b")
_TO_IPSEC = re.compile(r"[Rr]edirect to device ipsec\d+\)")
_IPSEC = re.compile(r"ipsec\d+")
_LINE_FAILED = re.compile(r"Command failed \S*:(\d+)")


class RedirectError(Exception):
    """tc or ip refused a command, or is not installed."""


@dataclass(frozen=True)
class Redirect:
    """One interface's redirect: the peer address and the filter priority."""

    interface: str  # ipsecN
    peer: IPAddress  # the remote outer address
    pref: int

    @property
    def protocol(self) -> str:
        return "ip" if self.peer.version == 4 else "ipv6"


def peer_pref(if_id: int) -> int:
    """The filter priority of the interface with this if_id (index N: 29283 + N)."""
    return _PEER_PREFS[if_id & 0xFF]


def bypass_filter(device: str) -> str:
    return (f"filter replace dev {device} egress pref {BYPASS_PREF} protocol all "
            f"handle {BYPASS_MARK:#x}/{BYPASS_MASK:#x} fw action ok")  # fmt: skip


def peer_filter(device: str, redirect: Redirect) -> str:
    return (f"filter replace dev {device} egress pref {redirect.pref} protocol "
            f"{redirect.protocol} handle 1 flower dst_ip {redirect.peer} "
            f"action mirred egress redirect dev {redirect.interface}")  # fmt: skip


def delete_filter(device: str, pref: int) -> str:
    return f"filter del dev {device} egress pref {pref}"


def our_filters(show_output: str) -> dict[int, str]:
    """pref -> protocol of the filters in `tc filter show` text that are ours: the bypass
    mark's fw filter and flower redirects into ipsecN, at our priorities (tc's JSON
    output is not reliable for every classifier and action)."""
    text: dict[int, list[str]] = {}
    protocols: dict[int, str] = {}
    pref = None
    for line in show_output.splitlines():
        header = _HEADER.match(line)
        if header is not None:
            pref = int(header[2])
            protocols[pref] = header[1]
        if pref is not None:
            text.setdefault(pref, []).append(line)
    mark = f"handle {BYPASS_MARK:#x}/{BYPASS_MASK:#x}"
    found = {}
    for pref, lines in text.items():
        joined = "\n".join(lines)
        bypass = pref == BYPASS_PREF and " fw " in joined and mark in joined
        redirect = pref in _PEER_PREFS and " flower " in joined and _TO_IPSEC.search(joined)
        if bypass or redirect:
            found[pref] = protocols[pref]
    return found


class Redirects:
    """The tc redirects of one network namespace.

    `wanted` holds what each interface must have; `installed` what tc accepted, per
    (device, pref).  A failed installation leaves `wanted` as it was, and every refresh
    installs from `wanted` again, so a failure is retried by the next one."""

    def __init__(self, netns: str | None) -> None:
        self._netns = netns
        self.wanted: dict[str, Redirect] = {}
        self.installed: dict[tuple[str, int], Redirect] = {}
        self.bypass_on: set[str] = set()  # devices with our bypass filter
        self.created_clsact: set[str] = set()  # clsact qdiscs we added (only those go)
        self.stale: dict[tuple[str, int], str] = {}  # a crashed run's filters -> protocol
        self._sweep_at = 0.0
        self._last_error = ""
        self._marks_checked = False

    # -- commands --------------------------------------------------------------------
    def _command(self, program: str, args: list[str]) -> list[str]:
        path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
        if path is None:
            raise RedirectError(f"{program} is not installed (needed for transport mode)")
        prefix = ["ip", "netns", "exec", self._netns] if self._netns else []
        return [*prefix, path, *args]

    def _run(
        self, program: str, args: list[str], *, stdin: str | None = None
    ) -> tuple[int, str, str]:
        try:
            done = subprocess.run(self._command(program, args), capture_output=True, text=True,
                                  input=stdin, timeout=TC_TIMEOUT_SECONDS, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedirectError(f"{program} could not run: {exc}") from exc
        return done.returncode, str(done.stdout), str(done.stderr)

    def _batch(self, lines: list[str]) -> set[int]:
        """Run tc commands in one process (`tc -force -batch -`); the failed ones' indices."""
        if not lines:
            return set()
        code, _out, err = self._run("tc", ["-force", "-batch", "-"], stdin="\n".join(lines) + "\n")
        if code == 0:
            return set()
        failed = {int(number) - 1 for number in _LINE_FAILED.findall(err)}
        if not failed:
            raise RedirectError(f"tc -batch: {err.strip()}")
        self._last_error = err.strip()
        return failed

    def _json(self, program: str, args: list[str]) -> list[Any]:
        """The command's JSON list; empty when it fails (nothing to show)."""
        code, out, _err = self._run(program, ["-j", *args])
        try:
            found = json.loads(out) if code == 0 and out.strip() else []
        except json.JSONDecodeError:
            return []
        return found if isinstance(found, list) else []

    def devices(self) -> list[str]:
        """Every device traffic to a peer may leave by: all but lo and ipsecN."""
        names = (str(link.get("ifname", "")) for link in self._json("ip", ["link", "show"]))
        return [name for name in names if name and name != "lo" and not _IPSEC.fullmatch(name)]

    def _clsact_devices(self) -> set[str]:
        qdiscs = self._json("tc", ["qdisc", "show"])
        return {str(q.get("dev")) for q in qdiscs if q.get("kind") == "clsact"}

    def _filters(self, device: str, direction: str = "egress") -> str:
        code, out, _err = self._run("tc", ["filter", "show", "dev", device, direction])
        return out if code == 0 else ""

    # -- the redirects -----------------------------------------------------------------
    def add(self, interface: str, if_id: int, peer: TransportPeer) -> None:
        """Install (or move) the redirect of `interface` on every device; on failure the
        earlier one stays wanted (the local address does not matter here: the packet
        keeps its own)."""
        if not self._marks_checked:
            if not marks_work():  # IKE to the peer would be redirected into ipsecN too
                raise RedirectError("transport mode needs SO_MARK (CAP_NET_ADMIN)")
            self._marks_checked = True
        wanted = Redirect(interface, peer.remote, peer_pref(if_id))
        self._install(wanted)
        self.wanted[interface] = wanted

    def refresh(self, interface: str) -> None:
        """The wanted redirect again, onto devices that appeared (or after a failure)."""
        redirect = self.wanted.get(interface)
        if redirect is not None:
            self._install(redirect)

    def cover(self, devices: set[str], *, every: bool = False) -> None:
        """The wanted redirects again after link events named `devices` (new or changed
        ones; all of them when `every`: events were lost).  A name we covered before may
        be a new device by that name (a modem or PPP link that reconnected) whose filters
        died with the old one, so what we noted for it is forgotten first."""
        named = {device for device in devices if device != "lo" and not _IPSEC.fullmatch(device)}
        if not self.wanted or not (named or every):
            return
        for key in [key for key in self.installed if key[0] in named]:
            del self.installed[key]
        self.bypass_on -= named
        for interface in list(self.wanted):
            self.refresh(interface)

    def _install(self, redirect: Redirect) -> None:
        self._sweep_if_due()
        devices = self.devices()
        if not devices:
            raise RedirectError(f"no device to redirect traffic to {redirect.peer} on")
        clsact = self._clsact_devices()
        lines: list[str] = []
        steps: list[tuple[str, str]] = []  # (what, device) of each line
        for device in devices:
            if device not in clsact:
                lines.append(f"qdisc add dev {device} clsact")
                steps.append(("clsact", device))
            lines.append(bypass_filter(device))
            steps.append(("bypass", device))
            key = (device, redirect.pref)
            there = self.installed.get(key)
            protocol = there.protocol if there is not None else self.stale.get(key)
            if protocol is not None and protocol != redirect.protocol:
                lines.append(delete_filter(device, redirect.pref))  # replace keeps protocol
                steps.append(("delete", device))
            lines.append(peer_filter(device, redirect))
            steps.append(("peer", device))
        failed = self._batch(lines)
        refused = set()
        for index, (what, device) in enumerate(steps):
            if index in failed:
                if what in ("bypass", "peer"):  # (a clsact or stale filter already there)
                    refused.add(device)
            elif what == "clsact":
                self.created_clsact.add(device)
            elif what == "bypass":
                self.bypass_on.add(device)
            elif what == "peer":
                self.installed[(device, redirect.pref)] = redirect
                self.stale.pop((device, redirect.pref), None)
        for key in [key for key in self.installed if key[0] not in devices]:
            del self.installed[key]  # the device is gone, and its filters with it
        refused &= set(self.devices())  # (a device that vanished meanwhile is no error)
        if refused and self._route_device(redirect.peer) in {*refused, None}:
            raise RedirectError(f"tc refused the redirect to {redirect.peer}: {self._last_error}")
        if refused:  # not where the traffic to the peer goes now: tried again at the next
            log.warning("no transport-mode redirect to %s on %s: %s", redirect.peer,
                        ", ".join(sorted(refused)), self._last_error)  # fmt: skip

    def _route_device(self, peer: IPAddress) -> str | None:
        """The device a packet to `peer` leaves by now (None: no route)."""
        routes = self._json("ip", ["route", "get", str(peer)])
        return str(routes[0]["dev"]) if routes and "dev" in routes[0] else None

    def remove(self, interface: str) -> None:
        self.wanted.pop(interface, None)
        keys = [key for key, redirect in self.installed.items() if redirect.interface == interface]
        self._delete(keys)

    def _delete(self, keys: list[tuple[str, int]], bypass_too: set[str] | None = None) -> None:
        """Our filters at `keys`, then the bypass filter (and the clsact, if we added it
        and nothing else uses it) of devices left without redirects of ours."""
        for key in keys:
            self.installed.pop(key, None)
            self.stale.pop(key, None)
        used = {device for device, _pref in [*self.installed, *self.stale]}
        bare = sorted(({device for device, _pref in keys} | (bypass_too or set())) - used)
        lines = [delete_filter(device, pref) for device, pref in keys]
        lines += [delete_filter(device, BYPASS_PREF) for device in bare]
        with contextlib.suppress(RedirectError):
            self._batch(lines)  # what is already gone is no error
        self.bypass_on -= set(bare)
        for device in bare:
            if device in self.created_clsact and not any(
                _PREF.search(self._filters(device, side)) for side in ("egress", "ingress")
            ):
                with contextlib.suppress(RedirectError):
                    self._batch([f"qdisc del dev {device} clsact"])
                self.created_clsact.discard(device)

    def adopt_leftovers(self) -> None:
        """At start: a crashed run's filters stay until this run's replace them (they
        drop the traffic meanwhile); those left over are removed STALE_SECONDS later."""
        for device in self._clsact_devices():
            for pref, protocol in our_filters(self._filters(device)).items():
                if pref == BYPASS_PREF:
                    self.bypass_on.add(device)
                else:
                    self.stale[(device, pref)] = protocol
        self._sweep_at = time.monotonic() + STALE_SECONDS

    def _sweep_if_due(self) -> None:
        if self.stale and time.monotonic() >= self._sweep_at:
            self._delete(list(self.stale))

    def remove_all(self) -> None:
        """Every filter of ours (this run's and a crashed one's), and the clsacts we added."""
        for device in self._clsact_devices():
            for pref in our_filters(self._filters(device)):
                if pref != BYPASS_PREF:
                    self.stale.setdefault((device, pref), "")
                else:
                    self.bypass_on.add(device)
        self.wanted.clear()
        self._delete([*self.installed, *self.stale], bypass_too=set(self.bypass_on))
