"""The harness proves itself: charon <-> charon in two namespaces (root, strongSwan).

Each test builds two namespaces, starts one private charon in each, and checks what the
harness promises: tunnels come up over IKEv2 and IKEv1 main mode and carry pings through
libipsec's `ipsec0`; `list_sas` reports the negotiated proposal; a mismatch fails with
charon's reason; rekeying works; SIGTERM sends a DELETE, SIGKILL does not, and a killed
charon comes back; nothing is left behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.harness import (
    Charon,
    CharonFactory,
    Child,
    Connection,
    HarnessError,
    Netns,
    TunSetup,
    wait_until,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan]

OUTER_A, OUTER_B = "198.51.100.1", "198.51.100.2"
INNER_A, INNER_B = "10.1.0.1", "10.2.0.1"
TUN_A = TunSetup((f"{INNER_A}/32",), ("10.2.0.0/24",))
TUN_B = TunSetup((f"{INNER_B}/32",), ("10.1.0.0/24",))
PSK = "interop-harness-psk"


@dataclass(frozen=True)
class Case:
    version: int
    ike: str
    esp: str
    ike_seen: str  # as charon reports it
    esp_seen: str


CASES = {
    "ikev2": Case(2, "aes256gcm16-prfsha256-x25519", "aes256gcm16",
                  "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519", "AES_GCM_16_256"),
    "ikev1-main": Case(1, "aes128-sha256-modp2048", "aes128-sha256",
                       "AES_CBC_128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
                       "AES_CBC_128/HMAC_SHA2_256_128"),
}  # fmt: skip


def connections(case: Case, esp_b: str | None = None) -> tuple[Connection, Connection]:
    def one(local: str, remote: str, esp: str) -> Connection:
        child = Child("net", esp_proposals=(esp,))
        return Connection("gw", local, remote, PSK, (child,), version=case.version,
                          proposals=(case.ike,))  # fmt: skip

    return one(OUTER_A, OUTER_B, case.esp), one(OUTER_B, OUTER_A, esp_b or case.esp)


def tunnel(
    pair: tuple[Netns, Netns], charon_factory: CharonFactory, case: Case
) -> tuple[Charon, Charon]:
    ns_a, ns_b = pair
    conn_a, conn_b = connections(case)
    charon_a = charon_factory(ns_a, "a", [conn_a], tun=TUN_A)
    charon_b = charon_factory(ns_b, "b", [conn_b], tun=TUN_B)
    charon_a.initiate("net")
    charon_b.wait_child_installed("net")
    return charon_a, charon_b


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_tunnel_carries_pings_and_reports_the_proposal(
    netns_pair: tuple[Netns, Netns], charon_factory: CharonFactory, case: Case
) -> None:
    charon_a, charon_b = tunnel(netns_pair, charon_factory, case)
    assert netns_pair[0].ping(INNER_B, source=INNER_A, count=3, interval=0.05)

    (ike_a,) = charon_a.list_sas()
    (ike_b,) = charon_b.list_sas()
    for ike, local, remote in ((ike_a, OUTER_A, OUTER_B), (ike_b, OUTER_B, OUTER_A)):
        assert (ike.state, ike.version, ike.proposal) == (
            "ESTABLISHED",
            case.version,
            case.ike_seen,
        )
        assert (ike.local_host, ike.remote_host) == (local, remote)
        # kernel-libipsec always encapsulates, so both ends float to 4500.
        assert (ike.local_port, ike.remote_port) == (4500, 4500)
        (child,) = ike.installed
        assert (child.name, child.mode, child.proposal) == ("net", "TUNNEL", case.esp_seen)
        assert child.encap
        assert child.local_ts == child.remote_ts == ("0.0.0.0/0",)
        assert child.packets_in >= 3 and child.packets_out >= 3
    assert ike_a.initiator and not ike_b.initiator
    assert (ike_a.installed[0].spi_in, ike_a.installed[0].spi_out) == (
        ike_b.installed[0].spi_out, ike_b.installed[0].spi_in,
    )  # fmt: skip


def test_proposal_mismatch_fails_with_charons_reason(
    netns_pair: tuple[Netns, Netns], charon_factory: CharonFactory
) -> None:
    case = CASES["ikev2"]
    conn_a, conn_b = connections(case, esp_b="aes128-sha1")
    charon_a = charon_factory(netns_pair[0], "a", [conn_a], tun=TUN_A)
    charon_b = charon_factory(netns_pair[1], "b", [conn_b], tun=TUN_B)
    with pytest.raises(HarnessError, match="initiate"):
        charon_a.initiate("net", timeout=5.0)
    assert "NO_PROPOSAL_CHOSEN" in charon_a.log_text()
    assert charon_b.child_sas() == []


def test_child_and_ike_rekey_keep_the_tunnel(
    netns_pair: tuple[Netns, Netns], charon_factory: CharonFactory
) -> None:
    charon_a, charon_b = tunnel(netns_pair, charon_factory, CASES["ikev2"])
    old_child = charon_b.wait_child_installed("net")
    (old_ike,) = charon_b.list_sas()

    charon_a.rekey(child="net")
    # charon keeps the rekeyed inbound SA a few seconds (delete_rekeyed_delay): look for the
    # new one rather than for the old one's absence.
    fresh = wait_until(lambda: [c for c in charon_b.child_sas() if c.state == "INSTALLED"
                                and c.spi_in != old_child.spi_in], 5)  # fmt: skip
    assert fresh, charon_b.diagnostics()
    # Until charon a has its DELETE of the old Child SA answered, its rekey task is open and
    # it refuses an IKE rekey with TEMPORARY_FAILURE ("a child is half-open", seen when the
    # rekey request crossed that DELETE's answer); charon b retries only seconds later,
    # past the wait below.  So wait until a holds the new Child SA alone.
    def a_holds_only_the_new_child() -> bool:
        return [(c.state, c.spi_out) for c in charon_a.child_sas()] == [
            ("INSTALLED", fresh[0].spi_in)]

    assert wait_until(a_holds_only_the_new_child, 5), charon_a.diagnostics()
    charon_b.rekey(ike="gw")
    assert wait_until(lambda: [sa.uniqueid for sa in charon_b.list_sas()] not in
                      ([old_ike.uniqueid], []), 5)  # fmt: skip
    # The other charon drops its old IKE SA a moment later: wait for one SA there too.
    def one_settled_sa() -> bool:
        sas = charon_a.list_sas()
        return len(sas) == 1 and sas[0].state == "ESTABLISHED" and len(sas[0].installed) == 1

    assert wait_until(lambda: one_settled_sa() or None, 5), charon_a.diagnostics()
    assert netns_pair[0].ping(INNER_B, source=INNER_A, count=2, interval=0.05)


def test_sigterm_sends_delete_and_leaves_nothing(
    netns_pair: tuple[Netns, Netns], charon_factory: CharonFactory
) -> None:
    charon_a, charon_b = tunnel(netns_pair, charon_factory, CASES["ikev2"])
    pid, directory = charon_a.pid, charon_a.dir
    assert pid is not None
    assert (charon_a.run_dir / "charon.pid").read_text().strip() == str(pid)
    host_pid_file = Path("/run/charon.pid")  # the private /run kept it out of the host's
    assert not host_pid_file.exists() or host_pid_file.read_text().strip() != str(pid)

    charon_a.cleanup()
    assert not os.path.exists(f"/proc/{pid}")
    assert not directory.exists()
    assert wait_until(lambda: charon_b.list_sas() == [], 5.0), "no DELETE reached charon b"


def test_sigkill_is_silent_and_a_killed_charon_comes_back(
    netns_pair: tuple[Netns, Netns], charon_factory: CharonFactory
) -> None:
    charon_a, charon_b = tunnel(netns_pair, charon_factory, CASES["ikev2"])
    charon_b.kill()
    assert not charon_b.running and not netns_pair[1].has_link("ipsec0")
    time.sleep(0.5)
    assert [sa.state for sa in charon_a.list_sas()] == ["ESTABLISHED"], "a heard a DELETE"

    charon_b.start()  # the TUN and its addresses and routes come back with it
    charon_a.terminate(ike="gw", force=True, timeout=0.5)
    charon_a.initiate("net")
    assert netns_pair[0].ping(INNER_B, source=INNER_A, count=2, interval=0.05)
