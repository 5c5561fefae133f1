"""Shared fixtures: a clean taskwatch install per test, and both event loops."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

import taskwatch
from taskwatch._core import _accel, _guard

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


# Both twins of the hot path: the C accelerator and the pure-Python closures it mirrors.
PATHS = [pytest.param(True, id="c"), pytest.param(False, id="py")]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "default_path: run once, on the hot path install() picks by default "
                   "(for tests of the accelerator itself, or of that choice)")


def _default_path_only(node: Any) -> bool:
    """Tests marked ``default_path``, and tests skipped where the C accelerator is not built
    (``skipif(..., reason="the C accelerator is not built here")``): those test the accelerator
    itself, on the path install() picks, and pick any other path themselves."""
    if node.get_closest_marker("default_path") is not None:
        return True
    return any("C accelerator" in str(mark.kwargs.get("reason", ""))
               for mark in node.iter_markers("skipif"))


@pytest.fixture(params=PATHS)
def speedups(request: pytest.FixtureRequest) -> bool | None:
    """The hot path a test runs on (None: install()'s default). Without the built accelerator the
    C run is skipped, unless TASKWATCH_REQUIRE_SPEEDUPS=1 (CI), where a missing build fails."""
    request.node._tw_both_paths = True  # the value comes from here, not the test's own parameters
    if _default_path_only(request.node):
        if not request.param:
            pytest.skip("runs once, on the default hot path")
        return None
    if request.param and _accel.speedups is None:
        if os.environ.get("TASKWATCH_REQUIRE_SPEEDUPS", "").strip() == "1":
            pytest.fail("TASKWATCH_REQUIRE_SPEEDUPS=1 but taskwatch._core._speedups is not loaded")
        pytest.skip("the C accelerator is not built here (or TASKWATCH_SPEEDUPS=0)")
    return bool(request.param)


@pytest.fixture
def watch(request: pytest.FixtureRequest, speedups: bool | None) -> Iterator[Callable[..., Any]]:
    """install() with options for this test; uninstall() afterwards, whatever happened.

    Every test that uses it runs on both hot paths (the ``speedups`` fixture). A test that passes
    ``speedups=`` itself picks its paths: it runs once (under the C parameter where the accelerator
    is built), not once more with the same choices."""
    assert not taskwatch.is_installed(), "a previous test leaked an install"
    _guard.reset()
    both = getattr(request.node, "_tw_both_paths", False)

    def _install(**options: Any) -> Any:
        options.setdefault("log", False)
        if "speedups" in options:
            if both and speedups is False and _accel.speedups is not None:
                pytest.skip("picks its hot paths itself: runs once, under [c]")
        elif speedups is not None:
            options["speedups"] = speedups
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
