"""Fixtures for the strongSwan interoperability tests.

- `netns_pair`: two namespaces joined by veth `outer0` (198.51.100.1/24 and .2/24).
- `charon_factory(netns, name, connections, settings=None, tun=None)`: a started Charon;
  every charon it made is stopped (by pid) and its directory removed after the test, and
  when the test failed its output, SAs and log tail are printed into the report.
- `interop`: an `InteropLab` (rbipsec in namespace r, charon in s, directly linked);
  `interop_nat`: the same through a masquerading router, `request.param` ("rb" or "sw")
  naming the side behind it; `interop_wired`: the link runs through a process that can
  make two IKE requests cross (tests/interop/wire.py).  Diagnostics of both sides are
  printed when a test fails.
All skip with a clear reason when strongSwan is not installed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

import pytest

from tests.integration.netlab import NetLab
from tests.interop.harness import (
    Charon,
    CharonFactory,
    CharonSettings,
    Connection,
    Netns,
    TunSetup,
    namespace_pair,
    strongswan_missing,
)
from tests.interop.rbipsec_lab import (
    InteropLab,
    direct_topology,
    nat_topology,
    wired_topology,
)

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


def _skip_without_strongswan() -> None:
    reason = strongswan_missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def netns_pair() -> Iterator[tuple[Netns, Netns]]:
    _skip_without_strongswan()
    with namespace_pair() as pair:
        yield pair


@pytest.fixture
def charon_factory(request: pytest.FixtureRequest) -> Iterator[CharonFactory]:
    _skip_without_strongswan()
    started: list[Charon] = []

    def make(
        netns: Netns,
        name: str,
        connections: Sequence[Connection],
        settings: CharonSettings | None = None,
        tun: TunSetup | None = None,
    ) -> Charon:
        charon = Charon(netns, name, connections, settings=settings, tun=tun)
        started.append(charon)
        charon.start()
        return charon

    try:
        yield make
    finally:
        failed = request.node.stash.get(CALL_FAILED, True)
        for charon in started:
            if failed:
                print(charon.diagnostics())
            charon.cleanup()


def _interop_lab(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Iterator[InteropLab]:
    _skip_without_strongswan()
    with NetLab(tmp_path) as netlab:
        wire = None
        if kind == "direct":
            topology = direct_topology(netlab)
        elif kind == "wired":
            topology, wire = wired_topology(netlab)
        else:
            topology = nat_topology(netlab, kind)
        lab = InteropLab(netlab, topology, wire=wire)
        try:
            yield lab
        finally:
            if request.node.stash.get(CALL_FAILED, True):
                print(lab.diagnostics())
            lab.close()


@pytest.fixture
def interop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InteropLab]:
    """rbipsec in namespace r, charon in s, joined directly (198.51.100.1 and .2)."""
    yield from _interop_lab(request, tmp_path, "direct")


@pytest.fixture
def interop_wired(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InteropLab]:
    """Like `interop`, with the link through the `wire` process (`lab.wire.crossing()`)."""
    yield from _interop_lab(request, tmp_path, "wired")


@pytest.fixture
def interop_nat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InteropLab]:
    """Like `interop`, with `request.param` ("rb" or "sw") behind a masquerading router."""
    yield from _interop_lab(request, tmp_path, request.param)
