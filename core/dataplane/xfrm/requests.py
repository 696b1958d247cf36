"""Build XFRM netlink requests from the dataplane's value types (pure: no sockets).

Each builder returns a `Request`: the message type, its netlink flags and the unencoded
pyroute2 message.  `Request.encode(seq)` gives the bytes to send.  Field values and
attribute order follow what iproute2 sends for the equivalent `ip xfrm` command, so the
tests can compare against byte dumps of it (tests/dataplane/xfrm/golden/).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, nlmsg

from core.dataplane.model import (
    BYPASS_MARK,
    BYPASS_MASK,
    Direction,
    EspAlgorithm,
    EspIntegrity,
    IPAddress,
    Lifetime,
    SaMode,
    SaSpec,
)
from core.dataplane.xfrm import messages as m
from core.errors import UsageError

# ESP transforms by the kernel's crypto API names; (name, ICV or truncation bits).
AEAD_NAMES: dict[EspAlgorithm, tuple[str, int]] = {
    EspAlgorithm.AES_GCM_16: ("rfc4106(gcm(aes))", 128),
    EspAlgorithm.CHACHA20_POLY1305: ("rfc7539esp(chacha20,poly1305)", 128),
}
CIPHER_NAMES: dict[EspAlgorithm, str] = {EspAlgorithm.AES_CBC: "cbc(aes)"}
INTEGRITY_NAMES: dict[EspIntegrity, tuple[str, int]] = {
    EspIntegrity.HMAC_SHA1_96: ("hmac(sha1)", 96),
    EspIntegrity.HMAC_SHA2_256_128: ("hmac(sha256)", 128),
    EspIntegrity.HMAC_SHA2_384_192: ("hmac(sha384)", 192),
    EspIntegrity.HMAC_SHA2_512_256: ("hmac(sha512)", 256),
}

# The legacy 8-bit replay_window holds windows up to 32 packets; larger windows and ESN
# go in XFRMA_REPLAY_ESN_VAL (bitmap length in 32-bit words).
LEGACY_REPLAY_WINDOW_MAX = 32
ALL_ALGORITHMS = 0xFFFF_FFFF

REQUEST_ACK = NLM_F_REQUEST | NLM_F_ACK


class InvalidSaError(UsageError):
    """An SaSpec the kernel cannot take (no integrity with CBC, unknown algorithm, ...)."""


@dataclass
class Request:
    msg_type: int
    flags: int
    msg: nlmsg

    def encode(self, seq: int = 0, pid: int = 0) -> bytes:
        self.msg["header"]["type"] = self.msg_type
        self.msg["header"]["flags"] = self.flags
        self.msg["header"]["sequence_number"] = seq
        self.msg["header"]["pid"] = pid
        self.msg.reset()
        self.msg.encode()
        return bytes(self.msg.data[: self.msg["header"]["length"]])


def _mode(mode: SaMode) -> int:
    return m.XFRM_MODE_TUNNEL if mode is SaMode.TUNNEL else m.XFRM_MODE_TRANSPORT


def _lifetime_fields(lifetime: Lifetime | None) -> dict[str, int]:
    """0 means no limit: XFRM_INF for byte/packet counts, 0 for times (as iproute2)."""
    lt = lifetime or Lifetime()

    def count(value: int) -> int:
        return value if value else m.XFRM_INF

    return {
        "lft_soft_byte_limit": count(lt.soft_bytes),
        "lft_hard_byte_limit": count(lt.hard_bytes),
        "lft_soft_packet_limit": count(lt.soft_packets),
        "lft_hard_packet_limit": count(lt.hard_packets),
        "lft_soft_add_expires_seconds": lt.soft_seconds,
        "lft_hard_add_expires_seconds": lt.hard_seconds,
    }


def _any_selector(family: int) -> dict[str, Any]:
    """0/0 <-> 0/0 of one family: route-based IPsec lets routing pick the traffic."""
    return {"sel_family": family, "sel_daddr": bytes(16), "sel_saddr": bytes(16)}


def _algorithm_attrs(sa: SaSpec) -> list[tuple[str, dict[str, Any]]]:
    if sa.algorithm in AEAD_NAMES:
        if sa.integrity is not EspIntegrity.NONE:
            raise InvalidSaError(f"SA {sa.spi:#010x}: {sa.algorithm.value} takes no integrity")
        name, icv_bits = AEAD_NAMES[sa.algorithm]
        aead = {
            "alg_name": m.pack_alg_name(name),
            "alg_key_len": len(sa.encryption_key) * 8,
            "alg_icv_len": icv_bits,
            "alg_key": sa.encryption_key,
        }
        return [("XFRMA_ALG_AEAD", aead)]
    if sa.algorithm not in CIPHER_NAMES:
        raise InvalidSaError(f"SA {sa.spi:#010x}: no kernel name for {sa.algorithm.value}")
    if sa.integrity not in INTEGRITY_NAMES:
        raise InvalidSaError(f"SA {sa.spi:#010x}: {sa.algorithm.value} needs an integrity")
    crypt = {
        "alg_name": m.pack_alg_name(CIPHER_NAMES[sa.algorithm]),
        "alg_key_len": len(sa.encryption_key) * 8,
        "alg_key": sa.encryption_key,
    }
    auth_name, trunc_bits = INTEGRITY_NAMES[sa.integrity]
    auth = {
        "alg_name": m.pack_alg_name(auth_name),
        "alg_key_len": len(sa.integrity_key) * 8,
        "alg_trunc_len": trunc_bits,
        "alg_key": sa.integrity_key,
    }
    return [("XFRMA_ALG_CRYPT", crypt), ("XFRMA_ALG_AUTH_TRUNC", auth)]


def reqid_for(if_id: int) -> int:
    """One reqid per interface: SAs and policy templates of a peer pair up by it."""
    return if_id


def newsa(sa: SaSpec) -> Request:
    """XFRM_MSG_NEWSA for one ESP SA bound to its interface's if_id.

    The inner DSCP is never copied outward (XFRM_SA_XFLAG_DONT_ENCAP_DSCP) nor the outer
    one inward (no XFRM_STATE_DECAP_DSCP)."""
    if sa.src.version != sa.dst.version:
        raise InvalidSaError(f"SA {sa.spi:#010x}: outer addresses of two families")
    if not 0 < sa.spi <= 0xFFFF_FFFF:
        raise InvalidSaError(f"SA spi {sa.spi:#x} outside 1..0xffffffff")
    family = m.address_family(sa.dst)
    # Tunnel mode carries IPv4 only (IPv6 is not forwarded through the interface);
    # transport mode protects the outer family itself.
    sel_family = socket.AF_INET if sa.mode is SaMode.TUNNEL else family
    msg = m.xfrm_usersa_info()
    msg.update(_any_selector(sel_family))
    msg.update(_lifetime_fields(sa.lifetime))
    msg.update(
        {
            "id_daddr": m.pack_address(sa.dst),
            "id_spi": sa.spi,
            "id_proto": m.IPPROTO_ESP,
            "saddr": m.pack_address(sa.src),
            "reqid": reqid_for(sa.if_id),
            "family": family,
            "mode": _mode(sa.mode),
            "flags": m.XFRM_STATE_ESN if sa.esn else 0,
        }
    )
    attrs: list[tuple[str, Any]] = _algorithm_attrs(sa)
    if sa.encap is not None:
        encap = {
            "encap_type": m.UDP_ENCAP_ESPINUDP,
            "encap_sport": sa.encap.sport,
            "encap_dport": sa.encap.dport,
            "encap_oa": bytes(16),
        }
        attrs.append(("XFRMA_ENCAP", encap))
    if sa.esn or sa.replay_window > LEGACY_REPLAY_WINDOW_MAX:
        esn = {
            "bmp_len": (sa.replay_window + 31) // 32,
            "replay_window": sa.replay_window,
            "bmp": b"",
        }
        attrs.append(("XFRMA_REPLAY_ESN_VAL", esn))
    else:
        msg["replay_window"] = sa.replay_window
    attrs.append(("XFRMA_SA_EXTRA_FLAGS", m.XFRM_SA_XFLAG_DONT_ENCAP_DSCP))
    if sa.if_id:
        attrs.append(("XFRMA_IF_ID", sa.if_id))
    if sa.mode is SaMode.TRANSPORT and sa.direction is Direction.OUT:
        # The ESP packets of a transport-mode SA go to the very address whose traffic is
        # redirected into ipsecN (redirect.py): the bypass mark lets them leave.  Not on
        # inbound SAs: xfrm_input marks the decrypted packets with it, and replies that
        # inherit it (fwmark_reflect, tcp_fwmark_accept, CONNMARK) would leave in clear.
        attrs.append(("XFRMA_SET_MARK", BYPASS_MARK))
        attrs.append(("XFRMA_SET_MARK_MASK", BYPASS_MASK))
    msg["attrs"] = attrs
    return Request(m.XFRM_MSG_NEWSA, REQUEST_ACK, msg)


def updsa(sa: SaSpec) -> Request:
    """XFRM_MSG_UPDSA: replace the SA with the same (daddr, SPI)."""
    request = newsa(sa)
    request.msg_type = m.XFRM_MSG_UPDSA
    return request


def _sa_id(dst: IPAddress, spi: int, src: IPAddress | None) -> nlmsg:
    msg = m.xfrm_usersa_id()
    msg.update(
        {
            "daddr": m.pack_address(dst),
            "spi": spi,
            "family": m.address_family(dst),
            "proto": m.IPPROTO_ESP,
        }
    )
    if src is not None:
        msg["attrs"] = [("XFRMA_SRCADDR", {"value": m.pack_address(src)})]
    return msg


def delsa(dst: IPAddress, spi: int, src: IPAddress | None = None) -> Request:
    return Request(m.XFRM_MSG_DELSA, REQUEST_ACK, _sa_id(dst, spi, src))


def getsa(dst: IPAddress, spi: int, src: IPAddress | None = None) -> Request:
    return Request(m.XFRM_MSG_GETSA, NLM_F_REQUEST, _sa_id(dst, spi, src))


def dump_sas() -> Request:
    return Request(m.XFRM_MSG_GETSA, NLM_F_REQUEST | NLM_F_DUMP, m.xfrm_usersa_id())


def allocspi(
    src: IPAddress, dst: IPAddress, spi_min: int, spi_max: int, mode: SaMode, if_id: int = 0
) -> Request:
    """XFRM_MSG_ALLOCSPI: the kernel picks a free SPI in [spi_min, spi_max] (a larval SA)."""
    msg = m.xfrm_userspi_info()
    msg.update(
        {
            "id_daddr": m.pack_address(dst),
            "id_proto": m.IPPROTO_ESP,
            "saddr": m.pack_address(src),
            "family": m.address_family(dst),
            "mode": _mode(mode),
            "reqid": reqid_for(if_id) if if_id else 0,
            "min": spi_min,
            "max": spi_max,
        }
    )
    if if_id:
        msg["attrs"] = [("XFRMA_IF_ID", if_id)]
    return Request(m.XFRM_MSG_ALLOCSPI, NLM_F_REQUEST, msg)


def flushsa() -> Request:
    msg = m.xfrm_usersa_flush()
    msg["proto"] = m.IPPROTO_ESP
    return Request(m.XFRM_MSG_FLUSHSA, REQUEST_ACK, msg)


# -- policies -----------------------------------------------------------------------------
POLICY_DIRECTIONS = (m.XFRM_POLICY_IN, m.XFRM_POLICY_OUT, m.XFRM_POLICY_FWD)


@dataclass(frozen=True)
class PolicyTemplate:
    """What the SA of a policy must look like: outer addresses (None = any) and mode."""

    mode: SaMode
    family: int
    src: IPAddress | None = None
    dst: IPAddress | None = None


def newpolicy(direction: int, if_id: int, tmpl: PolicyTemplate, *, update: bool = False) -> Request:
    """0.0.0.0/0 <-> 0.0.0.0/0 in one direction, bound to if_id, requiring one ESP SA."""
    msg = m.xfrm_userpolicy_info()
    msg.update(_any_selector(socket.AF_INET))
    msg.update(_lifetime_fields(None))
    msg.update({"dir": direction, "action": m.XFRM_POLICY_ALLOW})
    template = {
        "id_daddr": m.pack_address(tmpl.dst),
        "id_spi": 0,
        "id_proto": m.IPPROTO_ESP,
        "family": tmpl.family,
        "saddr": m.pack_address(tmpl.src),
        "reqid": reqid_for(if_id),
        "mode": _mode(tmpl.mode),
        "aalgos": ALL_ALGORITHMS,
        "ealgos": ALL_ALGORITHMS,
        "calgos": ALL_ALGORITHMS,
    }
    msg["attrs"] = [("XFRMA_TMPL", template), ("XFRMA_IF_ID", if_id)]
    msg_type = m.XFRM_MSG_UPDPOLICY if update else m.XFRM_MSG_NEWPOLICY
    return Request(msg_type, REQUEST_ACK, msg)


def delpolicy(direction: int, if_id: int) -> Request:
    msg = m.xfrm_userpolicy_id()
    msg.update(_any_selector(socket.AF_INET))
    msg["dir"] = direction
    msg["attrs"] = [("XFRMA_IF_ID", if_id)]
    return Request(m.XFRM_MSG_DELPOLICY, REQUEST_ACK, msg)


def dump_policies() -> Request:
    return Request(m.XFRM_MSG_GETPOLICY, NLM_F_REQUEST | NLM_F_DUMP, m.xfrm_userpolicy_id())


def flushpolicy() -> Request:
    return Request(m.XFRM_MSG_FLUSHPOLICY, REQUEST_ACK, m.xfrm_empty())


def direction_of(policy_dir: int) -> Direction | None:
    return {m.XFRM_POLICY_IN: Direction.IN, m.XFRM_POLICY_OUT: Direction.OUT}.get(policy_dir)


def any_address(family: int) -> IPAddress:
    if family == socket.AF_INET6:
        return ipaddress.IPv6Address(0)
    return ipaddress.IPv4Address(0)
