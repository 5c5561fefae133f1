"""A program behaves exactly the same with taskwatch installed."""

import asyncio
import contextvars
import gc
import logging
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import taskwatch
from taskwatch._core import _guard

from .conftest import run, uvloop

VAR = contextvars.ContextVar("VAR", default="unset")
EAGER = sys.version_info >= (3, 12)


def test_names_and_get_coro(watch, loop_kind):
    watch()

    async def noop():
        await asyncio.sleep(0)

    async def main():
        coro = noop()
        unnamed = asyncio.create_task(coro)
        named = asyncio.create_task(noop(), name="worker-1")
        looped = asyncio.get_running_loop().create_task(noop())
        assert unnamed.get_coro() is coro
        await asyncio.gather(unnamed, named, looped)
        return unnamed.get_name(), named.get_name(), looped.get_name(), repr(named)

    unnamed, named, looped, text = run(main(), loop_kind)
    assert re.fullmatch(r"Task-\d+", unnamed), unnamed
    assert re.fullmatch(r"Task-\d+", looped), looped
    assert named == "worker-1"
    assert text.startswith("<Task finished name='worker-1' coro=<")


def test_contexts(watch, loop_kind):
    watch()

    async def child():
        seen = VAR.get()
        VAR.set("child")
        return seen

    async def main():
        VAR.set("parent")
        assert await asyncio.create_task(child()) == "parent"
        assert VAR.get() == "parent"  # the child's change stays in its own copy
        mine = contextvars.copy_context()
        before = list(mine.keys())
        task = asyncio.create_task(child(), context=mine)
        assert await task == "parent"
        assert mine[VAR] == "child"  # it really ran in the context we passed
        assert list(mine.keys()) == before  # and taskwatch added nothing to it

    run(main(), loop_kind)


@pytest.mark.skipif(not EAGER, reason="eager tasks are 3.12+")
@pytest.mark.parametrize("when", ["before", "after"])
def test_eager_task_factory_is_chained(watch, loop_kind, when):
    async def quick():
        return 42

    async def main():
        loop = asyncio.get_running_loop()
        if when == "after":
            watch()
        loop.set_task_factory(asyncio.eager_task_factory)
        if when == "before":
            watch()
        task = asyncio.create_task(quick())
        done_on_return = task.done()
        assert loop.get_task_factory() is asyncio.eager_task_factory
        return done_on_return, await task

    assert run(main(), loop_kind) == (True, 42)
    coros = [t["coro"] for t in taskwatch.tasks(include_finished=True)]
    assert any(c.endswith("quick") for c in coros)


