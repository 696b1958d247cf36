"""Console test fixtures: a fake core, and apps that keep their state file in tmp_path."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from tests.tui.helpers import AppFactory
from tui.app import ConsoleApp
from tui.fake import FakeSource


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs `async def` tests on a fresh event loop (no pytest-asyncio needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    arguments = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**arguments), 120))
    return True


@pytest.fixture
def fake() -> FakeSource:
    return FakeSource(8)


@pytest.fixture
def make_app(tmp_path: Path) -> AppFactory:
    def build(source: FakeSource | None = None, **options: object) -> ConsoleApp:
        options.setdefault("state_path", tmp_path / "console.json")
        return ConsoleApp(source if source is not None else FakeSource(8), **options)  # type: ignore[arg-type]

    return build
