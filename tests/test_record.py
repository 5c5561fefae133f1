"""Task records: creation site, parent, callback lineage, cancel provenance, bounded history."""

import asyncio
import gc

import pytest

import taskwatch

from .conftest import here, run


def _rec(coro_suffix):
    matches = [t for t in taskwatch.tasks(include_finished=True) if t["coro"].endswith(coro_suffix)]
    assert matches, [t["coro"] for t in taskwatch.tasks(include_finished=True)]
    return matches


async def leaf():
    await asyncio.sleep(0)


def test_creation_site_is_the_users_line(watch, loop_kind):
    watch()
    lines = {}

    async def main():
        lines["create_task"] = here() + 1
        await asyncio.create_task(leaf())
        lines["ensure_future"] = here() + 1
        await asyncio.ensure_future(leaf())
        lines["loop"] = here() + 1
        await asyncio.get_running_loop().create_task(leaf())
        async with asyncio.TaskGroup() as tg:
            lines["taskgroup"] = here() + 1
            tg.create_task(leaf())
        lines["gather"] = here() + 1
        await asyncio.gather(leaf())
        lines["wait_for"] = here() + 1
        await asyncio.wait_for(leaf(), 5)

    run(main(), loop_kind)
    sites = sorted(t["created_at"]["line"] for t in _rec("leaf"))
    expected = sorted(lines[k] for k in ("create_task", "ensure_future", "loop", "taskgroup", "gather"))
    assert all(line in sites for line in expected), (sites, lines)
    for t in _rec("leaf"):
        assert t["created_at"]["file"] == __file__
        assert t["creation_stack"][-1] == t["created_at"]
        assert t["parent"]["coro"].endswith("main")


def test_creation_stack_depth(watch):
    watch(stack_depth=2)

    async def inner():
        return asyncio.create_task(leaf())

    async def middle():
        return await inner()

    async def main():
        await (await middle())

    asyncio.run(main())
    rec = _rec("leaf")[0]
    assert [f["function"] for f in rec["creation_stack"]] == [
        "test_creation_stack_depth.<locals>.middle", "test_creation_stack_depth.<locals>.inner"]


def test_parent_of_task_created_from_a_callback(watch, loop_kind):
    watch()

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def callback():
            done.set_result(asyncio.ensure_future(leaf()))

        loop.call_soon(callback)
        await (await done)

    run(main(), loop_kind)
    rec = _rec("leaf")[0]
    assert rec["parent"]["coro"].endswith("test_parent_of_task_created_from_a_callback.<locals>.main")
    assert rec["created_at"]["function"].endswith("callback")


def test_lineage_off_leaves_task_contexts_alone(watch, loop_kind):
    """lineage=False: no context variable of taskwatch's in any task's context; a task made from
    a callback has no parent, a task made by a task still has it."""
    import contextvars

    watch(lineage=False)
    seen = {}

    async def main():
        seen["vars"] = [var.name for var in contextvars.copy_context()]
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(lambda: done.set_result(asyncio.ensure_future(leaf())))
        await (await done)
        await asyncio.create_task(leaf())

    run(main(), loop_kind)
    assert "taskwatch_task" not in seen["vars"]
    parents = sorted(bool(r["parent"]) for r in _rec("leaf"))
    assert parents == [False, True]


def test_a_task_built_past_the_factory_is_no_parent_of_its_creators(watch, loop_kind):
    """aiohttp builds each request's task with asyncio.Task() directly (past the factory): a task
    that task creates has a parent taskwatch does not know, not the task that started the
    server (whose lineage the request task's context inherited)."""
    watch()

    async def handler():
        await asyncio.create_task(leaf())

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.Task(handler(), loop=loop)
        if hasattr(asyncio, "eager_task_factory"):  # 3.12+: as aiohttp does there
            await asyncio.Task(handler(), loop=loop, eager_start=True)

    run(main(), loop_kind)
    recs = _rec("leaf")
    assert len(recs) == (2 if hasattr(asyncio, "eager_task_factory") else 1)
    assert all(r["parent"] is None for r in recs), [r["parent"] for r in recs]


def test_ids_are_unique_and_increasing(watch):
    watch()

    async def main():
        await asyncio.gather(*(asyncio.create_task(leaf()) for _ in range(50)))

    asyncio.run(main())
    asyncio.run(main())
    ids = [t["id"] for t in _rec("leaf")]
    assert len(ids) == len(set(ids)) == 100


def test_cancel_is_recorded_with_line_task_and_message(watch, loop_kind):
    watch()
    lines = {}

    async def main():
        task = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        lines["cancel"] = here() + 1
        task.cancel("shutting down")
        await asyncio.gather(task, return_exceptions=True)

    run(main(), loop_kind)
    rec = _rec("sleep")[0]
    assert rec["state"] == "cancelled"
    (cancel,) = rec["cancels"]
    assert cancel["requested_at"]["line"] == lines["cancel"]
    assert cancel["by_task"]["coro"].endswith("main")
    assert cancel["message"] == "shutting down"


