"""Shared pytest configuration: root-only tests skip with a clear reason."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netlab import NetLab


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (network namespaces, TUN)"))
        if "netns" in item.keywords and shutil.which("ip") is None:
            item.add_marker(pytest.mark.skip(reason="needs iproute2's `ip` command"))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetLab]:
    """An empty NetLab (namespaces and daemons removed afterwards, their logs printed);
    modules that need a different lab define their own `lab`."""
    with NetLab(tmp_path) as netlab:
        yield netlab
