"""`rbipsec status` for humans: the status answer as a rich table plus details."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {
    "up": "bold green",
    "connecting": "yellow",
    "waiting": "cyan",
    "down": "dim",
    "disabled": "dim",
    "error": "bold red",
}


def duration(seconds: float | None) -> str:
    """1d02h, 3h04m, 5m06s, 7s; "-" for nothing."""
    if seconds is None:
        return "-"
    value = int(max(0, seconds))
    days, rest = divmod(value, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def amount(count: int) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if count < 1000:
            return f"{count}{unit}"
        count //= 1000
    return f"{count}P"


def _endpoint(value: dict[str, Any] | None) -> str:
    if not value:
        return "-"
    address, port = value.get("address"), value.get("port")
    if port is None:
        return str(address)
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"


def _nat(nat: dict[str, Any]) -> str:
    if not nat.get("in_use"):
        return "-"
    parts = []
    if nat.get("local_behind_nat"):
        parts.append("local")
    if nat.get("remote_behind_nat"):
        parts.append("remote")
    if nat.get("forced"):
        parts.append("forced")
    return ",".join(parts) or "yes"


def _dpd(dpd: dict[str, Any]) -> str:
    state = str(dpd.get("state"))
    if state == "probing":
        return f"probing {dpd.get('probes_outstanding')}/{int(dpd.get('retries', 0)) + 1}"
    if state == "ok":
        return f"ok {duration(dpd.get('last_heard_ago'))}"
    return state


def status_table(status: dict[str, Any]) -> Table:
    daemon = status.get("daemon", {})
    title = (
        f"rbipsec: {daemon.get('peers_up', 0)}/{daemon.get('peers', 0)} up, "
        f"dataplane {daemon.get('dataplane') or 'none'}"
        + ("" if daemon.get("enabled") else " (route-based IPsec disabled)")
    )
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("peer", "if", "state", "remote", "NAT", "SPI in/out", "rekey", "expires",
                   "DPD", "in", "out"):  # fmt: skip
        table.add_column(column, no_wrap=True)
    for peer in status.get("peers", []):
        children = peer.get("child_sas") or []
        child = next((c for c in children if c.get("outbound")), children[0] if children else None)
        ike = peer.get("ike_sa") or {}
        rekey = child.get("rekey_in") if child else ike.get("rekey_in")
        expires = child.get("expire_in") if child else ike.get("expire_in")
        traffic = peer.get("traffic", {})
        state = str(peer.get("state"))
        table.add_row(
            str(peer.get("name")),
            str(peer.get("interface")),
            Text(state, style=_STATE_STYLE.get(state, "")),
            _endpoint(peer.get("remote")),
            _nat(peer.get("nat", {})),
            f"{child['spi_in']}/{child['spi_out']}" if child else "-",
            duration(rekey),
            duration(expires),
            _dpd(peer.get("dpd", {})),
            f"{amount(traffic.get('bytes_in', 0))}B {amount(traffic.get('packets_in', 0))}p",
            f"{amount(traffic.get('bytes_out', 0))}B {amount(traffic.get('packets_out', 0))}p",
        )
    return table


def error_lines(status: dict[str, Any]) -> list[str]:
    """ "peer: last error (at ...)" for every peer that has one."""
    lines = []
    for peer in status.get("peers", []):
        error = peer.get("last_error")
        if error:
            lines.append(f"{peer.get('name')}: {error.get('message')} (at {error.get('at')})")
    return lines


def float_link_lines(status: dict[str, Any]) -> list[str]:
    """ "peer: published ADDRESS (ago); NAME -> ADDRESS, STATE" for every float-link peer."""
    lines = []
    for peer in status.get("peers", []):
        link = peer.get("float_link")
        if not link:
            continue
        published = link.get("published") or {}
        ours = (
            f"{link.get('name')} = {published.get('address')} ({duration(published.get('ago'))}"
            " ago)"
            if published
            else f"{link.get('name')} {link.get('published_state')}"
        )
        resolved = link.get("resolved") or {}
        theirs = f"{link.get('peer_name')} -> {resolved.get('address') or '-'}, " + str(
            link.get("resolved_state")
        )
        registration = link.get("registration") or {}
        if registration.get("state") == "current":
            theirs += f", registration expires in {duration(registration.get('expires_in'))}"
        elif registration.get("state") == "no stamp":
            theirs += ", no registration stamp"
        error = link.get("last_error")
        tail = f"; DNS {error.get('kind')}: {error.get('message')}" if error else ""
        lines.append(f"{peer.get('name')}: {ours}; {theirs}{tail}")
    return lines


def print_status(status: dict[str, Any], console: Console | None = None) -> None:
    """The table, then the last errors.  Not on a terminal, lines are not cut at 80."""
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(status_table(status))
    links = float_link_lines(status)
    if links:
        console.print("float links:", style="bold")
        for line in links:
            console.print(f"  {line}", highlight=False, markup=False)
    errors = error_lines(status)
    if errors:
        console.print("last errors:", style="bold")
        for line in errors:
            console.print(f"  {line}", highlight=False, markup=False)
