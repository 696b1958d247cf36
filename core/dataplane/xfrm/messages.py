# pyroute2 ships no type hints: its message bases are Any to mypy.
# mypy: disallow-subclassing-any=False
"""NETLINK_XFRM messages in pyroute2's declarative `nlmsg` / `nla_map` style.

pyroute2 0.9 has no XFRM state or policy messages, so they are defined here from the Linux
uapi header `include/uapi/linux/xfrm.h`.  Nested C structs are flattened into prefixed
fields (`sel_daddr`, `id_spi`, `lft_soft_byte_limit`, ...).  Every C padding byte is an
explicit `x` field: pyroute2 packs each field on its own, with no implicit alignment.

Layouts on Linux (x86_64 and every other 64-bit ABI; `__u64` is 8-aligned):

    xfrm_address_t       16  union of __be32 a4 / a6[4]
    xfrm_selector        56  daddr 0, saddr 16, dport 32, dport_mask 34, sport 36,
                             sport_mask 38, family 40, prefixlen_d 42, prefixlen_s 43,
                             proto 44, pad 45..47, ifindex 48, user 52
    xfrm_id              24  daddr 0, spi 16 (network order), proto 20, pad 21..23
    xfrm_lifetime_cfg    64  eight __u64: soft/hard byte, soft/hard packet,
                             soft/hard add_expires_seconds, soft/hard use_expires_seconds
    xfrm_lifetime_cur    32  bytes, packets, add_time, use_time
    xfrm_stats           12  replay_window, replay, integrity_failed
    xfrm_usersa_info    224  sel 0, id 56, saddr 80, lft 96, curlft 160, stats 192,
                             seq 204, reqid 208, family 212, mode 214, replay_window 215,
                             flags 216, pad 217..223 (struct is 8-aligned)
    xfrm_usersa_id       24  daddr 0, spi 16, family 20, proto 22, pad 23
    xfrm_userspi_info   232  info 0, min 224, max 228
    xfrm_userpolicy_info 168 sel 0, lft 56, curlft 120, priority 152, index 156, dir 160,
                             action 161, flags 162, share 163, pad 164..167
    xfrm_userpolicy_id   64  sel 0, index 56, dir 60, pad 61..63
    xfrm_user_expire    232  state 0, hard 224, pad 225..231
    xfrm_user_acquire   280  id 0, saddr 24, sel 40, policy 96, aalgos 264, ealgos 268,
                             calgos 272, seq 276
    xfrm_usersa_flush     1  proto
    xfrm_user_tmpl       64  id 0, family 24, pad 26..27, saddr 28, reqid 44, mode 48,
                             share 49, optional 50, pad 51, aalgos 52, ealgos 56, calgos 60
    xfrm_encap_tmpl      24  encap_type 0, sport 2, dport 4 (network order), pad 6..7, oa 8
    xfrm_algo            68+ name[64] 0, key_len (bits) 64, key 68
    xfrm_algo_auth       72+ name[64] 0, key_len 64, trunc_len (bits) 68, key 72
    xfrm_algo_aead       72+ name[64] 0, key_len 64, icv_len (bits) 68, key 72
    xfrm_replay_state_esn 24+ bmp_len (words) 0, oseq 4, seq 8, oseq_hi 12, seq_hi 16,
                             replay_window 20, bmp[] 24
    xfrm_mark             8  v, m
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from pyroute2.netlink import nla, nlmsg

# -- constants (uapi xfrm.h) ----------------------------------------------------------
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_ACQUIRE = 0x17
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B
XFRM_MSG_FLUSHSA = 0x1C
XFRM_MSG_FLUSHPOLICY = 0x1D

# Multicast groups as a bind() bitmask (XFRMGRP_*), and the group numbers (XFRMNLGRP_*).
XFRMGRP_ACQUIRE = 1
XFRMGRP_EXPIRE = 2
XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2

XFRM_INF = 0xFFFF_FFFF_FFFF_FFFF

XFRM_MODE_TRANSPORT = 0
XFRM_MODE_TUNNEL = 1

XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2

XFRM_POLICY_ALLOW = 0

XFRM_STATE_NOECN = 1
XFRM_STATE_DECAP_DSCP = 2
XFRM_STATE_NOPMTUDISC = 4
XFRM_STATE_AF_UNSPEC = 32
XFRM_STATE_ESN = 128

XFRM_SA_XFLAG_DONT_ENCAP_DSCP = 1

UDP_ENCAP_ESPINUDP = 2

IPPROTO_ESP = 50

XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_SRCADDR = 13
XFRMA_LASTUSED = 15
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_REPLAY_ESN_VAL = 23
XFRMA_SA_EXTRA_FLAGS = 24
XFRMA_SET_MARK = 29  # "output mark" (Linux 4.14): the mark of the transformed packet
XFRMA_SET_MARK_MASK = 30  # (Linux 4.19): which bits of it XFRMA_SET_MARK sets
XFRMA_IF_ID = 31

ALG_NAME_LEN = 64


# -- field lists of the nested structs, flattened with a prefix -------------------------
Fields = tuple[tuple[str, str], ...]


def _selector(p: str) -> Fields:
    return (
        (f"{p}daddr", "16s"),
        (f"{p}saddr", "16s"),
        (f"{p}dport", ">H"),
        (f"{p}dport_mask", ">H"),
        (f"{p}sport", ">H"),
        (f"{p}sport_mask", ">H"),
        (f"{p}family", "H"),
        (f"{p}prefixlen_d", "B"),
        (f"{p}prefixlen_s", "B"),
        (f"{p}proto", "B"),
        (f"{p}_pad0", "3x"),
        (f"{p}ifindex", "i"),
        (f"{p}user", "I"),
    )


def _xfrm_id(p: str) -> Fields:
    return ((f"{p}daddr", "16s"), (f"{p}spi", ">I"), (f"{p}proto", "B"), (f"{p}_pad0", "3x"))


def _lifetime_cfg(p: str) -> Fields:
    names = (
        "soft_byte_limit",
        "hard_byte_limit",
        "soft_packet_limit",
        "hard_packet_limit",
        "soft_add_expires_seconds",
        "hard_add_expires_seconds",
        "soft_use_expires_seconds",
        "hard_use_expires_seconds",
    )
    return tuple((f"{p}{name}", "Q") for name in names)


def _lifetime_cur(p: str) -> Fields:
    return tuple((f"{p}{name}", "Q") for name in ("bytes", "packets", "add_time", "use_time"))


def _stats(p: str) -> Fields:
    return tuple((f"{p}{n}", "I") for n in ("replay_window", "replay", "integrity_failed"))


USERSA_INFO_FIELDS: Fields = (
    *_selector("sel_"),
    *_xfrm_id("id_"),
    ("saddr", "16s"),
    *_lifetime_cfg("lft_"),
    *_lifetime_cur("curlft_"),
    *_stats("stats_"),
    ("seq", "I"),
    ("reqid", "I"),
    ("family", "H"),
    ("mode", "B"),
    ("replay_window", "B"),
    ("flags", "B"),
    ("_pad_tail", "7x"),
)

USERPOLICY_INFO_FIELDS: Fields = (
    *_selector("sel_"),
    *_lifetime_cfg("lft_"),
    *_lifetime_cur("curlft_"),
    ("priority", "I"),
    ("index", "I"),
    ("dir", "B"),
    ("action", "B"),
    ("flags", "B"),
    ("share", "B"),
    ("_pad_tail", "4x"),
)


def _zero_defaults(fields: Fields) -> dict[str, Any]:
    """pyroute2 fills a missing field with 0, which `16s` cannot pack: give bytes instead."""
    return {name: bytes(struct.calcsize(fmt)) for name, fmt in fields if fmt.endswith("s")}


def struct_size(fields: Fields) -> int:
    return sum(struct.calcsize(fmt) for _, fmt in fields)


# -- attributes -------------------------------------------------------------------------
class _nla_with_tail(nla):
    """A fixed struct followed by a variable byte string (a key, a bitmap).

    The tail is the last field, format `s`: pyroute2 encodes it at its own length; decoding
    takes every byte the attribute header covers after the fixed part."""

    def ft_decode(self, offset: int) -> None:
        fixed = self.fields[:-1]
        for name, fmt in fixed:
            (self[name],) = struct.unpack_from(fmt, self.data, offset)
            offset += struct.calcsize(fmt)
        end = self.offset + self.length
        self[self.fields[-1][0]] = bytes(self.data[offset:end])
        self.pop("attrs", None)
        self.pop("value", None)


class _xfrm_attrs:
    """Attribute classes shared by the SA and policy messages (mixed into each nlmsg)."""

    class xfrm_algo(_nla_with_tail):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_key", "s"))

    class xfrm_algo_auth(_nla_with_tail):
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),
            ("alg_trunc_len", "I"),
            ("alg_key", "s"),
        )

    class xfrm_algo_aead(_nla_with_tail):
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),
            ("alg_icv_len", "I"),
            ("alg_key", "s"),
        )

    class xfrm_encap_tmpl(nla):
        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("_pad0", "2x"),
            ("encap_oa", "16s"),
        )
        defaults = {"encap_oa": bytes(16)}

    class xfrm_replay_state_esn(_nla_with_tail):
        fields = (
            ("bmp_len", "I"),
            ("oseq", "I"),
            ("seq", "I"),
            ("oseq_hi", "I"),
            ("seq_hi", "I"),
            ("replay_window", "I"),
            ("bmp", "s"),
        )

    class xfrm_user_tmpl(nla):
        fields = (
            *_xfrm_id("id_"),
            ("family", "H"),
            ("_pad0", "2x"),
            ("saddr", "16s"),
            ("reqid", "I"),
            ("mode", "B"),
            ("share", "B"),
            ("optional", "B"),
            ("_pad1", "x"),
            ("aalgos", "I"),
            ("ealgos", "I"),
            ("calgos", "I"),
        )
        defaults = {"id_daddr": bytes(16), "saddr": bytes(16)}

    class xfrm_mark(nla):
        fields = (("v", "I"), ("m", "I"))

    class xfrm_address(nla):
        fields = (("value", "16s"),)


_XFRMA_MAP = (
    (XFRMA_ALG_AUTH, "XFRMA_ALG_AUTH", "xfrm_algo"),
    (XFRMA_ALG_CRYPT, "XFRMA_ALG_CRYPT", "xfrm_algo"),
    (XFRMA_ENCAP, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
    (XFRMA_TMPL, "XFRMA_TMPL", "xfrm_user_tmpl"),
    (XFRMA_SRCADDR, "XFRMA_SRCADDR", "xfrm_address"),
    (XFRMA_LASTUSED, "XFRMA_LASTUSED", "uint64"),
    (XFRMA_ALG_AEAD, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
    (XFRMA_ALG_AUTH_TRUNC, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
    (XFRMA_MARK, "XFRMA_MARK", "xfrm_mark"),
    (XFRMA_REPLAY_ESN_VAL, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
    (XFRMA_SA_EXTRA_FLAGS, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
    (XFRMA_SET_MARK, "XFRMA_SET_MARK", "uint32"),
    (XFRMA_SET_MARK_MASK, "XFRMA_SET_MARK_MASK", "uint32"),
    (XFRMA_IF_ID, "XFRMA_IF_ID", "uint32"),
)


# -- messages ---------------------------------------------------------------------------
class xfrm_usersa_info(_xfrm_attrs, nlmsg):
    """NEWSA / UPDSA request; GETSA reply and SA dumps."""

    prefix = "XFRMA_"
    fields = USERSA_INFO_FIELDS
    defaults = _zero_defaults(USERSA_INFO_FIELDS)
    nla_map = _XFRMA_MAP


class xfrm_usersa_id(_xfrm_attrs, nlmsg):
    """DELSA / GETSA request: the SA's (daddr, spi, proto) key."""

    prefix = "XFRMA_"
    fields: Fields = (
        ("daddr", "16s"),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("_pad0", "x"),
    )
    defaults = {"daddr": bytes(16)}
    nla_map = _XFRMA_MAP


