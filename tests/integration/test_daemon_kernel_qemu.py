"""The daemon end to end on the kernel XFRM dataplane, in a Debian kernel under QEMU.

The guest runs a subset of test_daemon_e2e.py with RBIPSEC_E2E_DATAPLANE=kernel (the
host kernel has neither ESP nor XFRM interfaces).  Timing-bound scenarios (DPD, passive
silence) stay on the host: under TCG everything is 20-50x slower.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qemu"))
from qemu_harness import HarnessUnavailable, build, run_in_guest

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow, pytest.mark.netns]

SCENARIOS = "tunnel_mode or forced_udp or rekey or reload or nat_traversal or auto_dataplane"


def test_daemon_scenarios_on_the_kernel_dataplane() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        image = build()
    except HarnessUnavailable as exc:
        pytest.skip(f"QEMU guest unavailable: {exc}")
    python = shlex.quote(sys.executable)
    command = (
        f"RBIPSEC_E2E_DATAPLANE=kernel RBIPSEC_E2E_SLOW=10 {python} -m pytest "
        f"tests/integration/test_daemon_e2e.py -k {shlex.quote(SCENARIOS)} "
        "-p no:cacheprovider -q -rfEs --color=no"
    )
    result = run_in_guest(command, image, timeout=3000)
    print(result.output)
    assert result.exit_status == 0, "daemon scenarios failed in the guest (output above)"
    summary = re.findall(r"^=* ?(\d+ passed.*) in [\d.]+s", result.output, re.M)
    assert summary and "6 passed" in summary[-1], summary
