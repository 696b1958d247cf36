"""Writes the seed corpus of every fuzz target: `python -m tests.robustness.seed_corpus`.

Seeds are real inputs (each message of scripted good runs, valid ESP packets, control
requests, the example config), so the fuzzers start from deep inside each format.  One
raw file per input in tests/robustness/corpus/<target>/, named `seed-<what>`; inputs a
long run found interesting are merged in as `<sha1>` files by scripts/fuzz.sh.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.ike.constants import NON_ESP_MARKER
from tests.ike.v2 import pair as v2pair
from tests.robustness import keyed_v1, keyed_v2

CORPUS = Path(__file__).resolve().parent / "corpus"
REPO = CORPUS.parents[2]


def _strip(data: bytes) -> bytes:
    return data[4:] if data.startswith(NON_ESP_MARKER) else data


def ikev2_messages() -> dict[str, bytes]:
    p = v2pair.policy()
    pair = v2pair.Pair(p, v2pair.mirror(p))
    pair.connect()
    pair.a.endpoint.rekey("peer", pair.now)
    pair.deliver()
    pair.b.endpoint.rekey("peer", pair.now, ike=True)
    pair.deliver()
    pair.advance(30)
    sent = [("a", d) for d in pair.a.sent] + [("b", d) for d in pair.b.sent]
    return {
        f"{side}{i:02d}-x{d.data[18 if d.data[:4] != NON_ESP_MARKER else 22]}": _strip(d.data)
        for i, (side, d) in enumerate(sent)
    }


def ikev1_messages() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for mode in ("main", "aggressive"):
        pair = keyed_v1.new_pair(mode)
        pair.connect()
        pair.a.endpoint.rekey("peer", pair.now)
        pair.deliver()
        pair.advance(30)
        for index, (side, datagram) in enumerate(pair.wire):
            out[f"{mode}-{side}{index:02d}"] = _strip(datagram.data)
    return out


def esp_inputs() -> dict[str, bytes]:
    from core.dataplane.userspace.packet import build_ipv4_header

    inner = build_ipv4_header(
        src=__import__("ipaddress").IPv4Address("10.0.0.1"),
        dst=__import__("ipaddress").IPv4Address("10.0.0.2"),
        protocol=1,
        payload_length=12,
    ) + bytes(12)
    out = {}
    for config in (0x10, 0x21, 0x22, 0x23, 0x14, 0x18, 0x30):
        packets = b""
        for seq in (1, 2, 2, 5, 3):
            trailer_pad = -(len(inner) + 2) % 4
            plain = inner + bytes(range(1, trailer_pad + 1)) + bytes((trailer_pad, 4))
            packets += bytes([1]) + seq.to_bytes(4, "big") + len(plain).to_bytes(2, "big") + plain
        out[f"config{config:02x}"] = bytes([config]) + packets
    return out


def control_inputs() -> dict[str, bytes]:
    requests = [
        {"id": 1, "cmd": "ping"},
        {"id": "x", "cmd": "status", "peer": "branch1"},
        {"cmd": "up", "peer": "a"},
        {"id": None, "cmd": "rekey", "peer": "a", "ike": True},
        {"id": 2.5, "cmd": "config-apply", "text": "[global]\nenabled = true\n"},
        {"id": 3, "cmd": "subscribe"},
        {"id": 4, "cmd": "nope", "extra": [1, {"a": None}]},
    ]
    out = {f"request{i}": json.dumps(r).encode() + b"\n" for i, r in enumerate(requests)}
    out["nested"] = b'{"id": [[[[1]]]], "cmd": {"a": {"b": [true, false, null]}}}'
    return out


def config_inputs() -> dict[str, bytes]:
    out = {"example": (REPO / "config.toml").read_bytes()}
    out["small"] = (
        b'[global]\nenabled = true\nsocket = "/run/x.sock"\n\n[[peer]]\nname = "b1"\n'
        b'interface = "ipsec1"\nlocal_address = "198.51.100.1"\nremote_address = "dynamic"\n'
        b'remote_id = "fqdn:b.example"\npsk = "secret"\nike_version = 1\n'
        b'exchange_mode = "aggressive"\nroutes = ["10.1.0.0/24"]\ntcp_mss = 1300\n'
    )
    return out


def write_all() -> dict[str, int]:
    groups = {
        "ikev2_decoder": ikev2_messages(),
        "ikev1_decoder": ikev1_messages(),
        "ikev2_engine": keyed_v2.seeds(),
        "ikev1_engine": keyed_v1.seeds(),
        "esp": esp_inputs(),
        "control": control_inputs(),
        "config": config_inputs(),
    }
    counts = {}
    for target, inputs in groups.items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for name, data in inputs.items():
            (folder / f"seed-{name}").write_bytes(data)
        counts[target] = len(inputs)
    return counts


if __name__ == "__main__":
    for target, count in write_all().items():
        print(f"{target}: {count} seeds")
