"""Rules between the keys of one peer, and reading its pre-shared key.

The rules see the peer's effective values: defaults for keys not written, and no entry for a
key whose value was already reported as bad (so one mistake is not reported twice).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.config.fields import show
from core.config.schema import DYNAMIC, ExchangeMode, SaMode, Secret, TcpMss
from core.config.source import KeyPath
from core.crypto.proposals import parse_ike_proposal

AddProblem = Callable[[KeyPath, str], None]

# IPv4 header (20) + TCP header (20): the largest MSS that fits an MTU.
_TCP_IP_OVERHEAD = 40


def check_peer_rules(path: KeyPath, values: Mapping[str, Any], add: AddProblem) -> None:
    version = values.get("ike_version")
    exchange = values.get("exchange_mode")
    if version == 2 and exchange is ExchangeMode.AGGRESSIVE:
        add((*path, "exchange_mode"), '"aggressive" exists only in IKEv1 (ike_version = 1)')
    local_dynamic = values.get("local_address") is DYNAMIC
    remote_dynamic = values.get("remote_address") is DYNAMIC
    if local_dynamic and remote_dynamic:
        hint = ""
        if values.get("float_link") is not None:
            hint = (
                '; with float_link, "dynamic" means behind NAT: leave local_address out '
                '(or "float") when this node only changes its address'
            )
        add(
            (*path, "remote_address"),
            'local_address and remote_address cannot both be "dynamic" '
            f"(one side behind NAT is supported, not both){hint}",
        )
    if (local_dynamic or remote_dynamic) and version == 1 and exchange is ExchangeMode.MAIN:
        add(
            (*path, "exchange_mode"),
            'IKEv1 with a "dynamic" address needs "aggressive" '
            "(main mode identifies the peer by its IP address)",
        )
    if (local_dynamic or remote_dynamic) and values.get("mode") is SaMode.TRANSPORT:
        add((*path, "mode"), 'transport mode needs fixed local and remote addresses, not "dynamic"')
    ipv6 = [values.get(key) for key in ("local_address", "remote_address")]
    if version == 1 and values.get("mode") is SaMode.TRANSPORT and any(
        isinstance(address, ipaddress.IPv6Address) for address in ipv6
    ):
        add(
            (*path, "mode"),
            "IKEv1 transport mode works between IPv4 addresses only (its quick mode has no "
            "IPv6 host selectors here); use ike_version = 2",
        )
    if remote_dynamic and values.get("remote_id") == "":
        add(
            (*path, "remote_id"),
            'must be set when remote_address is "dynamic" (the peer is recognised by its ID)',
        )
    if local_dynamic and values.get("local_id") == "":
        add(
            (*path, "local_id"),
            'must be set when local_address is "dynamic" '
            "(an address behind NAT means nothing to the peer)",
        )
    _check_families(path, values, add)
    _check_mss(path, values, add)
    if version == 1:
        _check_ikev1_proposals(path, values, add)


def ikev1_default_ike_proposals(defaults: tuple[str, ...]) -> tuple[str, ...]:
    """The default IKE proposals usable with IKEv1, whose IKE SA has no AEAD algorithms."""
    return tuple(text for text in defaults if not parse_ike_proposal(text).is_aead)


def _check_ikev1_proposals(path: KeyPath, values: Mapping[str, Any], add: AddProblem) -> None:
    for index, text in enumerate(values.get("ike_proposals", ())):
        if parse_ike_proposal(text).is_aead:
            add(
                (*path, "ike_proposals", index),
                f"{show(text)}: an IKEv1 IKE SA cannot use AEAD algorithms (GCM, ChaCha20)",
            )


def _check_families(path: KeyPath, values: Mapping[str, Any], add: AddProblem) -> None:
    local = values.get("local_address")
    remote = values.get("remote_address")
    fixed = (ipaddress.IPv4Address, ipaddress.IPv6Address)
    if isinstance(local, fixed) and isinstance(remote, fixed) and local.version != remote.version:
        add(
            (*path, "remote_address"),
            f"{remote} is IPv{remote.version} but local_address {local} is IPv{local.version}",
        )


def _check_mss(path: KeyPath, values: Mapping[str, Any], add: AddProblem) -> None:
    mss = values.get("tcp_mss")
    mtu = values.get("mtu")
    if isinstance(mss, int) and not isinstance(mss, TcpMss) and isinstance(mtu, int):
        largest = mtu - _TCP_IP_OVERHEAD
        if mss > largest:
            add((*path, "tcp_mss"), f"{mss} does not fit mtu {mtu} (at most {largest})")


def read_secret(
    path: KeyPath,
    table: Mapping[str, Any],
    values: Mapping[str, Any],
    add: AddProblem,
    base_dir: Path,
) -> Secret | None:
    """The peer's PSK from `psk` or `psk_file`; None (with a problem added) if unusable."""
    if "psk" in table and "psk_file" in table:
        add((*path, "psk_file"), "give psk or psk_file, not both")
        return None
    if "psk" not in table and "psk_file" not in table:
        add((*path, "psk"), "missing (give psk or psk_file)")
        return None
    if "psk" in table:
        return Secret(str(values["psk"]).encode()) if "psk" in values else None
    if "psk_file" not in values:
        return None  # its bad value is reported already
    try:
        return read_psk_file(Path(base_dir, values["psk_file"]))
    except ValueError as error:
        add((*path, "psk_file"), str(error))
        return None


def read_psk_file(file: Path) -> Secret:
    """Reads a PSK file that only its owner may read; one trailing newline is dropped."""
    data = read_private_file(file)
    secret = data.removesuffix(b"\n").removesuffix(b"\r")
    if not secret:
        raise ValueError(f"{show(str(file))} is empty")
    return Secret(secret)


def read_private_file(file: Path) -> bytes:
    """The bytes of a regular file that only its owner may read; ValueError says why not."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
        descriptor = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        raise ValueError(f"cannot read {show(str(file))}: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):  # before fdopen, which refuses a directory
            raise ValueError(f"{show(str(file))} is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise ValueError(
                f"{show(str(file))} has mode {mode:04o}: group and others must have no access "
                "(chmod 600)"
            )
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            try:
                return handle.read()
            except OSError as error:
                raise ValueError(f"cannot read {show(str(file))}: {error.strerror}") from None
    finally:
        os.close(descriptor)
