"""Shared fixtures: a clean taskwatch install per test, and both event loops."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import taskwatch
from taskwatch import _guard

try:
    import uvloop
except ImportError:  # pragma: no cover - CI always has uvloop
    uvloop = None

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed")
    return request.param


def run(main: Coroutine[Any, Any, Any], loop_kind: str = "asyncio") -> Any:
    """Run a coroutine on a fresh loop of the given kind, the way programs do."""
    if loop_kind == "uvloop":
        return uvloop.run(main)
    return asyncio.run(main)


@pytest.fixture
def watch() -> Iterator[Callable[..., Any]]:
    """install() with options for this test; uninstall() afterwards, whatever happened."""
    assert not taskwatch.is_installed(), "a previous test leaked an install"
    _guard.reset()

    def _install(**options: Any) -> Any:
        options.setdefault("log", False)
        return taskwatch.install(**options)

    yield _install
    taskwatch.uninstall()
    gc.collect()


def kinds() -> list[str]:
    gc.collect()
    return [f.kind for f in taskwatch.findings()]


def here() -> int:
    """The line number of the caller (to assert creation sites)."""
    return sys._getframe(1).f_lineno
