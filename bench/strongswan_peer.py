"""strongSwan kernel-libipsec as a tunnel peer for bench/bench_dataplane.py (root only).

    from bench.strongswan_peer import StrongswanPeer
    peers = [RbipsecPeer(...), StrongswanPeer(suite="aes-gcm-128")]

`StrongswanPeer.tunnel()` builds what `TunnelPeer` promises: two namespaces joined by a
veth (198.51.100.1/.2), a private charon in each (tests/interop/harness.py), an IKEv2 PSK
tunnel with the ESP suite asked for, 10.0.0.1 on A's `ipsec0` and 10.0.0.2 on B's, routes
through `ipsec0`, and yields the two namespace names once a ping passes.  kernel-libipsec
always encapsulates ESP in UDP 4500, so `encap` is accepted for symmetry and ignored.

    sudo python bench/strongswan_peer.py [--suite aes-gcm-128]   # bring it up, ping, exit
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.interop.harness import (  # noqa: E402  (path fix first)
    Charon,
    Child,
    Connection,
    HarnessError,
    TunSetup,
    namespace_pair,
)

INNER_A, INNER_B = "10.0.0.1", "10.0.0.2"
OUTER_A, OUTER_B = "198.51.100.1", "198.51.100.2"
IKE_PROPOSAL = "aes256gcm16-prfsha256-x25519"
# bench_dataplane suite name -> strongSwan ESP proposal
ESP_PROPOSALS = {
    "aes-gcm-128": "aes128gcm16",
    "aes-gcm-256": "aes256gcm16",
    "chacha20-poly1305": "chacha20poly1305",
    "aes-cbc-256-sha256": "aes256-sha256",
}


def _connection(local: str, remote: str, esp: str) -> Connection:
    child = Child("bench", esp_proposals=(esp,))
    return Connection("bench", local, remote, "bench-psk", (child,), proposals=(IKE_PROPOSAL,))


@dataclass
class StrongswanPeer:
    suite: str = "aes-gcm-128"
    encap: bool = True  # kernel-libipsec encapsulates whatever this says
    name: str = "strongswan-libipsec"
    charons: list[Charon] = field(default_factory=list, repr=False)  # while a tunnel is up

    @contextlib.contextmanager
    def tunnel(self) -> Iterator[tuple[str, str]]:
        esp = ESP_PROPOSALS.get(self.suite)
        if esp is None:
            raise ValueError(f"no strongSwan ESP proposal for suite {self.suite!r}")
        with (
            namespace_pair(prefix="rbss-bench") as (ns_a, ns_b),
            Charon(ns_a, "bench-a", [_connection(OUTER_A, OUTER_B, esp)],
                   tun=TunSetup((f"{INNER_A}/32",), (f"{INNER_B}/32",))) as charon_a,
            Charon(ns_b, "bench-b", [_connection(OUTER_B, OUTER_A, esp)],
                   tun=TunSetup((f"{INNER_B}/32",), (f"{INNER_A}/32",))) as charon_b,
        ):  # fmt: skip
            charon_a.initiate("bench")
            charon_b.wait_child_installed("bench")
            if not ns_a.ping(INNER_B, count=3, interval=0.05):
                raise HarnessError("no ping across the strongSwan tunnel\n"
                                   + charon_a.diagnostics() + charon_b.diagnostics())  # fmt: skip
            self.charons = [charon_a, charon_b]
            try:
                yield ns_a.name, ns_b.name
            finally:
                self.charons = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="aes-gcm-128", choices=sorted(ESP_PROPOSALS))
    args = parser.parse_args()
    peer = StrongswanPeer(suite=args.suite)
    with peer.tunnel() as (ns_a, ns_b):
        (ike,) = peer.charons[0].list_sas()
        print(f"{ns_a} <-> {ns_b}: {ike.proposal}, ESP {ike.installed[0].proposal}, "
              f"charon RSS {[charon.rss_kib() for charon in peer.charons]} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
