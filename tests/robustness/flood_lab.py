"""The flood lab: a tunnel a <-> b, and a flooder namespace f with many addresses
connected to b (tests/robustness/flood.py sends the burst from there).  Used by
test_lab_flood.py and bench/bench_flood.py.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tests.robustness.lab import (
    PYTHON,
    LabDaemon,
    NetLab,
    global_section,
    lab_daemon,
    peer_section,
)

A, B, B_INSIDE = "198.51.100.1", "198.51.100.2", "203.0.113.1"
SOURCES = 200


def build_flood_lab(lab: NetLab) -> tuple[LabDaemon, LabDaemon, list[str]]:
    """a <-> b with a tunnel; f (the flooder) <-> b with SOURCES addresses on f's side; b
    also has a road warrior peer (remote address dynamic) that anyone may try to be."""
    for name in ("a", "b", "f"):
        lab.namespace(name)
    lab.link("a", f"{A}/24", "b", f"{B}/24", "outer0", "outer0")
    lab.link("f", "203.0.113.2/24", "b", f"{B_INSIDE}/24", "flood0", "inside0")
    sources = [f"203.0.113.{10 + i}" for i in range(SOURCES)]
    batch = lab.workdir / "flood-addresses"
    batch.write_text("".join(f"addr add {s}/24 dev flood0\n" for s in sources))
    lab.run("f", "ip", "-batch", str(batch))
    peer = {"dpd_interval": 2, "dpd_retries": 3, "interface": "ipsec1"}
    b = lab_daemon(
        lab,
        "b",
        global_section(lab.workdir / "b.sock", log_level="info")
        + peer_section(name="toa", local_address=B, remote_address=A, address="10.0.0.2/30", **peer)
        + peer_section(
            name="rw",
            interface="ipsec2",
            local_address=B_INSIDE,
            remote_address="dynamic",
            remote_id="fqdn:rw.example",
            psk="the road warrior's secret",
        ),
    ).start()
    a = lab_daemon(
        lab,
        "a",
        global_section(lab.workdir / "a.sock", log_level="info")
        + peer_section(
            name="tob", local_address=A, remote_address=B, address="10.0.0.1/30", **peer
        ),
    ).start()
    a.wait_up("tob", timeout=20)
    b.wait_up("toa")
    return a, b, sources


def flood(lab: NetLab, count: int, rate: float, sources: list[str]) -> dict[str, Any]:
    result = lab.run(
        "f",
        PYTHON,
        "-m",
        "tests.robustness.flood",
        B_INSIDE,
        str(count),
        str(rate),
        *sources,
        timeout=count / rate + 60,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class RssSampler:
    def __init__(self, lab: NetLab, daemon: LabDaemon) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lab, daemon), daemon=True)
        self._thread.start()

    def _run(self, lab: NetLab, daemon: LabDaemon) -> None:
        while not self._stop.wait(0.2):
            status = Path(f"/proc/{daemon.pid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
            self.samples.append(int(line.split()[1]))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.samples, default=0)
