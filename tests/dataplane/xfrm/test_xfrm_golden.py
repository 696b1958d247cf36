"""Our XFRM requests against what iproute2 sends for the same `ip xfrm` command.

The golden files hold the body of iproute2's request (after the 16-byte nlmsghdr) and the
command that produced it; golden/capture.py re-creates them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import struct
from pathlib import Path

import pytest

from core.dataplane.model import (
    Direction,
    EspAlgorithm,
    EspIntegrity,
    Lifetime,
    SaMode,
    SaSpec,
    UdpEncap,
    if_id_for,
)
from core.dataplane.xfrm import messages as m
from core.dataplane.xfrm import requests as rq

GOLDEN = Path(__file__).parent / "golden"
KEY_GCM = bytes(range(20))
KEY_CBC = bytes(range(0x10, 0x20))
KEY_SHA = bytes(range(0x20, 0x40))
V4 = ipaddress.IPv4Address
FLAG_NAMES = {"NLM_F_REQUEST": 1, "NLM_F_ACK": 4}


def golden(name: str) -> tuple[int, int, bytes]:
    record = json.loads((GOLDEN / f"{name}.json").read_text())
    msg_type = getattr(m, str(record["nlmsg_type"]))
    flags = sum(FLAG_NAMES[f] for f in str(record["nlmsg_flags"]).split("|"))
    return msg_type, flags, bytes.fromhex(str(record["body_hex"]))


def body_of(request: rq.Request) -> bytes:
    data = request.encode(seq=7)
    length, msg_type, flags, seq, _pid = struct.unpack_from("=IHHII", data)
    assert (length, msg_type, flags, seq) == (len(data), request.msg_type, request.flags, 7)
    return data[16:]


def assert_same(name: str, request: rq.Request) -> None:
    msg_type, flags, body = golden(name)
    assert (request.msg_type, request.flags) == (msg_type, flags)
    assert body_of(request).hex() == body.hex()


GCM_ESN = SaSpec(
    spi=0x01020304,
    direction=Direction.OUT,
    src=V4("198.51.100.1"),
    dst=V4("198.51.100.2"),
    mode=SaMode.TUNNEL,
    algorithm=EspAlgorithm.AES_GCM_16,
    encryption_key=KEY_GCM,
    esn=True,
    replay_window=128,
    if_id=if_id_for(1),
)

CBC_ENCAP = SaSpec(
    spi=0xC0FFEE01,
    direction=Direction.IN,
    src=V4("203.0.113.5"),
    dst=V4("198.51.100.2"),
    mode=SaMode.TUNNEL,
    algorithm=EspAlgorithm.AES_CBC,
    encryption_key=KEY_CBC,
    integrity=EspIntegrity.HMAC_SHA2_256_128,
    integrity_key=KEY_SHA,
    replay_window=32,
    encap=UdpEncap(sport=4500, dport=4501),
    if_id=if_id_for(2),
    lifetime=Lifetime(
        soft_bytes=1_000_000,
        hard_bytes=2_000_000,
        soft_packets=500,
        hard_packets=1000,
        soft_seconds=3000,
        hard_seconds=3600,
    ),
)

GCM_V6_TRANSPORT = SaSpec(
    spi=0x1000,
    direction=Direction.OUT,
    src=ipaddress.IPv6Address("2001:db8::1"),
    dst=ipaddress.IPv6Address("2001:db8::2"),
    mode=SaMode.TRANSPORT,
    algorithm=EspAlgorithm.AES_GCM_16,
    encryption_key=KEY_GCM,
    replay_window=64,
    if_id=if_id_for(3),
)


def test_newsa_aes_gcm_with_esn_matches_iproute2() -> None:
    assert_same("newsa_gcm_esn", rq.newsa(GCM_ESN))


def test_newsa_cbc_sha256_udp_encap_and_limits_matches_iproute2() -> None:
    assert_same("newsa_cbc_sha256_encap", rq.newsa(CBC_ENCAP))


def test_newsa_ipv6_transport_with_wide_window_matches_iproute2() -> None:
    assert_same("newsa_gcm_v6_transport", rq.newsa(GCM_V6_TRANSPORT))


def test_delsa_and_getsa_match_iproute2() -> None:
    assert_same("delsa", rq.delsa(V4("198.51.100.2"), 0x01020304, V4("198.51.100.1")))
    assert_same("getsa", rq.getsa(V4("198.51.100.2"), 0x01020304, V4("198.51.100.1")))


def test_allocspi_matches_iproute2() -> None:
    request = rq.allocspi(V4("198.51.100.1"), V4("198.51.100.2"), 0x100, 0xFFFF, SaMode.TUNNEL)
    assert_same("allocspi", request)


def test_policies_match_iproute2() -> None:
    out = rq.PolicyTemplate(SaMode.TUNNEL, socket.AF_INET, V4("198.51.100.1"), V4("198.51.100.2"))
    assert_same("newpolicy_out", rq.newpolicy(m.XFRM_POLICY_OUT, if_id_for(1), out))
    inbound = rq.PolicyTemplate(SaMode.TUNNEL, socket.AF_INET)
    assert_same("newpolicy_in", rq.newpolicy(m.XFRM_POLICY_IN, if_id_for(1), inbound))
    assert_same("delpolicy_fwd", rq.delpolicy(m.XFRM_POLICY_FWD, if_id_for(1)))


def test_flushsa_matches_iproute2() -> None:
    assert_same("flushsa", rq.flushsa())


def test_update_variants_only_change_the_message_type() -> None:
    assert rq.updsa(GCM_ESN).msg_type == m.XFRM_MSG_UPDSA
    assert body_of(rq.updsa(GCM_ESN)) == body_of(rq.newsa(GCM_ESN))
    tmpl = rq.PolicyTemplate(SaMode.TUNNEL, socket.AF_INET)
    update = rq.newpolicy(m.XFRM_POLICY_IN, 9, tmpl, update=True)
    assert update.msg_type == m.XFRM_MSG_UPDPOLICY


@pytest.mark.parametrize(
    ("algorithm", "integrity"),
    [
        (EspAlgorithm.AES_CBC, EspIntegrity.NONE),
        (EspAlgorithm.AES_GCM_16, EspIntegrity.HMAC_SHA1_96),
    ],
)
def test_impossible_transform_is_refused(algorithm: EspAlgorithm, integrity: EspIntegrity) -> None:
    bad = SaSpec(
        spi=1,
        direction=Direction.OUT,
        src=V4("198.51.100.1"),
        dst=V4("198.51.100.2"),
        mode=SaMode.TUNNEL,
        algorithm=algorithm,
        encryption_key=bytes(20),
        integrity=integrity,
        integrity_key=bytes(20),
    )
    with pytest.raises(rq.InvalidSaError, match="0x00000001"):
        rq.newsa(bad)


def test_only_outbound_transport_sas_set_the_bypass_mark() -> None:
    inbound = dataclasses.replace(GCM_V6_TRANSPORT, direction=Direction.IN)
    attrs = dict(rq.newsa(inbound).msg["attrs"])
    assert "XFRMA_SET_MARK" not in attrs and "XFRMA_SET_MARK_MASK" not in attrs
    assert "XFRMA_SET_MARK" in dict(rq.newsa(GCM_V6_TRANSPORT).msg["attrs"])