def test_user_factory_runs_behind_taskwatch(watch, loop_kind):
    calls = []

    def factory(loop, coro, **kwargs):
        calls.append(kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def child():
        return "ok"

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(factory)
        assert loop.get_task_factory() is factory
        result = await asyncio.create_task(child(), name="x")
        loop.set_task_factory(None)
        assert loop.get_task_factory() is None
        return result

    watch()
    assert run(main(), loop_kind) == "ok"
    assert len(calls) == 1 and "eager_start" not in calls[0]
    assert any(t["coro"].endswith("child") for t in taskwatch.tasks(include_finished=True))


def test_set_task_factory_validates_as_before(watch):
    watch()

    async def main():
        with pytest.raises(TypeError):
            asyncio.get_running_loop().set_task_factory(42)

    asyncio.run(main())


def test_cancellation_semantics(watch, loop_kind):

    async def slow():
        await asyncio.sleep(10)

    async def fail():
        await asyncio.sleep(0)
        raise KeyError("boom")

    async def main():
        out = []
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            out.append("timeout")
        try:
            await asyncio.wait_for(slow(), 0.01)
        except TimeoutError:
            out.append("wait_for")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(slow())
                tg.create_task(fail())
        except* KeyError:
            out.append("taskgroup")
        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        task.cancel("bye")
        try:
            await task
        except asyncio.CancelledError as exc:
            out.append(f"cancelled:{exc.args}")
        out.append(asyncio.current_task().cancelling())
        return out

    plain = run(main(), loop_kind)
    watch()
    watched = run(main(), loop_kind)
    # 3.11/3.12 leave cancelling() at 1 after a failed TaskGroup; the point is: the same as without.
    assert watched == plain
    assert watched[:4] == ["timeout", "wait_for", "taskgroup", "cancelled:('bye',)"]
    assert "swallowed-cancel" not in [f.kind for f in taskwatch.findings()]


def test_exception_handler_still_called_and_default_message_kept(watch, loop_kind, caplog):
    watch()
    seen = []

    async def boom():
        raise ValueError("lost")

    async def main():
        loop = asyncio.get_running_loop()
        asyncio.create_task(boom())
        await asyncio.sleep(0.01)
        gc.collect()
        loop.set_exception_handler(lambda loop, ctx: seen.append(ctx["message"]))
        asyncio.create_task(boom())
        await asyncio.sleep(0.01)
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(main(), loop_kind)
    assert seen == ["Task exception was never retrieved"]
    assert "Task exception was never retrieved" in caplog.text
    assert [f.kind for f in taskwatch.findings()].count("unretrieved-exception") == 2


def test_destroyed_pending_message_kept(watch, loop_kind, caplog):
    watch()

    async def waits_forever(fut):
        await fut

    async def main():
        loop = asyncio.get_running_loop()
        asyncio.ensure_future(waits_forever(loop.create_future()))
        await asyncio.sleep(0)
        gc.collect()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run(main(), loop_kind)
    assert "Task was destroyed but it is pending!" in caplog.text
    assert "destroyed-pending" in [f.kind for f in taskwatch.findings()]


def test_no_strong_references_after_the_end(watch, loop_kind):
    watch()

    class Boom(Exception):
        pass

    refs = {}

    async def fails():
        raise Boom("x")

    async def main():
        task = asyncio.create_task(fails())
        try:
            await task
        except Boom as exc:
            refs["exc"] = weakref.ref(exc)
        refs["task"] = weakref.ref(task)
        refs["coro"] = weakref.ref(task.get_coro()) if task.get_coro() is not None else None
        del task

    run(main(), loop_kind)
    gc.collect()
    assert refs["task"]() is None
    assert refs["exc"]() is None
    assert refs["coro"] is None or refs["coro"]() is None
    rec = [t for t in taskwatch.tasks(include_finished=True) if t["coro"].endswith("fails")][0]
    assert rec["state"] == "failed" and rec["exception"]["type"].endswith("Boom")


def test_internal_error_is_counted_logged_once_never_raised(watch, monkeypatch, caplog):
    watch()
    from taskwatch._core import _sites

    def broken(*args, **kwargs):
        raise RuntimeError("taskwatch bug")

    # Classifying a frame fails: both the Python and the C hot path meet it for every task.
    monkeypatch.setattr(_sites, "is_internal", broken)
    _sites.forget_classes()

    async def child(i):
        return i

    async def main():
        return await asyncio.gather(*(asyncio.create_task(child(i)) for i in range(5)))

    with caplog.at_level(logging.ERROR, logger="taskwatch"):
        assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert taskwatch.report()["stats"]["internal_errors"] >= 5
    assert caplog.text.count("taskwatch internal error in task factory (record)") == 1
    monkeypatch.undo()
    _sites.forget_classes()
    _guard.reset()


WORKLOAD = Path(__file__).with_name("workload.py")


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_real_workload_identical_with_and_without(loop_name):
    if loop_name == "uvloop" and uvloop is None:
        pytest.skip("uvloop missing")
    plain = subprocess.run([sys.executable, str(WORKLOAD), loop_name], capture_output=True,
                           text=True, timeout=60)
    watched = subprocess.run([sys.executable, str(WORKLOAD), loop_name, "--taskwatch"],
                             capture_output=True, text=True, timeout=60)
    assert plain.returncode == watched.returncode == 0, watched.stderr
    assert plain.stdout == watched.stdout
    assert len(plain.stdout.splitlines()) > 20
    # asyncio's own error output is the same too (taskwatch logs nothing here: log=False)
    assert _asyncio_lines(plain.stderr) == _asyncio_lines(watched.stderr)


def _asyncio_lines(text):
    return [re.sub(r"0x[0-9a-f]+", "0x", line) for line in text.splitlines() if "taskwatch" not in line]


def test_loop_create_task_keywords_behave_as_without(watch):
    async def noop():
        pass

    async def main():
        loop = asyncio.get_running_loop()
        task = loop.create_task(noop(), name="kw", context=contextvars.copy_context())
        await task
        coro = noop()
        try:
            loop.create_task(coro, not_an_option=True)
        except TypeError as exc:
            error = type(exc)
        else:  # 3.14 forwards unknown keywords to the Task, which rejects them too
            error = None
        finally:
            coro.close()
        return task.get_name(), error

    plain = asyncio.run(main())
    watch()
    assert asyncio.run(main()) == plain
