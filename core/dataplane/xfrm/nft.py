"""Our nftables table: TCP MSS clamping and no IPv6 forwarding on the ipsecN interfaces.

The whole table is rendered from the interfaces' specs and replaced in one `nft -f`
transaction, so rules never pile up or go stale.  Interfaces are matched by name
(`iifname`), which survives an interface being re-created.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

from core.dataplane.model import InterfaceSpec

TABLE = "rbipsec"
NFT_TIMEOUT_SECONDS = 30.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class NftError(Exception):
    """nft refused the ruleset or is not installed."""


def _clamp(direction: str, name: str, mss: int) -> str:
    return (
        f'{direction} "{name}" tcp flags syn tcp option maxseg size > {mss}'
        f" tcp option maxseg size set {mss}"
    )


def render(interfaces: Iterable[InterfaceSpec]) -> str:
    """The `nft -f` script that replaces our table (or removes it when nothing is left)."""
    specs = sorted(interfaces, key=lambda spec: spec.name)
    for spec in specs:
        if not _SAFE_NAME.match(spec.name):
            raise NftError(f"interface name {spec.name!r} is not a plain interface name")
    script = [f"table inet {TABLE}", f"delete table inet {TABLE}"]
    if not specs:
        return "\n".join(script) + "\n"
    forward: list[str] = []
    output: list[str] = []
    inbound: list[str] = []
    for spec in specs:
        # IPv6 is never forwarded through a tunnel interface (the link-local is for
        # the node itself).
        forward.append(f'meta nfproto ipv6 iifname "{spec.name}" drop')
        forward.append(f'meta nfproto ipv6 oifname "{spec.name}" drop')
        if spec.tcp_mss is not None:
            forward.append(_clamp("oifname", spec.name, spec.tcp_mss))
            forward.append(_clamp("iifname", spec.name, spec.tcp_mss))
            output.append(_clamp("oifname", spec.name, spec.tcp_mss))
            inbound.append(_clamp("iifname", spec.name, spec.tcp_mss))
    script.append(f"table inet {TABLE} {{")
    for chain, hook, rules in (
        ("forward", "forward", forward),
        ("output", "output", output),
        ("input", "input", inbound),
    ):
        if not rules:
            continue
        script.append(f"  chain {chain} {{")
        script.append(f"    type filter hook {hook} priority mangle; policy accept;")
        script.extend(f"    {rule}" for rule in rules)
        script.append("  }")
    script.append("}")
    return "\n".join(script) + "\n"


def nft_command(netns: str | None) -> list[str]:
    nft = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if nft is None:
        raise NftError("nft (nftables) is not installed")
    if netns is None:
        return [nft, "-f", "-"]
    return ["ip", "netns", "exec", netns, nft, "-f", "-"]


def apply(script: str, netns: str | None) -> None:
    """Run the script in one nft transaction; raise NftError with nft's own message."""
    try:
        run = subprocess.run(
            nft_command(netns),
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NftError(f"nft could not run: {exc}") from exc
    if run.returncode != 0:
        raise NftError(f"nft refused our table: {run.stderr.strip()}")
