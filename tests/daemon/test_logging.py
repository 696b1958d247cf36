"""The daemon's log set-up: libraries stay quiet below WARNING, also at debug level."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from core.daemon.main import setup_logging


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:], root.level = handlers, level


def test_pyroute2_debug_stays_out_even_after_it_resets_its_level(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)  # in the test: capture resets it per phase
    setup_logging("debug")
    # What pyroute2's import does (pyroute2/config/log.py), after our set-up when lazy:
    logging.getLogger("pyroute2").setLevel(0)
    logging.getLogger("pyroute2.netlink.core").debug("await data on a queue")
    logging.getLogger("pyroute2.netlink.core").warning("netlink socket closed")
    logging.getLogger("rbipsec.daemon").debug("peer hq: our own debug line")
    text = stderr.getvalue()
    assert "await data" not in text
    assert "netlink socket closed" in text and "our own debug line" in text
