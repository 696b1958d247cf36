"""The VICI codec against the encoding example of strongSwan's vici README, round trips,
malformed input, and the parsing of a `list-sa` event into SA records (no root)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.interop.sa_info import parse_list_sa
from tests.interop.vici import (
    Message,
    PacketType,
    ViciError,
    decode_message,
    decode_packet,
    encode_message,
    encode_packet,
)

# The README's example: key1 = value1, section1 = { sub-section = { key2 = value2 },
# list1 = [ item1, item2 ] }, byte for byte.
README_EXAMPLE = bytes(
    [3, 4, *b"key1", 0, 6, *b"value1",
     1, 8, *b"section1",
     1, 11, *b"sub-section",
     3, 4, *b"key2", 0, 6, *b"value2",
     2,
     4, 5, *b"list1",
     5, 0, 5, *b"item1",
     5, 0, 5, *b"item2",
     6,
     2]
)  # fmt: skip
README_MESSAGE: Message = {
    "key1": "value1",
    "section1": {"sub-section": {"key2": "value2"}, "list1": ["item1", "item2"]},
}


def test_readme_example_encodes_and_decodes() -> None:
    assert encode_message(README_MESSAGE) == README_EXAMPLE
    assert decode_message(README_EXAMPLE) == README_MESSAGE


def test_packet_framing_names_only_named_types() -> None:
    request = encode_packet(PacketType.CMD_REQUEST, "version", {})
    assert request == b"\x00\x00\x00\x09\x00\x07version"
    response = encode_packet(PacketType.CMD_RESPONSE, None, {"a": "b"})
    assert decode_packet(response[4:]) == (PacketType.CMD_RESPONSE, None, {"a": "b"})


def test_booleans_and_numbers_become_text() -> None:
    assert decode_message(encode_message({"force": True, "timeout": -1})) == {
        "force": "yes",
        "timeout": "-1",
    }


names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
values = st.text(max_size=40)
messages = st.recursive(
    st.dictionaries(names, values | st.lists(values, max_size=4), max_size=4),
    lambda children: st.dictionaries(names, children, max_size=3),
    max_leaves=12,
)


# Timing is not what this checks: on a loaded machine one draw stalled for 1.3 s (the
# others took 2 ms) and the too_slow health check failed the run.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    "data",
    [
        README_EXAMPLE[:-1],  # unterminated section
        README_EXAMPLE[:5],  # truncated name
        bytes([3, 1, *b"k", 0, 9, *b"short"]),  # value shorter than its length
        bytes([2]),  # SECTION_END at the top
        bytes([9]),  # unknown element
        bytes([4, 1, *b"l", 3, 1, *b"k", 0, 0]),  # KEY_VALUE inside a list
    ],
)
def test_malformed_messages_raise_vici_error(data: bytes) -> None:
    with pytest.raises(ViciError):
        decode_message(data)


def test_unknown_packet_type_raises_vici_error() -> None:
    with pytest.raises(ViciError):
        decode_packet(bytes([42]))


@given(st.binary(max_size=64))
def test_garbage_raises_only_vici_error(data: bytes) -> None:
    try:
        kind, _, message = decode_packet(data)
    except ViciError:
        return
    assert isinstance(kind, PacketType) and isinstance(message, dict)


LIST_SA_EVENT: Message = {
    "gw": {
        "uniqueid": "3", "version": "2", "state": "ESTABLISHED",
        "local-host": "198.51.100.1", "local-port": "4500", "local-id": "198.51.100.1",
        "remote-host": "198.51.100.2", "remote-port": "4500", "remote-id": "198.51.100.2",
        "initiator": "yes", "nat-remote": "yes", "nat-any": "yes",
        "encr-alg": "AES_CBC", "encr-keysize": "256", "integ-alg": "HMAC_SHA2_256_128",
        "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "MODP_2048",
        "child-sas": {
            "net-7": {
                "name": "net", "uniqueid": "7", "state": "INSTALLED", "mode": "TUNNEL",
                "encap": "yes", "spi-in": "c1", "spi-out": "c2", "encr-alg": "AES_GCM_16",
                "encr-keysize": "128", "packets-in": "5", "packets-out": "4",
                "local-ts": ["10.1.0.0/24"], "remote-ts": ["10.2.0.0/24"],
            },
            "net-6": {"name": "net", "uniqueid": "6", "state": "REKEYED"},
        },
    }
}  # fmt: skip


def test_list_sa_event_parses_into_records() -> None:
    (ike,) = parse_list_sa(LIST_SA_EVENT)
    assert (ike.name, ike.version, ike.state, ike.initiator) == ("gw", 2, "ESTABLISHED", True)
    assert (ike.local_port, ike.remote_port, ike.nat_any, ike.nat_fake) == (4500, 4500, True, False)
    assert ike.proposal == "AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048"
    assert [child.uniqueid for child in ike.children] == ["7", "6"]
    (child,) = ike.installed
    assert (child.name, child.proposal, child.encap) == ("net", "AES_GCM_16_128", True)
    assert (child.local_ts, child.remote_ts) == (("10.1.0.0/24",), ("10.2.0.0/24",))
    assert (child.packets_in, child.packets_out) == (5, 4)
