"""The loop thread's longest stretch without a context switch (the accelerator's switches.c, read
by the watchdog): measured on 3.14+ while a watched loop runs, per thread, and gone with the loop's
run and with uninstall()."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time

import pytest

import taskwatch
from taskwatch._core import _accel

from .conftest import run

speedups = _accel.speedups
WATCHERS = speedups is not None and sys.version_info >= (3, 14)
needs_watchers = pytest.mark.skipif(not WATCHERS, reason="context watchers are CPython 3.14+ C API "
                                    "(with the accelerator)")


@pytest.mark.skipif(speedups is None, reason="the accelerator is not loaded")
@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.14+ has context watchers")
def test_nothing_is_measured_before_314():
    ident = threading.get_ident()
    assert speedups.switches_watch(ident) is False
    assert speedups.switches_gap(ident) is None


@needs_watchers
def test_a_long_step_is_a_long_stretch_and_short_steps_are_short():
    ident = threading.get_ident()
    assert speedups.switches_watch(ident) is True
    try:
        async def main():
            await asyncio.sleep(0)
            speedups.switches_gap(ident)  # from here on
            time.sleep(0.2)  # one step that holds the loop
            await asyncio.sleep(0)
            long = speedups.switches_gap(ident)
            for _ in range(200):  # short steps: a switch at each
                await asyncio.sleep(0)
            return long, speedups.switches_gap(ident)

        long, short = asyncio.run(main())
        assert long >= 0.2
        assert short < 0.15  # a few ms of steps, or a preempted thread on a loaded machine
    finally:
        speedups.switches_unwatch(ident)
    assert speedups.switches_gap(ident) is None


@needs_watchers
def test_another_threads_switches_are_not_this_ones():
    ident = threading.get_ident()
    stop = threading.Event()

    def switching():
        ctx = contextvars.copy_context()
        while not stop.is_set():
            ctx.run(time.sleep, 0.001)

    other = threading.Thread(target=switching)
    assert speedups.switches_watch(ident) is True
    other.start()
    try:
        time.sleep(0.2)
        assert speedups.switches_gap(ident) >= 0.2
    finally:
        stop.set()
        other.join()
        speedups.switches_unwatch(ident)


@needs_watchers
def test_a_watched_loop_is_measured_while_it_runs_and_not_after(watch, loop_kind):
    watch(block_threshold=0.1)
    ident = threading.get_ident()

    async def main():
        await asyncio.sleep(0.01)
        return speedups.switches_gap(ident)

    assert run(main(), loop_kind) is not None
    assert speedups.switches_gap(ident) is None  # the run ended
    run(main(), loop_kind)
    taskwatch.uninstall()
    assert speedups.switches_gap(ident) is None


@needs_watchers
def test_uninstall_inside_a_running_loop_stops_measuring(watch, loop_kind):
    watch(block_threshold=0.1)
    ident = threading.get_ident()

    async def main():
        await asyncio.sleep(0.01)
        measured = speedups.switches_gap(ident)
        taskwatch.uninstall()
        return measured, speedups.switches_gap(ident)

    during, after = run(main(), loop_kind)
    assert during is not None and after is None
    assert speedups.switches_gap(ident) is None
