"""The IKEv1 engine against strongSwan's charon (root, namespaces, strongSwan installed).

Our endpoint runs in namespace A over real UDP sockets (`interop_driver`), charon in B
with kernel-libipsec, which always encapsulates ESP and so fakes a NAT: every SA floats
to port 4500.  Each test checks both sides' view: our events and charon's `list-sas`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.harness import (
    Charon,
    Child,
    Connection,
    IkeSaInfo,
    Netns,
    namespace_pair,
    strongswan_missing,
    wait_until,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.strongswan, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PSK = "a secret of some length"
A, B = "198.51.100.1", "198.51.100.2"


@pytest.fixture
def lab() -> Iterator[tuple[Netns, Netns]]:
    reason = strongswan_missing()
    if reason is not None or os.geteuid() != 0:
        pytest.skip(reason or "needs root")
    with namespace_pair(prefix="rbv1") as pair:
        yield pair


def _connection(**changes: Any) -> Connection:
    values: dict[str, Any] = {
        "name": "v1", "local_addrs": B, "remote_addrs": A, "psk": PSK, "version": 1,
        "children": (Child(name="c", esp_proposals=("aes256-sha256",)),),
        "proposals": ("aes256-sha256-modp2048",), "dpd_delay": 2, "dpd_timeout": 6,
    }
    values.update(changes)
    return Connection(**values)


def _spec(duration: float, actions: list[tuple[float, str]], **changes: Any) -> str:
    spec: dict[str, Any] = {"local": A, "remote": B, "local_id": A, "remote_id": B, "psk": PSK,
                            "duration": duration, "actions": actions, "dpd_interval": 2}
    spec.update(changes)
    return json.dumps(spec)


class Ours:
    """Our endpoint in a namespace, its events as JSON lines."""

    def __init__(self, netns: Netns, spec: str) -> None:
        self.process = subprocess.Popen(
            netns.command(sys.executable, "-m",
                          "tests.ike.v1.interop_driver", spec),
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self._events: list[dict[str, Any]] | None = None

    def finish(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        if self._events is None:
            out, err = self.process.communicate(timeout=timeout)
            assert self.process.returncode == 0, err[-3000:]
            self._events = [json.loads(line) for line in out.splitlines() if line]
        return self._events

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.finish() if e["event"] == kind]


@contextlib.contextmanager
def ours(netns: Netns, spec: str) -> Iterator[Ours]:
    runner = Ours(netns, spec)
    try:
        yield runner
    finally:
        runner.kill()


def _ike(charon: Charon) -> IkeSaInfo:
    found = wait_until(lambda: next((s for s in charon.list_sas() if s.state == "ESTABLISHED"),
                                    None), 15.0, 0.1)
    assert found is not None, charon.diagnostics()
    return found


def _spis(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(f"{e['info']['spi_in']:08x}", f"{e['info']['spi_out']:08x}") for e in events}


def test_main_mode_we_initiate_with_nat_t_and_dpd(lab: tuple[Netns, Netns]) -> None:
    ns_a, ns_b = lab
    # Only we probe (charon's DPD would keep us from ever being idle).
    with Charon(ns_b, "b", [_connection(dpd_delay=60)]) as charon, \
            ours(ns_a, _spec(8, [(0, "connect")])) as runner:
        events = runner.finish()
        sa = _ike(charon)
        assert sa.version == 1 and sa.remote_port == 4500 and sa.nat_any
        children = charon.child_sas("c")
        assert len(children) == 1 and children[0].state == "INSTALLED" and children[0].encap
        installed = runner.of("ChildSaInstalled")
        assert _spis(installed) == {(children[0].spi_out, children[0].spi_in)}
        assert installed[0]["info"]["encap"] and runner.of("IkeSaUp")[0]["info"]["nat_remote"]
        assert runner.of("DpdAnswered") and not runner.of("PeerDead")
        assert not runner.of("ExchangeFailed"), events


def test_main_mode_charon_initiates(lab: tuple[Netns, Netns]) -> None:
    ns_a, ns_b = lab
    with ours(ns_a, _spec(8, [], dpd_interval=0)) as runner, \
            Charon(ns_b, "b", [_connection()]) as charon:
        time.sleep(0.5)
        charon.initiate("c", "v1")
        child = charon.wait_child_installed("c")
        events = runner.finish()
        assert "N(DPD_ACK)" in charon.log_text()  # we answered charon's R-U-THERE
        assert _spis(runner.of("ChildSaInstalled")) == {(child.spi_out, child.spi_in)}
        assert not runner.of("IkeSaUp")[0]["info"]["initiator"]
        assert runner.of("ChildSaOutboundReady")
        assert not runner.of("ExchangeFailed"), events


@pytest.mark.parametrize("initiator", ["ours", "charon", "charon-to-dynamic"])
def test_aggressive_mode_with_fqdn_ids(lab: tuple[Netns, Netns], initiator: str) -> None:
    """Both directions; last, our side does not know charon's address and identifies it
    by its FQDN only."""
    ns_a, ns_b = lab
    connection = _connection(local_id="fqdn:b.example", remote_id="fqdn:a.example",
                             aggressive=True, proposals=("aes128-sha1-modp2048",))
    extra = {"remote_address": None} if initiator == "charon-to-dynamic" else {}
    spec = _spec(8, [(0, "connect")] if initiator == "ours" else [],
                 local_id="fqdn:a.example", remote_id="fqdn:b.example",
                 exchange_mode="aggressive", ike="aes128-sha1-modp2048", **extra)
    with ours(ns_a, spec) as runner, Charon(ns_b, "b", [connection]) as charon:
        if initiator != "ours":
            time.sleep(0.5)
            charon.initiate("c", "v1")
        child = charon.wait_child_installed("c")
        runner.finish()
        up = runner.of("IkeSaUp")[0]["info"]
        assert up["exchange_mode"] == "aggressive"
        assert _spis(runner.of("ChildSaInstalled")) == {(child.spi_out, child.spi_in)}
        assert "Aggressive Mode" in charon.log_text() or "AGGRESSIVE" in charon.log_text()


def test_pfs_and_quick_mode_rekeys_both_ways(lab: tuple[Netns, Netns]) -> None:
    ns_a, ns_b = lab
    connection = _connection(children=(Child(name="c", esp_proposals=("aes128gcm16-ecp256",)),))
    spec = _spec(12, [(0, "connect"), (4, "rekey")], esp="aes128gcm16-ecp256")
    with Charon(ns_b, "b", [connection]) as charon, ours(ns_a, spec) as runner:
        charon.wait_child_installed("c")
        time.sleep(7)
        charon.rekey(child="c")
        runner.finish()
        installed = runner.of("ChildSaInstalled")
        assert len(installed) == 3  # the first, ours, charon's
        assert installed[0]["info"]["encr"] == "AES_GCM_16"
        live = {(c.spi_out, c.spi_in) for c in charon.child_sas("c") if c.state == "INSTALLED"}
        assert live and live <= _spis(installed)
        # We delete the SA we replaced at once; charon keeps the one it replaced (REKEYED)
        # until it expires, and we keep our side of it until then too.
        assert [e["reason"] for e in runner.of("ChildSaDeleted")] == ["rekeyed"]
        assert runner.of("ChildSaOutboundReady")
        assert not runner.of("ExchangeFailed")


def test_phase1_replacement_both_ways(lab: tuple[Netns, Netns]) -> None:
    ns_a, ns_b = lab
    spec = _spec(12, [(0, "connect"), (3, "rekey_ike")])
    with Charon(ns_b, "b", [_connection()]) as charon, ours(ns_a, spec) as runner:
        charon.wait_child_installed("c")
        time.sleep(6)
        charon.rekey(ike="v1", reauth=True)
        runner.finish()
        assert len(runner.of("IkeSaRekeyed")) >= 1
        assert [e for e in runner.of("IkeSaDown") if e["reason"] != "DownReason.REPLACED"] == []
        # charon drops the SA its reauthentication replaced a moment after the new one is
        # up; on a loaded machine that moment can fall after the runner's end: wait for it.
        def one_established() -> bool | None:
            sas = [s for s in charon.list_sas() if s.state == "ESTABLISHED"]
            return True if len(sas) == 1 else None

        assert wait_until(one_established, 10.0, 0.1), charon.diagnostics()
        assert charon.child_sas("c") and not runner.of("ExchangeFailed")


def test_dead_peer_is_detected(lab: tuple[Netns, Netns]) -> None:
    ns_a, ns_b = lab
    spec = _spec(12, [(0, "connect")], dpd_retries=1)
    with Charon(ns_b, "b", [_connection()]) as charon, ours(ns_a, spec) as runner:
        charon.wait_child_installed("c")
        charon.kill()
        runner.finish()
        assert runner.of("PeerDead")
        assert next(e["reason"] for e in runner.of("IkeSaDown")) == "DownReason.PEER_DEAD"


def test_delete_reaches_charon(lab: tuple[Netns, Netns]) -> None:
    ns_a, ns_b = lab
    spec = _spec(5, [(0, "connect"), (2.5, "disconnect")])
    with Charon(ns_b, "b", [_connection()]) as charon, ours(ns_a, spec) as runner:
        runner.finish()
        gone = wait_until(lambda: True if not charon.list_sas() else None, 5.0, 0.1)
        assert gone, charon.diagnostics()
        assert "DELETE" in charon.log_text().upper()