def test_cancel_from_timeout_is_recorded_as_a_loop_callback(watch, loop_kind):
    watch()

    async def guarded():
        async with asyncio.timeout(0.01):
            await asyncio.sleep(10)

    async def main():
        await asyncio.gather(asyncio.create_task(guarded()), return_exceptions=True)

    run(main(), loop_kind)
    rec = _rec("guarded")[0]
    (cancel,) = rec["cancels"]
    assert cancel["by_task"] is None
    assert cancel["requested_at"]["function"].endswith("_on_timeout")  # asyncio's timer callback


def test_forwarded_cancel_names_the_outer_task(watch, loop_kind):
    watch()

    async def outer(inner_task):
        await inner_task

    async def main():
        inner = asyncio.create_task(asyncio.sleep(10))
        wrapper = asyncio.create_task(outer(inner))
        await asyncio.sleep(0)
        wrapper.cancel()
        await asyncio.gather(wrapper, return_exceptions=True)

    run(main(), loop_kind)
    outer_rec = _rec("outer")[0]
    inner_rec = _rec("sleep")[0]
    assert inner_rec["cancels"][0]["via_task"] == outer_rec["id"]
    assert inner_rec["cancels"][0]["requested_at"] == outer_rec["cancels"][0]["requested_at"]


def test_history_is_bounded_and_drops_are_counted(watch):
    watch(history=10)

    async def main():
        await asyncio.gather(*(asyncio.create_task(leaf()) for _ in range(30)))

    asyncio.run(main())
    gc.collect()
    finished = [t for t in taskwatch.tasks(include_finished=True) if t["coro"].endswith("leaf")]
    assert len(finished) <= 10
    assert taskwatch.report()["stats"]["dropped_history"] >= 20


def test_outcomes_and_exception_summary(watch, loop_kind):
    watch()

    async def fails():
        raise ConnectionError("backend down")

    async def main():
        await asyncio.gather(asyncio.create_task(fails()), asyncio.create_task(leaf()),
                             return_exceptions=True)

    run(main(), loop_kind)
    failed = _rec("fails")[0]
    assert failed["state"] == "failed"
    assert failed["exception"] == {"type": "ConnectionError", "message": "backend down"}
    assert failed["duration_s"] >= 0
    assert _rec("leaf")[0]["state"] == "finished"
    stats = taskwatch.report()["stats"]
    assert stats["tasks_failed"] >= 1


def test_dump_groups_identical_tasks(watch, loop_kind):
    watch()
    out = {}

    async def worker(queue):
        await queue.get()

    async def main():
        queue = asyncio.Queue()
        workers = [asyncio.create_task(worker(queue)) for _ in range(100)]
        await asyncio.sleep(0.01)
        out["dump"] = taskwatch.dump()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    run(main(), loop_kind)
    dump = out["dump"]
    assert "100 x tests.test_record.test_dump_groups_identical_tasks.<locals>.worker" in dump
    assert "on Queue.get" in dump
    assert "test_record.py" in dump


@pytest.mark.parametrize("speedups", [True, False])
def test_task_freed_after_its_loop_closed_is_still_recorded(watch, loop_kind, speedups):
    """A finished task kept alive past its loop (here by a list) is closed when freed, and its
    record goes to the history and the counters even though the loop has retired."""
    watch(speedups=speedups, watchdog=False)
    kept = []

    async def fails():
        raise ValueError("late")

    async def main():
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        task.exception()  # retrieved: no asyncio complaint when it is freed
        kept.append(task)

    run(main(), loop_kind)
    created = taskwatch.report()["stats"]["tasks_failed"]
    kept.clear()
    gc.collect()
    after = taskwatch.report()["stats"]["tasks_failed"]
    assert after == created + 1
    records = [r for r in taskwatch.tasks(include_finished=True) if r["coro"].endswith("fails")]
    assert records and records[0]["state"] == "failed" and records[0]["closed"] == "released"


def test_report_times_follow_a_wall_clock_that_stepped(watch, monkeypatch):
    """A VM resumed or NTP stepping the clock: report times stay next to time.time() as it is
    now, not as it was when taskwatch was imported."""
    import time

    from taskwatch._core import _record

    watch()

    async def main():
        await asyncio.create_task(leaf())

    run(main())
    step = 3600.0
    real = time.time
    monkeypatch.setattr(_record, "_time", lambda: real() + step)
    (rec,) = _rec("leaf")
    assert abs(rec["ended"] - (real() + step)) < 60
    assert abs(_record.to_wall(time.monotonic()) - (real() + step)) < 1