class xfrm_userspi_info(_xfrm_attrs, nlmsg):
    """ALLOCSPI request: an SA template and the SPI range to pick from."""

    prefix = "XFRMA_"
    fields: Fields = (*USERSA_INFO_FIELDS, ("min", "I"), ("max", "I"))
    defaults = _zero_defaults(USERSA_INFO_FIELDS)
    nla_map = _XFRMA_MAP


class xfrm_userpolicy_info(_xfrm_attrs, nlmsg):
    """NEWPOLICY / UPDPOLICY request; policy dumps."""

    prefix = "XFRMA_"
    fields = USERPOLICY_INFO_FIELDS
    defaults = _zero_defaults(USERPOLICY_INFO_FIELDS)
    nla_map = _XFRMA_MAP


class xfrm_userpolicy_id(_xfrm_attrs, nlmsg):
    """DELPOLICY / GETPOLICY request: selector and direction (plus XFRMA_IF_ID)."""

    prefix = "XFRMA_"
    fields: Fields = (*_selector("sel_"), ("index", "I"), ("dir", "B"), ("_pad_tail", "3x"))
    defaults = _zero_defaults(_selector("sel_"))
    nla_map = _XFRMA_MAP


class xfrm_user_expire(_xfrm_attrs, nlmsg):
    """EXPIRE notification: the SA and whether the hard limit was reached."""

    prefix = "XFRMA_"
    fields: Fields = (*USERSA_INFO_FIELDS, ("hard", "B"), ("_pad_expire", "7x"))
    defaults = _zero_defaults(USERSA_INFO_FIELDS)
    nla_map = _XFRMA_MAP


