"""The kernel XFRM backend proven on a real Linux kernel, booted once under QEMU.

The guest runs tests/dataplane/xfrm/guest (two namespaces, SAs through our code, ping,
counters, ToS, MSS, events); this host-side test shows its output and asserts on its exit
status.  Skips with the reason when QEMU or the kernel package cannot be had.
"""

from __future__ import annotations

import os
import re
import shlex
import sys

import pytest

from tests.qemu.qemu_harness import GuestResult, HarnessUnavailable, build, run_in_guest

GUEST_SUITE = "tests/dataplane/xfrm/guest"

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="session")
def kernel_suite_in_guest() -> GuestResult:
    """One boot per session: the whole kernel-backend suite inside one guest."""
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get download, network namespaces in the guest)")
    try:
        image = build()
    except HarnessUnavailable as exc:
        pytest.skip(f"QEMU guest unavailable: {exc}")
    python = shlex.quote(sys.executable)
    command = f"{python} -m pytest {GUEST_SUITE} -p no:cacheprovider -q -rfEs --color=no"
    return run_in_guest(command, image)


def test_kernel_backend_suite_passes_in_the_guest(kernel_suite_in_guest: GuestResult) -> None:
    result = kernel_suite_in_guest
    print(result.output)
    print(f"[qemu] guest session took {result.seconds:.1f} s")
    assert result.exit_status is not None, "the guest never reported an exit status"
    assert result.exit_status == 0, "kernel-backend tests failed in the guest (output above)"
    summary = re.findall(r"^=* ?(\d+ (?:passed|failed).*) in [\d.]+s", result.output, re.M)
    assert summary and "passed" in summary[-1] and "skipped" not in summary[-1], summary
