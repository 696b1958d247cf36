"""The kernel XFRM dataplane proven on a real Linux kernel, booted once under QEMU.

One guest per session runs two suites one after the other:
- tests/dataplane/xfrm/guest: the backend itself (two namespaces, SAs through our code,
  ping, counters, ToS, MSS, events, the shared dataplane scenarios);
- a subset of tests/integration/test_daemon_e2e.py with RBIPSEC_E2E_DATAPLANE=kernel: two
  daemons negotiating over IKEv2 and installing SAs on XFRM interfaces; and the
  transport-mode scenarios (test_daemon_e2e_transport.py, IKEv2 and IKEv1).  Timing-bound
  scenarios (DPD, passive silence) stay on the host: under TCG everything is 20-50x
  slower.
The host-side tests show the guest's output and assert on each suite's exit status.
Skips with the reason when QEMU or the kernel package cannot be had.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.qemu.qemu_harness import GuestResult, HarnessUnavailable, build, run_in_guest

BACKEND_SUITE = "tests/dataplane/xfrm/guest"
DAEMON_SUITE = "tests/integration/test_daemon_e2e.py tests/integration/test_daemon_e2e_transport.py"
DAEMON_SCENARIOS = (
    "tunnel_mode or forced_udp or rekey or reload or nat_traversal or auto or transport_mode"
)
MARKER = "RBIPSEC-SUITE"

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="session")
def guest_session() -> GuestResult:
    """One boot per session: both suites inside one guest."""
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get download, network namespaces in the guest)")
    try:
        image = build()
    except HarnessUnavailable as exc:
        pytest.skip(f"QEMU guest unavailable: {exc}")
    python = shlex.quote(sys.executable)
    pytest_args = "-p no:cacheprovider -q -rfEs --color=no"
    command = (
        f"{python} -m pytest {BACKEND_SUITE} {pytest_args}; echo {MARKER}-backend=$?; "
        f"RBIPSEC_E2E_DATAPLANE=kernel RBIPSEC_E2E_SLOW=10 {python} -m pytest {DAEMON_SUITE} "
        f"-k {shlex.quote(DAEMON_SCENARIOS)} {pytest_args}; echo {MARKER}-daemon=$?"
    )
    return run_in_guest(command, image, timeout=3000)


def _suite_status(result: GuestResult, suite: str) -> int | None:
    found = re.findall(rf"^{MARKER}-{suite}=(\d+)", result.output, re.M)
    return int(found[-1]) if found else None


def _show(result: GuestResult) -> None:
    print(result.output)
    print(f"[qemu] guest session took {result.seconds:.1f} s")


def test_kernel_backend_suite_passes_in_the_guest(guest_session: GuestResult) -> None:
    _show(guest_session)
    assert guest_session.exit_status is not None, "the guest never reported an exit status"
    assert _suite_status(guest_session, "backend") == 0, "backend suite failed (output above)"
    backend_part = guest_session.output.split(f"{MARKER}-backend=")[0]
    summary = re.findall(r"^=* ?(\d+ (?:passed|failed).*) in [\d.]+s", backend_part, re.M)
    assert summary and "passed" in summary[-1] and "skipped" not in summary[-1], summary


def _daemon_scenario_count() -> int:
    """How many daemon scenarios the guest must pass: the host collects the same selection,
    so a scenario added to (or parametrized in) the suite is expected without a count here."""
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *DAEMON_SUITE.split(), "-k", DAEMON_SCENARIOS],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return sum("::" in line for line in collected.stdout.splitlines())


def test_daemon_scenarios_pass_on_the_kernel_dataplane(guest_session: GuestResult) -> None:
    _show(guest_session)
    expected = _daemon_scenario_count()
    assert expected >= 10, f"only {expected} daemon scenarios selected"
    assert _suite_status(guest_session, "daemon") == 0, "daemon scenarios failed (output above)"
    daemon_part = guest_session.output.split(f"{MARKER}-backend=")[-1]
    summary = re.findall(r"^=* ?(\d+ passed.*) in [\d.]+s", daemon_part, re.M)
    assert summary and summary[-1].startswith(f"{expected} passed"), (expected, summary)