ACQUIRE_FIELDS: Fields = (
    *_xfrm_id("id_"),
    ("saddr", "16s"),
    *_selector("sel_"),
    *((f"policy_{name}", fmt) for name, fmt in USERPOLICY_INFO_FIELDS),
    ("aalgos", "I"),
    ("ealgos", "I"),
    ("calgos", "I"),
    ("seq", "I"),
)


class xfrm_user_acquire(_xfrm_attrs, nlmsg):
    """ACQUIRE notification: a packet matched an outbound policy that has no SA."""

    prefix = "XFRMA_"
    fields = ACQUIRE_FIELDS
    defaults = _zero_defaults(ACQUIRE_FIELDS)
    nla_map = _XFRMA_MAP


class xfrm_usersa_flush(nlmsg):
    """FLUSHSA request: remove every SA of a protocol."""

    fields: Fields = (("proto", "B"),)


class xfrm_empty(nlmsg):
    """A message with no body (FLUSHPOLICY)."""

    fields: Fields = ()


# Messages the kernel sends us, by type.
MESSAGE_CLASSES: dict[int, type[nlmsg]] = {
    XFRM_MSG_NEWSA: xfrm_usersa_info,
    XFRM_MSG_UPDSA: xfrm_usersa_info,
    XFRM_MSG_DELSA: xfrm_usersa_id,
    XFRM_MSG_NEWPOLICY: xfrm_userpolicy_info,
    XFRM_MSG_UPDPOLICY: xfrm_userpolicy_info,
    XFRM_MSG_DELPOLICY: xfrm_userpolicy_id,
    XFRM_MSG_EXPIRE: xfrm_user_expire,
    XFRM_MSG_ACQUIRE: xfrm_user_acquire,
}


# -- addresses --------------------------------------------------------------------------
def pack_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bytes:
    """xfrm_address_t: 16 bytes, an IPv4 address in the first 4 (network order)."""
    if address is None:
        return bytes(16)
    return address.packed.ljust(16, b"\0")


def unpack_address(raw: bytes, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if family == socket.AF_INET6:
        return ipaddress.IPv6Address(bytes(raw[:16]))
    return ipaddress.IPv4Address(bytes(raw[:4]))


def address_family(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def pack_alg_name(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) >= ALG_NAME_LEN:
        raise ValueError(f"algorithm name {name!r} longer than {ALG_NAME_LEN - 1} bytes")
    return raw.ljust(ALG_NAME_LEN, b"\0")


def unpack_alg_name(raw: bytes) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("ascii", "replace")
