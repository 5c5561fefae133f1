"""pytest plugin (``-p uvloop_policy``): every new event loop of the run is a uvloop loop.

Sets uvloop's policy at import, before any test module is collected. pytest-asyncio's default
``event_loop_policy`` fixture and unittest's IsolatedAsyncioTestCase (via asyncio.Runner) both ask
the policy for their loops, so suites without a loop switch of their own run on uvloop unchanged.
At session end it checks that the loops the tests ran on were really uvloop loops.
"""

import asyncio

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

_seen: set = set()


def pytest_runtest_call(item):
    # the policy's current loop at each test call (pytest-asyncio and unittest set it)
    try:
        loop = asyncio.get_event_loop_policy()._local._loop  # best effort: a private attribute
    except Exception:
        loop = None
    if loop is not None:
        _seen.add(type(loop).__module__ + "." + type(loop).__name__)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(
        "uvloop_policy: policy=%s; loops seen at test calls: %s"
        % (type(asyncio.get_event_loop_policy()).__module__, sorted(_seen) or "none"))
