"""Nothing of taskwatch's keeps a loop, task, coroutine or frame alive after the program lets go of it,
and nothing per loop outlives the loop: a program that runs one loop per job must not grow."""

import asyncio
import gc
import weakref

import taskwatch
from taskwatch._core import _hooks

from .conftest import run


async def _job(refs):
    """Every path that once held a loop or task: a handled wait_for timeout, cancels (slow-cancel
    watch), a parent that ends with a child pending (orphan grace), a failure nobody retrieves."""
    loop = asyncio.get_running_loop()
    refs.append(weakref.ref(loop))
    # asyncio's default handler would log the unretrieved error below, and a log record kept by
    # the test runner (pytest's log capture) holds its traceback, whose frames hold the loop
    # (3.12+): the program's own handler here, so only taskwatch's hooks see it.
    loop.set_exception_handler(lambda loop, context: None)
    try:
        await asyncio.wait_for(asyncio.sleep(1), 0.001)
    except asyncio.TimeoutError:
        pass

    async def child():
        await asyncio.sleep(10)

    async def parent():
        asyncio.create_task(child())
        await asyncio.sleep(0)

    async def fails():
        raise ValueError("x")

    task = asyncio.create_task(parent())
    refs.append(weakref.ref(task))
    refs.append(weakref.ref(task.get_coro()))
    await task
    doomed = asyncio.create_task(asyncio.sleep(10))
    refs.append(weakref.ref(doomed))
    await asyncio.sleep(0)
    doomed.cancel()
    bad = asyncio.create_task(fails())
    refs.append(weakref.ref(bad))
    await asyncio.sleep(0)
    del task, doomed, bad


def test_loops_and_tasks_are_freed(watch, loop_kind):
    watch(slow_cancel=0.05, orphan_grace=0.05)
    refs: list[weakref.ref] = []
    for _ in range(30):
        run(_job(refs), loop_kind)
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert alive == []
    assert len(_hooks.current().probes) == 0


def test_per_loop_state_is_bounded(watch, loop_kind):
    watch()
    refs: list[weakref.ref] = []
    run(_job(refs), loop_kind)
    gc.collect()
    state = _hooks.current()
    size = (len(state.retired), len(state.probes))
    for _ in range(40):
        run(_job(refs), loop_kind)
    gc.collect()
    assert (len(state.retired), len(state.probes)) == size
    assert taskwatch.report()["stats"]["tasks_created"] >= 41 * 4
    assert not any(isinstance(o, asyncio.AbstractEventLoop) and o.is_closed()
                   for o in gc.get_objects())


def test_no_timer_of_taskwatch_on_the_loop(watch, monkeypatch):
    """The program's loop schedules only the program's timers: slow-cancel, orphan grace and the
    watchdog run on taskwatch's own thread (virtual-clock loops count every timer)."""
    watch(slow_cancel=0.05, orphan_grace=0.05, block_threshold=0.05)
    scheduled = []
    original = asyncio.BaseEventLoop.call_at

    def call_at(self, when, callback, *args, **kwargs):
        scheduled.append(getattr(callback, "__module__", None) or repr(callback))
        return original(self, when, callback, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_at", call_at)

    async def stubborn():
        for _ in range(20):
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    async def parent():
        asyncio.create_task(asyncio.sleep(0.2))

    async def main():
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.create_task(parent())
        await task

    run(main(), "asyncio")
    assert scheduled and all(not str(m).startswith("taskwatch") for m in scheduled), scheduled
    assert {f.kind for f in taskwatch.findings()} >= {"slow-cancel", "orphaned-task"}
