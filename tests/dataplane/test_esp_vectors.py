"""Known-answer tests for ESP: every tests/dataplane/vectors/*.json (schema in its README).

Sources: draft-mcgrew-gcm-test-01 (AES-GCM ESP, RFC 4106), RFC 7634 Appendix A
(ChaCha20-Poly1305 ESP), RFC 3602 section 4 cases 5-8 (AES-CBC ESP); golden packets
captured from Linux drop in beside them.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from core.dataplane.model import Direction, EspAlgorithm, EspIntegrity, SaMode, SaSpec
from core.dataplane.userspace.esp import DropKind, EspDropped, EspSa

VECTOR_DIR = Path(__file__).parent / "vectors"


def _load_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    cases = []
    for path in sorted(VECTOR_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        for vector in document["vectors"]:
            for index, packet in enumerate(vector["packets"]):
                cases.append((f"{path.stem}:{vector['name']}:{index}", vector["sa"], packet))
    return cases


CASES = _load_cases()


def _sa(sa: dict[str, Any], direction: Direction) -> EspSa:
    spec = SaSpec(
        spi=int(sa["spi"], 16),
        direction=direction,
        src=ipaddress.ip_address(sa.get("src", "198.51.100.1")),
        dst=ipaddress.ip_address(sa.get("dst", "198.51.100.2")),
        mode=SaMode(sa["mode"]),
        algorithm=EspAlgorithm(sa["algorithm"]),
        encryption_key=bytes.fromhex(sa["encryption_key"]),
        integrity=EspIntegrity(sa.get("integrity", "none")),
        integrity_key=bytes.fromhex(sa.get("integrity_key", "")),
        esn=sa["esn"],
    )
    return EspSa(spec, now=0.0)


def test_the_vector_files_are_present() -> None:
    names = {path.name for path in VECTOR_DIR.glob("*.json")}
    assert {
        "rfc4106-mcgrew-gcm-test.json",
        "rfc7634-appendix-a.json",
        "rfc3602-aes-cbc-cases-5-8.json",
    } <= names
    assert len(CASES) >= 19


@pytest.mark.parametrize(("sa", "packet"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unprotect_gives_the_known_payload(sa: dict[str, Any], packet: dict[str, Any]) -> None:
    inbound = _sa(sa, Direction.IN)
    next_header, payload = inbound.unprotect(bytes.fromhex(packet["esp"]), packet["seq"])
    assert next_header == packet["next_header"]
    assert payload.hex() == packet["payload"]


@pytest.mark.parametrize(("sa", "packet"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_protect_gives_the_known_packet(sa: dict[str, Any], packet: dict[str, Any]) -> None:
    if not packet.get("reproduce", True):
        pytest.skip("sender padded beyond the minimum (TFC): not reproducible")
    outbound = _sa(sa, Direction.OUT)
    esp = outbound.protect(
        bytes.fromhex(packet["payload"]),
        packet["next_header"],
        packet["seq"],
        iv=bytes.fromhex(packet["iv"]),
    )
    assert esp.hex() == packet["esp"]


@pytest.mark.parametrize(("sa", "packet"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_flipped_bit_is_caught(sa: dict[str, Any], packet: dict[str, Any]) -> None:
    if sa["algorithm"] == "aes-cbc" and sa.get("integrity", "none") == "none":
        pytest.skip("no integrity algorithm: nothing can catch a flipped bit")
    esp = bytearray.fromhex(packet["esp"])
    esp[-1] ^= 0x01
    with pytest.raises(EspDropped) as caught:
        _sa(sa, Direction.IN).unprotect(bytes(esp), packet["seq"])
    assert caught.value.kind is DropKind.INTEGRITY


DECAPSULATABLE = [c for c in CASES if "inner" in c[2]]


@pytest.mark.parametrize(
    ("sa", "packet"), [c[1:] for c in DECAPSULATABLE], ids=[c[0] for c in DECAPSULATABLE]
)
def test_decapsulate_returns_the_inner_packet(sa: dict[str, Any], packet: dict[str, Any]) -> None:
    inbound = _sa(sa, Direction.IN)
    assert inbound.decapsulate(bytes.fromhex(packet["esp"])).hex() == packet["inner"]
    assert inbound.counters().packets == 1
