"""Kernel-backend pieces that need no kernel: decoding, events, counters, nft, the socket loop."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import struct
from pathlib import Path
from typing import Any, cast

import pytest

from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    ExpiryKind,
    InterfaceSpec,
    SaExpired,
    SaMode,
    SaSpec,
    TrafficWhileDown,
    if_id_for,
)
from core.dataplane.xfrm import messages as m
from core.dataplane.xfrm import nft
from core.dataplane.xfrm import requests as rq
from core.dataplane.xfrm.backend import XfrmDataplane, _sa_counters
from core.dataplane.xfrm.interfaces import Interfaces
from core.dataplane.xfrm.links import Links
from core.dataplane.xfrm.netlink import NetlinkError, XfrmSocket, decode, parse_messages

GOLDEN = Path(__file__).parent / "golden"
V4 = ipaddress.IPv4Address
IF_ID = if_id_for(4)


def golden_message(name: str, msg_type: int) -> Any:
    body = bytes.fromhex(json.loads((GOLDEN / f"{name}.json").read_text())["body_hex"])
    raw = struct.pack("=IHHII", 16 + len(body), msg_type, 5, 1, 0) + body
    return decode(msg_type, raw)


def sa_spec(spi: int, direction: Direction, src: str, dst: str) -> SaSpec:
    return SaSpec(
        spi=spi,
        direction=direction,
        src=V4(src),
        dst=V4(dst),
        mode=SaMode.TUNNEL,
        algorithm=EspAlgorithm.AES_GCM_16,
        encryption_key=bytes(20),
        if_id=IF_ID,
    )


# -- decoding what iproute2 sent --------------------------------------------------------
def test_decode_newsa_gives_every_field_back() -> None:
    msg = golden_message("newsa_cbc_sha256_encap", m.XFRM_MSG_NEWSA)
    assert m.unpack_address(msg["id_daddr"], msg["family"]) == V4("198.51.100.2")
    assert m.unpack_address(msg["saddr"], msg["family"]) == V4("203.0.113.5")
    assert (msg["id_spi"], msg["id_proto"], msg["mode"]) == (0xC0FFEE01, 50, m.XFRM_MODE_TUNNEL)
    assert (msg["reqid"], msg["replay_window"], msg["sel_family"]) == (0x72620002, 32, 2)
    assert msg["lft_hard_add_expires_seconds"] == 3600
    assert msg["lft_soft_packet_limit"] == 500
    crypt = msg.get_attr("XFRMA_ALG_CRYPT")
    assert m.unpack_alg_name(crypt["alg_name"]) == "cbc(aes)"
    assert crypt["alg_key"] == bytes(range(0x10, 0x20))
    auth = msg.get_attr("XFRMA_ALG_AUTH_TRUNC")
    assert (m.unpack_alg_name(auth["alg_name"]), auth["alg_trunc_len"]) == ("hmac(sha256)", 128)
    encap = msg.get_attr("XFRMA_ENCAP")
    assert (encap["encap_type"], encap["encap_sport"], encap["encap_dport"]) == (2, 4500, 4501)
    assert msg.get_attr("XFRMA_SA_EXTRA_FLAGS") == m.XFRM_SA_XFLAG_DONT_ENCAP_DSCP
    assert msg.get_attr("XFRMA_IF_ID") == 0x72620002


def test_decode_esn_replay_state_and_policy_template() -> None:
    sa = golden_message("newsa_gcm_esn", m.XFRM_MSG_NEWSA)
    esn = sa.get_attr("XFRMA_REPLAY_ESN_VAL")
    assert (esn["bmp_len"], esn["replay_window"], esn["bmp"]) == (4, 128, b"")
    assert sa["flags"] & m.XFRM_STATE_ESN
    policy = golden_message("newpolicy_out", m.XFRM_MSG_NEWPOLICY)
    tmpl = policy.get_attr("XFRMA_TMPL")
    assert policy["dir"] == m.XFRM_POLICY_OUT
    assert m.unpack_address(tmpl["id_daddr"], tmpl["family"]) == V4("198.51.100.2")
    assert (tmpl["reqid"], tmpl["mode"], tmpl["ealgos"]) == (0x72620001, 1, 0xFFFFFFFF)


def test_messages_round_trip_through_our_encoder() -> None:
    request = rq.newsa(sa_spec(0x42, Direction.OUT, "198.51.100.1", "198.51.100.2"))
    (msg_type, seq, raw), *rest = parse_messages(request.encode(seq=9))
    assert (msg_type, seq, rest) == (m.XFRM_MSG_NEWSA, 9, [])
    decoded = decode(msg_type, raw)
    assert decoded is not None and decoded["id_spi"] == 0x42


def test_parse_messages_stops_at_a_lying_length() -> None:
    good = rq.flushsa().encode(seq=1)
    bad = struct.pack("=IHHII", 4000, 0x10, 0, 2, 0)
    assert [seq for _t, seq, _r in parse_messages(good + bad)] == [1]
    assert list(parse_messages(b"\x01\x02")) == []


# -- events ----------------------------------------------------------------------------
def expire_event(spi: int, hard: bool, if_id: int) -> Any:
    msg = m.xfrm_user_expire()
    msg.update({"id_spi": spi, "id_proto": 50, "family": 2, "hard": int(hard)})
    msg["attrs"] = [("XFRMA_IF_ID", if_id)]
    request = rq.Request(m.XFRM_MSG_EXPIRE, 0, msg)
    return decode(m.XFRM_MSG_EXPIRE, request.encode())


def test_expire_becomes_sa_expired_and_a_hard_one_forgets_the_sa() -> None:
    backend = XfrmDataplane()
    backend._sas[(0x77, Direction.IN, IF_ID)] = sa_spec(0x77, Direction.IN, "1.1.1.1", "2.2.2.2")
    soft = backend._to_event(m.XFRM_MSG_EXPIRE, expire_event(0x77, False, IF_ID))
    assert soft == SaExpired(0x77, Direction.IN, ExpiryKind.SOFT, IF_ID)
    hard = backend._to_event(m.XFRM_MSG_EXPIRE, expire_event(0x77, True, IF_ID))
    assert hard == SaExpired(0x77, Direction.IN, ExpiryKind.HARD, IF_ID)
    assert backend._sas == {}
    assert backend._to_event(m.XFRM_MSG_EXPIRE, expire_event(0x77, True, IF_ID)) is None


def test_events_of_other_software_are_ignored() -> None:
    backend = XfrmDataplane()
    backend._sas[(0x77, Direction.IN, 5)] = sa_spec(0x77, Direction.IN, "1.1.1.1", "2.2.2.2")
    assert backend._to_event(m.XFRM_MSG_EXPIRE, expire_event(0x77, False, 5)) is None


def test_acquire_names_the_interface() -> None:
    backend = XfrmDataplane()
    interfaces = Interfaces(cast(Links, None), None)  # no kernel calls in this test
    interfaces.specs["ipsec4"] = InterfaceSpec("ipsec4", IF_ID)
    backend._interfaces = interfaces
    msg = m.xfrm_user_acquire()
    msg["attrs"] = [("XFRMA_IF_ID", IF_ID)]
    acquire = decode(m.XFRM_MSG_ACQUIRE, rq.Request(m.XFRM_MSG_ACQUIRE, 0, msg).encode())
    assert backend._to_event(m.XFRM_MSG_ACQUIRE, acquire) == TrafficWhileDown(IF_ID, "ipsec4")


# -- counters and policy templates -------------------------------------------------------
def test_sa_counters_add_both_replay_counts() -> None:
    msg = m.xfrm_usersa_info()
    msg.update(
        {
            "curlft_bytes": 1500,
            "curlft_packets": 3,
            "stats_replay": 2,
            "stats_replay_window": 5,
            "stats_integrity_failed": 7,
        }
    )
    state = decode(m.XFRM_MSG_NEWSA, rq.Request(m.XFRM_MSG_NEWSA, 0, msg).encode())
    counters = _sa_counters(state)
    assert (counters.bytes, counters.packets) == (1500, 3)
    assert (counters.replay_errors, counters.integrity_errors) == (7, 7)
    assert counters.last_used is None


def test_outbound_template_follows_the_outbound_sa_or_the_reversed_inbound_one() -> None:
    backend = XfrmDataplane()
    assert backend._templates(IF_ID) is None
    backend._sas[(1, Direction.IN, IF_ID)] = sa_spec(1, Direction.IN, "203.0.113.9", "198.51.100.1")
    inbound, outbound = backend._templates(IF_ID) or (None, None)
    assert inbound == rq.PolicyTemplate(SaMode.TUNNEL, socket.AF_INET)
    assert outbound is not None
    assert (outbound.src, outbound.dst) == (V4("198.51.100.1"), V4("203.0.113.9"))
    backend._sas[(2, Direction.OUT, IF_ID)] = sa_spec(2, Direction.OUT, "198.51.100.1", "1.2.3.4")
    _inbound, outbound = backend._templates(IF_ID) or (None, None)
    assert outbound is not None and outbound.dst == V4("1.2.3.4")


# -- nftables ----------------------------------------------------------------------------
def test_nft_table_clamps_mss_and_blocks_ipv6_forwarding() -> None:
    script = nft.render(
        [InterfaceSpec("ipsec1", 1, tcp_mss=1360), InterfaceSpec("ipsec0", 0, tcp_mss=None)]
    )
    assert script.startswith("table inet rbipsec\ndelete table inet rbipsec\n")
    clamp = "tcp flags syn tcp option maxseg size > 1360 tcp option maxseg size set 1360"
    assert script.count(clamp) == 4  # forward both ways, output, input
    assert 'meta nfproto ipv6 oifname "ipsec0" drop' in script
    assert 'ipsec0" tcp' not in script


def test_nft_without_interfaces_only_removes_the_table() -> None:
    assert nft.render([]) == "table inet rbipsec\ndelete table inet rbipsec\n"


def test_nft_refuses_names_that_would_inject_rules() -> None:
    with pytest.raises(nft.NftError):
        nft.render([InterfaceSpec('x" accept; #', 1)])


# -- the request/answer loop, on a scripted socket ----------------------------------------
class ScriptedSocket:
    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, _size: int, _flags: int = 0) -> bytes:
        return self.answers.pop(0)


def answer(msg_type: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, seq, 0) + body


def scripted(answers: list[bytes]) -> XfrmSocket:
    return XfrmSocket(sock=ScriptedSocket(answers))  # type: ignore[arg-type]


def test_an_error_answer_raises_netlink_error_with_its_errno() -> None:
    sock = scripted([answer(2, 99, struct.pack("=i", -1)), answer(2, 1, struct.pack("=i", -17))])
    with pytest.raises(NetlinkError) as caught:
        sock.request(rq.flushsa())
    assert caught.value.errno == errno.EEXIST


def test_a_dump_collects_until_done() -> None:
    state = rq.newsa(sa_spec(5, Direction.OUT, "198.51.100.1", "198.51.100.2")).encode(seq=1)
    done = answer(3, 1, struct.pack("=i", 0))
    sock = scripted([state + done])
    (reply,) = sock.request(rq.dump_sas())
    assert reply["id_spi"] == 5
