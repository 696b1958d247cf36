"""Fixtures for the strongSwan interoperability tests.

- `netns_pair`: two namespaces joined by veth `outer0` (198.51.100.1/24 and .2/24).
- `charon_factory(netns, name, connections, settings=None, tun=None)`: a started Charon;
  every charon it made is stopped (by pid) and its directory removed after the test, and
  when the test failed its output, SAs and log tail are printed into the report.
Both skip with a clear reason when strongSwan is not installed.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence

import pytest

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
