"""Each finding kind, on asyncio and uvloop, names the user's lines; correct programs raise none."""

import asyncio
import collections
import gc
import logging
import sys
import threading
import weakref

import pytest

import taskwatch

from .conftest import here, kinds, run


def _only(kind):
    gc.collect()
    found = [f for f in taskwatch.findings() if f.kind == kind]
    assert len(found) == 1, [str(f) for f in taskwatch.findings()]
    return found[0]


async def fails():
    await asyncio.sleep(0)
    raise ConnectionError("backend down")


def test_unretrieved_exception(watch, loop_kind):
    watch(watchdog=False)
    lines = {}

    async def main():
        lines["create"] = here() + 1
        asyncio.create_task(fails())
        await asyncio.sleep(0.01)
        gc.collect()

    run(main(), loop_kind)
    finding = _only("unretrieved-exception")
    assert finding.severity == "error"
    assert finding.task["created_at"]["line"] == lines["create"]
    assert finding.data["exception"]["type"] == "ConnectionError"
    assert finding.data["exception"]["traceback"][-1]["function"] == "fails"
    assert f"test_findings.py:{lines['create']}" in finding.message
    assert "ConnectionError: backend down" in finding.message


def test_lost_exception_in_gather(watch, loop_kind):
    watch(watchdog=False)
    lines = {}

    async def fast():
        raise KeyError("first")

    async def slow():
        await asyncio.sleep(0.02)
        raise ValueError("second")

    async def main():
        try:
            lines["gather"] = here() + 1
            await asyncio.gather(fast(), slow())
        except KeyError:
            pass
        await asyncio.sleep(0.05)

    run(main(), loop_kind)
    finding = _only("lost-exception")
    assert finding.task["created_at"]["line"] == lines["gather"]
    assert finding.data["exception"]["type"] == "ValueError"
    assert "unretrieved-exception" not in kinds()


def test_swallowed_cancel(watch, loop_kind):
    watch(watchdog=False)
    lines = {}

    async def step():
        try:
            await asyncio.sleep(10)
        finally:
            pass  # a clean-up re-raises: not the line that swallowed it

    async def stubborn():
        lines["except"] = here() + 4
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                return "ignored"

    async def main():
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        lines["cancel"] = here() + 1
        task.cancel("stop")
        assert await task == "ignored"

    run(main(), loop_kind)
    finding = _only("swallowed-cancel")
    assert finding.data["cancel"]["requested_at"]["line"] == lines["cancel"]
    caught = finding.data["cancel"]["caught_at"]
    assert (caught["line"], caught["function"].rsplit(".", 1)[-1]) == (lines["except"], "stubborn")
    assert f"test_findings.py:{lines['except']} in " in finding.message.split("the `except` at ")[1]
    assert finding.data["cancel"]["message"] == "stop"
    assert finding.data["cancel"]["by_task"]["coro"].endswith("main")
    assert finding.data["cancel"]["passed_to"] is None


def _swallowed_cancels(main, loop_kind):
    """Run ``main()``; the swallowed-cancel findings, by task name."""
    run(main(), loop_kind)
    gc.collect()
    return {f.task["name"]: f for f in taskwatch.findings() if f.kind == "swallowed-cancel"}


async def _gives_up(lines):
    """Catches the cancel and returns instead (its `except` line into ``lines["gives_up"]``)."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        lines["gives_up"] = here() - 1
        return "gave up"


def test_swallowed_cancel_passed_on_to_an_awaited_task_blames_that_task(watch, loop_kind):
    """A task cancelled while it awaits another: asyncio passes the cancel on, the other task
    swallows it and returns, and the first only gets that result. Its finding says so and names no
    `except` of its own; the task that caught it gets the finding with the `except` line."""
    watch(watchdog=False)
    lines = {}

    async def outer(task):
        return await task

    async def main():
        task = asyncio.create_task(_gives_up(lines), name="inner")
        await asyncio.sleep(0)
        waiting = asyncio.create_task(outer(task), name="outer")
        await asyncio.sleep(0.01)
        waiting.cancel()
        assert await waiting == "gave up"

    found = _swallowed_cancels(main, loop_kind)
    assert sorted(found) == ["inner", "outer"], [str(f) for f in taskwatch.findings()]
    outer_cancel = found["outer"].data["cancel"]
    assert outer_cancel["passed_to"]["name"] == "inner"
    assert outer_cancel["passed_to"]["coro"].endswith("_gives_up")
    assert outer_cancel["caught_at"] is None
    assert "it was awaiting task 'inner' (" in found["outer"].message
    assert "it caught CancelledError" not in found["outer"].message
    inner_cancel = found["inner"].data["cancel"]
    assert inner_cancel["passed_to"] is None
    assert inner_cancel["caught_at"]["line"] == lines["gives_up"]


def test_swallowed_cancel_caught_by_its_own_except_after_one_passed_on_names_its_except(
        watch, loop_kind):
    """A first cancel passed on to an awaited task that swallowed it, a second caught by the task's
    own `except`: the task swallowed one itself, and the finding names that `except`."""
    watch(watchdog=False)
    lines = {}

    async def outer():
        result = await asyncio.create_task(_gives_up(lines), name="inner")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            lines["except"] = here() - 1
        return result

    async def main():
        task = asyncio.create_task(outer(), name="outer")
        await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.sleep(0.02)
        task.cancel()
        assert await task == "gave up"

    found = _swallowed_cancels(main, loop_kind)
    cancel = found["outer"].data["cancel"]
    assert cancel["passed_to"] is None
    assert cancel["caught_at"]["line"] == lines["except"]


def test_swallowed_cancel_that_reached_no_awaited_task_names_its_own_except(watch, loop_kind):
    """Cancelled while the task it awaits has just ended: nothing is passed on (that task only had
    a handled timeout), the task catches the CancelledError itself, and the finding says so."""
    watch(watchdog=False)
    lines = {}

    async def inner():
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError:
            pass

    async def outer(task):
        try:
            await task
        except asyncio.CancelledError:
            lines["except"] = here() - 1
            return "caught"

    async def main():
        task = asyncio.create_task(inner(), name="inner")
        await asyncio.sleep(0)
        waiting = asyncio.create_task(outer(task), name="outer")
        await task  # this wake-up runs before outer's: outer still waits on a done task
        waiting.cancel()
        assert await waiting == "caught"

    run(main(), loop_kind)
    gc.collect()
    finding = _only("swallowed-cancel")
    assert finding.task["name"] == "outer"
    assert finding.data["cancel"]["passed_to"] is None
    assert finding.data["cancel"]["caught_at"]["line"] == lines["except"]


def test_swallowed_cancel_passed_on_is_told_after_the_inner_record_left_the_history(
        watch, loop_kind):
    """The awaiting task runs on after the awaited task swallowed its cancel, while more tasks end
    than the history keeps: the finding still says the cancel was passed on, and names no
    `except` of the awaiting task (the one around its await catches ValueError only)."""
    watch(watchdog=False, history=5)
    lines = {}

    async def outer():
        try:
            result = await asyncio.create_task(_gives_up(lines), name="inner")
        except ValueError:
            result = None
        await asyncio.gather(*(asyncio.sleep(0) for _ in range(20)))
        gc.collect()
        return result

    async def main():
        task = asyncio.create_task(outer(), name="outer")
        await asyncio.sleep(0.02)
        task.cancel()
        assert await task == "gave up"

    found = _swallowed_cancels(main, loop_kind)
    cancel = found["outer"].data["cancel"]
    assert cancel["passed_to"]["name"] == "inner"
    assert cancel["caught_at"] is None
    assert "it caught CancelledError" not in found["outer"].message


def test_a_cancel_passed_on_keeps_no_records_of_tasks_destroyed_pending(watch, loop_kind):
    """The request of a cancel passed on to an awaited task refers to that task's record weakly:
    when the outer task is dropped while pending (it never settles), the inner tasks' records
    live no longer than the history keeps them."""
    watch(watchdog=False, history=10)
    inner_records = []

    async def outer():
        task = asyncio.create_task(_gives_up({}))
        inner_records.append(weakref.ref(task._tw_rec))
        await task
        await asyncio.get_running_loop().create_future()  # never resumed; nobody holds it

    async def main():
        for _ in range(200):
            task = asyncio.create_task(outer())
            for _ in range(2):
                await asyncio.sleep(0)
            task.cancel()
            for _ in range(4):
                await asyncio.sleep(0)
            del task
        gc.collect()
        return sum(ref() is not None for ref in inner_records)

    logging.disable(logging.CRITICAL)  # asyncio's "Task was destroyed but it is pending!"
    try:
        alive = run(main(), loop_kind)
    finally:
        logging.disable(logging.NOTSET)
    assert len(inner_records) == 200
    assert alive <= 20, f"{alive} of 200 inner tasks' records alive, the history keeps 10"


def test_slow_cancel(watch, loop_kind):
    watch(watchdog=False, slow_cancel=0.2)
    lines = {}

    async def slow_cleanup():
        try:
            await asyncio.sleep(10)
        finally:
            lines["cleanup"] = here() + 1
            await asyncio.sleep(0.6)

    async def main():
        task = asyncio.create_task(slow_cleanup())
        await asyncio.sleep(0)
        lines["cancel"] = here() + 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main(), loop_kind)
    finding = _only("slow-cancel")
    assert finding.data["cancel"]["requested_at"]["line"] == lines["cancel"]
    assert finding.data["cancel"]["waited_s"] >= 0.15  # uvloop timers may fire ~1 ms early
    assert finding.data["stack"][-1]["line"] == lines["cleanup"]
    _names_waited_for(finding, [])
    assert "swallowed-cancel" not in kinds()


async def _ignores_cancel(seconds):
    """Catches CancelledError and goes on until ``seconds`` have passed: the task at fault."""
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass


def _slow_cancels(loop_kind, make, name, after=0.05):
    """Run ``make()`` as task ``name``, cancel it ``after`` seconds in, wait for it to end; its
    slow-cancel findings (and those of tasks it made), by task name."""
    async def main():
        task = asyncio.create_task(make(), name=name)
        await asyncio.sleep(after)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main(), loop_kind)
    return {f.task["name"]: f for f in taskwatch.findings() if f.kind == "slow-cancel"}


def _waits_for(loop_kind, make, name, names, reported=None, after=0.05):
    """Run and cancel ``make()`` as task ``name`` (``_slow_cancels``); its slow-cancel names exactly
    ``names`` as what it waits for, and the slow-cancels are of ``reported`` (when given)."""
    found = _slow_cancels(loop_kind, make, name, after)
    if reported is not None:
        assert sorted(found) == reported
    _names_waited_for(found[name], names)
    return found


def _names_waited_for(finding, names):
    """The finding names exactly ``names`` as what the task waits for, or blames its own code."""
    assert [t["name"] for t in finding.data["cancel"]["waiting_for"]] == names
    assert finding.data["cancel"]["waiting_for_count"] == len(names)
    if names:
        assert f"It is waiting for task '{names[0]}' (" in finding.message
        assert "It is ignoring the cancellation" not in finding.message
    else:
        assert "It is ignoring the cancellation" in finding.message


@pytest.mark.parametrize("how", ["await", "wait_for"])
def test_slow_cancel_of_a_task_awaiting_one_that_ignores_it_names_that_one(watch, loop_kind, how):
    """A task that waits for another is slow to cancel only because the other is: its finding names
    the other task and does not blame its own code; the other task gets its own finding."""
    watch(watchdog=False, slow_cancel=0.2)

    async def outer():
        stubborn = asyncio.create_task(_ignores_cancel(1.0), name="stubborn")
        if how == "await":
            await stubborn
        else:
            await asyncio.wait_for(stubborn, 30)

    found = _waits_for(loop_kind, outer, "outer", ["stubborn"], ["outer", "stubborn"], after=0.01)
    assert found["outer"].data["cancel"]["waiting_for"][0]["coro"].endswith("_ignores_cancel")
    _names_waited_for(found["stubborn"], [])


def test_slow_cancel_of_a_task_group_owner_names_the_children_still_ending(watch, loop_kind):
    """Cancelled inside ``async with TaskGroup()``, a task waits in the group's exit for children
    the group cancelled: the finding names those that have not ended, not the quick ones."""
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_stubborn(1.0), name="slow-child")
            tg.create_task(_stubborn(0), name="quick-child")
            tg.create_task(asyncio.sleep(0.001), name="done-child")
            await asyncio.sleep(30)

    _waits_for(loop_kind, owner, "owner", ["slow-child"], ["owner", "slow-child"])


def test_slow_cancel_of_a_large_task_group_names_ten_and_counts_all(watch, loop_kind):
    """A group of 25 children that all ignore the cancel: ten are named, all 25 counted."""
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        async with asyncio.TaskGroup() as tg:
            for i in range(25):
                tg.create_task(_stubborn(1.0), name=f"child-{i:02}")
            await asyncio.sleep(30)

    finding = _slow_cancels(loop_kind, owner, "owner")["owner"]
    cancel = finding.data["cancel"]
    assert [t["name"] for t in cancel["waiting_for"]] == [f"child-{i:02}" for i in range(10)]
    assert cancel["waiting_for_count"] == 25
    assert "task 'child-02' (" in finding.message and " and 22 more, which were" in finding.message


def test_slow_cancel_of_an_anyio_task_group_owner_names_the_child(watch, loop_kind):
    """anyio's task group cancels its children when its host is cancelled, and waits for them in
    its exit: the child that ignores the cancel is named."""
    anyio = pytest.importorskip("anyio")
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ignores_cancel, 1.0, name="stubborn")
            await asyncio.sleep(30)

    _waits_for(loop_kind, owner, "owner", ["stubborn"])


def test_slow_cancel_waiting_also_on_work_nobody_cancelled_names_none(watch, loop_kind):
    """asyncio.wait(FIRST_COMPLETED) on a child that ignores the cancel and on one nobody
    cancelled: either may end the wait, so the finding names neither."""
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        stubborn = asyncio.create_task(_ignores_cancel(1.0), name="stubborn")
        other = asyncio.create_task(asyncio.sleep(1.0), name="other")
        try:
            await asyncio.sleep(30)
        finally:
            stubborn.cancel()
            await asyncio.wait([stubborn, other], return_when=asyncio.FIRST_COMPLETED)

    _waits_for(loop_kind, owner, "owner", [])


@pytest.mark.parametrize("how", ["gather", "wait"])
def test_slow_cancel_of_a_task_waiting_on_its_children_names_them(watch, loop_kind, how):
    """Cancelled while it waits for its children: gather() passes the cancel on to them, and with
    asyncio.wait() its ``finally`` cancels them and waits. Either way it waits for the child that
    ignores the cancel, and that child is named."""
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        kids = [asyncio.create_task(_ignores_cancel(1.0), name="stubborn"),
                asyncio.create_task(asyncio.sleep(30), name="sleeper")]
        try:
            if how == "gather":
                await asyncio.gather(*kids)
            else:
                await asyncio.wait(kids)
        finally:
            for kid in kids:
                kid.cancel()
            await asyncio.wait(kids)

    _waits_for(loop_kind, owner, "owner", ["stubborn"], ["owner", "stubborn"])


def test_slow_cancel_names_a_task_gathered_twice_once(watch, loop_kind):
    """gather(t, t) waits for one task: it is named and counted once."""
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        stubborn = asyncio.create_task(_ignores_cancel(1.0), name="stubborn")
        await asyncio.gather(stubborn, stubborn)

    _waits_for(loop_kind, owner, "owner", ["stubborn"])


def test_slow_cancel_in_a_finally_that_sleeps_after_cancelling_children_names_none(watch, loop_kind):
    """Its children were asked to cancel and are slow too, but the task sleeps in its own
    ``finally``: that sleep is the delay, and the finding blames it, not the children."""
    watch(watchdog=False, slow_cancel=0.2)

    async def owner():
        kids = [asyncio.create_task(_ignores_cancel(1.5), name="stubborn")]
        try:
            await asyncio.sleep(30)
        finally:
            kids[0].cancel()
            await asyncio.sleep(1.0)  # the check comes at 0.2 s: well inside this sleep
            await asyncio.gather(*kids)

    _waits_for(loop_kind, owner, "owner", [])


def test_slow_cancel_names_no_cancelled_task_whose_end_it_does_not_wait_for(watch, loop_kind):
    """It cancelled a stubborn peer, then waits in asyncio.wait() for other work nobody cancelled:
    the peer is not what it waits for, and the finding must not say so."""
    watch(watchdog=False, slow_cancel=0.2)

    async def supervisor():
        peer = asyncio.create_task(_ignores_cancel(1.5), name="peer")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            peer.cancel()
            await asyncio.wait([asyncio.create_task(asyncio.sleep(1.0), name="own-work")])
            await asyncio.gather(peer)
            raise

    _waits_for(loop_kind, supervisor, "supervisor", [])


def test_slow_cancel_names_no_task_whose_callback_only_shares_an_object_with_it(watch, loop_kind):
    """A stubborn task's done callback is a method of an object that also holds the future the
    cancelled task waits on in its cleanup: that task is still not what it waits for. Nothing of
    the program's objects is read to decide (their attribute lookups would run its code)."""
    watch(watchdog=False, slow_cancel=0.2)
    looked_up = []

    class Conn:
        def __getattribute__(self, name):
            looked_up.append((name, threading.current_thread().name))
            return object.__getattribute__(self, name)

        def on_worker_done(self, task):
            pass

    conn = Conn()

    async def requester():
        worker = asyncio.create_task(_ignores_cancel(1.0), name="worker")
        worker.add_done_callback(conn.on_worker_done)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            worker.cancel()
            conn.reply = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.8, conn.reply.set_result, "bye")
            await conn.reply
            await asyncio.gather(worker)
            raise

    _waits_for(loop_kind, requester, "requester", [])
    assert all(thread == threading.current_thread().name for _, thread in looked_up), looked_up


def test_slow_cancel_names_no_task_it_waits_for_that_was_not_cancelled(watch, loop_kind):
    """A task slow in its own cleanup, awaiting a task nobody cancelled (in its finally block), is
    itself what is slow: its finding names no other task."""
    watch(watchdog=False, slow_cancel=0.2)

    async def closer():
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.create_task(asyncio.sleep(0.6), name="flush")

    _waits_for(loop_kind, closer, "closer", [], ["closer"], after=0.01)


async def _stubborn(cleanup_s):
    """Once cancelled, it still takes ``cleanup_s`` seconds to finish."""
    try:
        await asyncio.sleep(10)
    finally:
        await asyncio.sleep(cleanup_s)


def test_slow_cancels_each_reported_after_their_own_wait(watch, loop_kind):
    """One timer serves all cancels in flight: the second, asked later, still waits its own time."""
    watch(watchdog=False, slow_cancel=0.3)

    async def main():
        first = asyncio.create_task(_stubborn(1.2), name="first")
        second = asyncio.create_task(_stubborn(1.2), name="second")
        quick = asyncio.create_task(_stubborn(0), name="quick")
        await asyncio.sleep(0)
        first.cancel()
        quick.cancel()
        await asyncio.sleep(0.15)
        second.cancel()
        await asyncio.sleep(0.25)  # first: 0.4 s since its cancel, second: 0.25 s
        names = [f.task["name"] for f in taskwatch.findings() if f.kind == "slow-cancel"]
        assert names == ["first"]
        await asyncio.gather(first, second, quick, return_exceptions=True)

    run(main(), loop_kind)
    found = {f.task["name"]: f for f in taskwatch.findings() if f.kind == "slow-cancel"}
    assert sorted(found) == ["first", "second"]
    assert found["second"].data["cancel"]["waited_s"] >= 0.25  # timers may fire ~1 ms early


def test_cancelled_tasks_leave_the_slow_cancel_watch_when_they_end(watch, loop_kind):
    """Nothing keeps a cancelled task's record (or a timer) for ``slow_cancel`` after it ended."""
    watch(watchdog=False, slow_cancel=30.0, history=0)

    async def wait():
        await asyncio.sleep(10)

    async def burst(probe):
        tasks = [asyncio.create_task(wait()) for _ in range(50)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        assert len(probe._cancelling) == 50
        await asyncio.wait(tasks)
        assert not probe._cancelling
        return [weakref.ref(t._tw_rec) for t in tasks]

    async def main():
        records = await burst(taskwatch._state().probes[asyncio.get_running_loop()])
        gc.collect()
        assert not [r for r in records if r() is not None]

    run(main(), loop_kind)
    assert "slow-cancel" not in kinds()


def test_one_failed_slow_cancel_report_does_not_stop_the_others(watch, loop_kind, monkeypatch):
    """An internal error while reporting one slow cancel costs that report only."""
    from taskwatch._core import _probe

    watch(watchdog=False, slow_cancel=0.2)
    chain, calls = _probe._await_chain, []

    def fails_once(task):
        calls.append(task.get_name())
        if len(calls) == 1:
            raise RuntimeError("injected")
        return chain(task)

    monkeypatch.setattr(_probe, "_await_chain", fails_once)

    async def main():
        tasks = [asyncio.create_task(_stubborn(0.6), name=n) for n in ("a", "b")]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run(main(), loop_kind)
    assert [f.task["name"] for f in taskwatch.findings() if f.kind == "slow-cancel"] == ["b"]
    assert taskwatch.report()["stats"]["internal_errors"] == 1


def test_slow_cancel_timer_fires_once_per_deadline(watch, loop_kind, monkeypatch):
    """Cancels spread over time re-arm the one timer per deadline; a timer that fires a little
    early (uvloop's may, by ~1 ms) must not spin."""
    from taskwatch._core import _probe

    watch(watchdog=False, slow_cancel=0.2)
    fired = []
    check = _probe.Probe._check_slow_cancels

    def counted(self):
        fired.append(1)
        return check(self)

    monkeypatch.setattr(_probe.Probe, "_check_slow_cancels", counted)

    async def main():
        tasks = [asyncio.create_task(_stubborn(0.5)) for _ in range(20)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
            await asyncio.sleep(0.007)
        await asyncio.gather(*tasks, return_exceptions=True)

    run(main(), loop_kind)
    assert len([f for f in taskwatch.findings() if f.kind == "slow-cancel"]) == 20
    assert len(fired) <= 40  # one per deadline, a few more for early timers; it spun to ~700


def test_orphaned_task(watch, loop_kind):
    watch(watchdog=False, orphan_grace=0.1)
    lines = {}

    async def child():
        await asyncio.sleep(0.5)

    async def parent():
        lines["child"] = here() + 1
        asyncio.create_task(child())
        await asyncio.sleep(10)

    async def main():
        p = asyncio.create_task(parent())
        await asyncio.sleep(0.01)
        p.cancel()
        await asyncio.sleep(0.6)

    run(main(), loop_kind)
    finding = _only("orphaned-task")
    assert finding.task["created_at"]["line"] == lines["child"]
    assert finding.data["parent"]["coro"].endswith("parent")
    assert finding.data["parent"]["state"] == "cancelled"


def test_children_of_a_cancelled_or_failed_parent_are_orphans_at_once(watch, loop_kind):
    """The seed's bug: a parent cancelled by timeout() (or failing) leaves children running that
    nobody will await; they are orphans even when they finish within orphan_grace. A parent that
    returned normally gets the grace."""
    watch(watchdog=False, orphan_grace=2.0)

    async def child(seconds):
        await asyncio.sleep(seconds)

    async def times_out():
        async with asyncio.timeout(0.05):
            asyncio.create_task(child(0.3))
            await asyncio.sleep(10)

    async def fails():
        asyncio.create_task(child(0.3))
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def returns():
        asyncio.create_task(child(0.3))  # ends within the grace: not reported

    async def cancelled():
        asyncio.create_task(child(0.3))
        await asyncio.sleep(10)

    async def main():
        tasks = [asyncio.create_task(times_out()), asyncio.create_task(fails()),
                 asyncio.create_task(returns()), asyncio.create_task(cancelled())]
        await asyncio.sleep(0.02)
        tasks[-1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # every child finished, within the 2 s grace

    run(main(), loop_kind)
    orphans = [f for f in taskwatch.findings() if f.kind == "orphaned-task"]
    parents = sorted(f.data["parent"]["coro"].rsplit(".", 1)[-1] for f in orphans)
    assert parents == ["cancelled", "fails", "times_out"], [f.message for f in orphans]
    states = {f.data["parent"]["coro"].rsplit(".", 1)[-1]: f.data["parent"]["state"] for f in orphans}
    # timeout() turns the cancel into TimeoutError: that parent failed
    assert states == {"times_out": "failed", "fails": "failed", "cancelled": "cancelled"}
    assert any("does not cancel the tasks it created" in f.message for f in orphans)


def test_awaited_child_is_not_an_orphan(watch, loop_kind):
    watch(watchdog=False, orphan_grace=0.05)
    box = {}

    async def child():
        await asyncio.sleep(0.2)

    async def parent():
        box["child"] = asyncio.create_task(child())

    async def main():
        await asyncio.create_task(parent())
        await box["child"]  # somebody else awaits it

    run(main(), loop_kind)
    assert "orphaned-task" not in kinds()


def test_destroyed_pending(watch, loop_kind):
    watch(watchdog=False)
    lines = {}

    async def waits(fut):
        await fut

    async def main():
        lines["create"] = here() + 1
        asyncio.ensure_future(waits(asyncio.get_running_loop().create_future()))
        await asyncio.sleep(0)
        gc.collect()

    run(main(), loop_kind)
    finding = _only("destroyed-pending")
    assert finding.task["created_at"]["line"] == lines["create"]


def test_never_awaited(watch, loop_kind, recwarn):
    watch(watchdog=False, coroutine_origin=1)
    lines = {}

    async def send_email():
        pass

    async def main():
        lines["call"] = here() + 1
        send_email()
        gc.collect()

    run(main(), loop_kind)
    finding = _only("never-awaited")
    assert finding.task is None
    assert finding.data["coroutine"]["name"].endswith("send_email")
    assert finding.data["coroutine"]["created_at"]["line"] == lines["call"]
    assert any("was never awaited" in str(w.message) for w in recwarn)  # Python's own warning kept


def test_leaked_task(watch, loop_kind):
    watch(watchdog=False)
    lines = {}

    async def background():
        await asyncio.sleep(10)

    async def main():
        lines["create"] = here() + 1
        asyncio.create_task(background())
        await asyncio.sleep(0.05)

    run(main(), loop_kind)
    finding = _only("leaked-task")
    assert finding.task["created_at"]["line"] == lines["create"]
    assert finding.data["age_s"] >= 0.04


@pytest.mark.parametrize("how", ["ensure_future(sleep)", "create_task(event.wait)",
                                 "gather(event.wait)"])
def test_leaked_task_wrapping_an_asyncio_coroutine(watch, loop_kind, how):
    """A task the program made around asyncio's own coroutine leaks like any other: only tasks
    asyncio itself makes (shutdown_asyncgens, staggered connects) are asyncio's business."""
    watch(watchdog=False)
    lines = {}

    async def main():
        event = asyncio.Event()
        lines["create"] = here() + 2
        if how == "ensure_future(sleep)":
            asyncio.ensure_future(asyncio.sleep(10))
        elif how == "create_task(event.wait)":
            lines["create"] = here() + 1
            asyncio.create_task(event.wait())
        else:
            lines["create"] = here() + 1
            asyncio.ensure_future(asyncio.gather(event.wait()))
        await asyncio.sleep(0.01)

    run(main(), loop_kind)
    found = [f for f in taskwatch.findings() if f.kind == "leaked-task"]
    assert found, [str(f) for f in taskwatch.findings()]
    assert all(f.task["created_at"]["line"] == lines["create"] for f in found), \
        [str(f) for f in found]


def test_asyncio_own_tasks_are_not_leaks(watch, loop_kind):
    """asyncio's own task at shutdown (shutdown_asyncgens) is no finding of the program's."""
    watch(watchdog=False)

    async def agen():
        yield 1
        await asyncio.sleep(0)

    async def main():
        async for _ in agen():
            break  # left suspended: the runner's shutdown_asyncgens task closes it

    run(main(), loop_kind)
    assert kinds() == [], [str(f) for f in taskwatch.findings()]


@pytest.mark.parametrize("final", [0.01, 0.3])
@pytest.mark.parametrize("collect", [True, False])
def test_abandoned_async_generator_awaiting_in_finally(watch, loop_kind, final, collect):
    """``break`` out of ``async for`` over a generator whose ``finally`` awaits: the interpreter
    closes it in a task of its own (the loop's finalizer hook, or shutdown_asyncgens, cancelled by
    the runner when still pending at the end): correct code, no finding."""
    watch(watchdog=False)

    async def ticker():
        try:
            for i in range(10):
                yield i
                await asyncio.sleep(0.001)
        finally:
            await asyncio.sleep(final)

    async def main():
        async for x in ticker():
            if x == 2:
                break
        if collect:
            gc.collect()
        await asyncio.sleep(0.02)

    run(main(), loop_kind)
    gc.collect()
    assert kinds() == [], [str(f) for f in taskwatch.findings()]


def test_leaked_task_at_loop_close(watch):
    watch(watchdog=False)

    async def background():
        await asyncio.sleep(10)

    async def main():
        asyncio.create_task(background())
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    assert "leaked-task" in kinds()


def test_kinds_can_be_disabled_and_sites_silenced(watch):
    watch(watchdog=False, disable=["leaked-task"], ignore=[f"{__file__}"])

    async def background():
        await asyncio.sleep(10)

    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass

    async def main():
        asyncio.create_task(background())
        t = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        t.cancel()
        await t

    asyncio.run(main())
    assert kinds() == []
    assert taskwatch.report()["stats"]["silenced"] >= 1


def test_findings_are_logged_with_structured_extra(watch, caplog):
    watch(watchdog=False, log=True)

    async def background():
        await asyncio.sleep(10)

    async def main():
        asyncio.create_task(background())

    with caplog.at_level(logging.WARNING, logger="taskwatch"):
        asyncio.run(main())
    (record,) = [r for r in caplog.records if r.name == "taskwatch"]
    assert record.taskwatch_kind == "leaked-task"
    assert record.taskwatch["task"]["state"] == "pending"
    assert record.getMessage().startswith("[leaked-task] Task ")


def test_report_matches_the_contract(watch, loop_kind):
    watch(watchdog=False)

    async def main():
        asyncio.create_task(fails())
        await asyncio.sleep(0.01)
        gc.collect()

    run(main(), loop_kind)
    report = taskwatch.report()
    assert set(report) >= {"taskwatch", "python", "loop", "started_at", "ended_at", "findings", "stats"}
    assert report["loop"] == loop_kind
    assert set(report["stats"]) >= {"tasks_created", "tasks_finished", "tasks_failed",
                                    "tasks_cancelled", "max_block_s", "internal_errors", "dropped"}
    (finding,) = report["findings"]
    assert set(finding) >= {"kind", "severity", "time", "message", "task", "exception"}
    task = finding["task"]
    assert set(task) >= {"id", "name", "coro", "created_at", "creation_stack", "parent", "state"}
    assert set(task["created_at"]) == {"file", "line", "function"}
    import json

    json.dumps(report)


class _Server:
    async def handle(self, reader, writer):
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()


async def _correct_program():
    """Idiomatic, correct asyncio: none of this may raise a finding."""
    async def ok(i):
        await asyncio.sleep(0.001)
        return i

    async def fail():
        raise ValueError("expected")

    async with asyncio.TaskGroup() as tg:
        for i in range(5):
            tg.create_task(ok(i))
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(1))
            tg.create_task(fail())
    except* ValueError:
        pass
    try:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
    except TimeoutError:
        pass
    try:
        await asyncio.wait_for(asyncio.sleep(1), 0.01)
    except TimeoutError:
        pass
    results = await asyncio.gather(ok(1), fail(), return_exceptions=True)
    assert isinstance(results[1], ValueError)
    inner = asyncio.create_task(ok(2))
    try:
        await asyncio.wait_for(asyncio.shield(inner), 0.0001)
    except TimeoutError:
        pass
    await inner
    task = asyncio.create_task(asyncio.sleep(1))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    server = await asyncio.start_server(_Server().handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        assert await reader.readline() == b"PING\n"
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()
    background = set()
    for i in range(3):
        t = asyncio.create_task(ok(i))
        background.add(t)
        t.add_done_callback(background.discard)
    await asyncio.gather(*background)
    done, _ = await asyncio.wait([asyncio.create_task(ok(i)) for i in range(3)])
    for t in done:
        t.result()
    for coro in asyncio.as_completed([ok(1), ok(2)]):
        await coro
    await asyncio.to_thread(sum, [1, 2])


def test_no_false_positives_on_correct_programs(watch, loop_kind):
    watch(orphan_grace=0.05, slow_cancel=0.5)
    run(_correct_program(), loop_kind)
    assert kinds() == []


@pytest.mark.skipif(not hasattr(asyncio, "eager_task_factory"), reason="3.12+")
def test_no_false_positives_with_eager_tasks(watch, loop_kind):
    watch(orphan_grace=0.05)

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        await _correct_program()

    run(main(), loop_kind)
    assert kinds() == []


def test_withdrawn_cancels_are_not_slow(watch, loop_kind):
    """A cancel withdrawn with uncancel() (an expired, handled timeout(); a handled wait_for timeout
    on 3.12+; anyio's cancel scopes inside httpx) is not pending: the task may work on as long as
    it likes afterwards. A later real cancel is still watched."""
    watch(watchdog=False, slow_cancel=0.2)

    async def handled_timeout():
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        await asyncio.sleep(0.4)  # works on well past slow_cancel
        return "ok"

    async def handled_wait_for():
        try:
            await asyncio.wait_for(asyncio.sleep(1), 0.01)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.4)
        return "ok"

    async def withdrawn_by_hand():
        task = asyncio.current_task()
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            task.uncancel()
        await asyncio.sleep(0.4)
        return "ok"

    async def main():
        results = await asyncio.gather(asyncio.create_task(handled_timeout()),
                                       asyncio.create_task(handled_wait_for()),
                                       asyncio.create_task(withdrawn_by_hand()))
        assert results == ["ok"] * 3

    run(main(), loop_kind)
    assert [f.message for f in taskwatch.findings()] == []

    async def withdrawn_then_stubborn():
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        await _stubborn(0.5)

    async def main2():
        task = asyncio.create_task(withdrawn_then_stubborn())
        await asyncio.sleep(0.05)
        task.cancel()  # a real cancel after the withdrawn one: watched again
        await asyncio.gather(task, return_exceptions=True)

    run(main2(), loop_kind)
    assert kinds() == ["slow-cancel"]


def test_runner_shutdown_cancel_is_named_and_may_be_caught(watch, loop_kind):
    """A task that waits for the runner's final cancel on purpose (a shutdown hook) swallows
    nothing; the canceller is the runner's shutdown, not the line that called asyncio.run()."""
    watch(watchdog=False)
    cleaned = []

    async def shutdown_hook():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cleaned.append(True)

    async def main():
        asyncio.create_task(shutdown_hook())
        await asyncio.sleep(0)

    run(main(), loop_kind)
    assert cleaned == [True]
    assert "swallowed-cancel" not in kinds(), [f.message for f in taskwatch.findings()]


def test_failing_while_a_cancelled_gather_collects_is_lost_not_swallowed(watch, loop_kind):
    watch(watchdog=False)

    async def fails_on_cancel():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # gather has already given up on its children
            raise ValueError("cleanup failed")

    async def main():
        outer = asyncio.gather(asyncio.create_task(asyncio.sleep(10)),
                               asyncio.create_task(fails_on_cancel()))
        await asyncio.sleep(0)
        outer.cancel()
        try:
            await outer
        except (asyncio.CancelledError, ValueError):
            pass
        await asyncio.sleep(0.05)

    run(main(), loop_kind)
    found = kinds()
    assert "swallowed-cancel" not in found, [f.message for f in taskwatch.findings()]
    assert "lost-exception" in found, found


def test_children_the_program_keeps_are_not_orphans(watch, loop_kind):
    """Background jobs a handler starts and the program keeps (a registry it awaits at shutdown,
    as asyncio's create_task documentation advises) are not forgotten children."""
    watch(watchdog=False, orphan_grace=0.05)
    registry = set()
    lines = {}

    async def job(seconds):
        await asyncio.sleep(seconds)

    async def handler():
        registry.add(asyncio.create_task(job(0.3)))
        lines["forgotten"] = here() + 1
        asyncio.create_task(job(0.3))

    async def main():
        await asyncio.create_task(handler())
        await asyncio.sleep(0.2)
        await asyncio.gather(*registry)
        await asyncio.sleep(0.2)

    run(main(), loop_kind)
    orphans = [f for f in taskwatch.findings() if f.kind == "orphaned-task"]
    assert [f.task["created_at"]["line"] for f in orphans] == [lines["forgotten"]]


def test_a_child_inside_a_timeout_is_still_an_orphan(watch, loop_kind):
    """A child working inside ``asyncio.timeout()`` is held by the Timeout (to cancel it), which
    the child's own stack holds: that is no one keeping it. Forgotten, it is an orphan; kept by
    the program's own object (a service with a set of its tasks, its ``self`` in the child's
    frame too), it is not."""
    watch(watchdog=False, orphan_grace=0.05)
    lines = {}

    class Service:
        def __init__(self):
            self.tasks = set()
            self.queued = collections.deque()  # a registry in a library's container

        async def refresh(self):
            async with asyncio.timeout(5):
                await asyncio.sleep(0.3)

        async def refresh_queued(self, queued):
            async with asyncio.timeout(5):
                await asyncio.sleep(0.3)

        async def handle(self):
            self.tasks.add(asyncio.create_task(self.refresh()))  # kept
            self.queued.append(asyncio.create_task(self.refresh_queued(self.queued)))  # kept
            lines["forgotten"] = here() + 1
            asyncio.create_task(self.refresh())

    async def main():
        service = Service()
        await asyncio.create_task(service.handle())
        await asyncio.sleep(0.2)
        await asyncio.gather(*service.tasks, *service.queued)
        await asyncio.sleep(0.2)

    run(main(), loop_kind)
    orphans = [f for f in taskwatch.findings() if f.kind == "orphaned-task"]
    assert [f.task["created_at"]["line"] for f in orphans] == [lines["forgotten"]], \
        [str(f) for f in taskwatch.findings()]


def test_a_task_made_by_library_code_names_the_task_it_ran_in(watch):
    """No line of the program made the task (a library's callback did), but it ran in one of the
    program's tasks: say so, rather than 'created by the event loop or a library by task ...'."""
    watch(watchdog=False)
    from taskwatch._core import _findings

    class Rec:
        name, id, coro_name, created_at = "Task-9", 9, "lib.worker", None

        def __init__(self, parent):
            self.parent = parent

        def parent_brief(self):
            return self.parent

    assert _findings._who(Rec({"name": "Task-1", "id": 1, "coro": "app.main"})) == (
        "Task 'Task-9' (lib.worker), created by library code running in task 'Task-1' (app.main)")
    assert _findings._who(Rec(None)) == (
        "Task 'Task-9' (lib.worker), created by the event loop or a library")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is 3.12+")
@pytest.mark.parametrize("factory", [
    "none",
    pytest.param("eager", marks=pytest.mark.xfail(strict=True, reason=(
        "taskwatch limit (missed finding): anyio recognises asyncio.eager_task_factory by its "
        "code object, takes the task class out of its closure and builds asyncio.Task(...) "
        "itself, outside any task factory; taskwatch would have to swap asyncio's Task class or "
        "the factory's closure cell (visible to the program) to see those tasks' cancels"))),
])
def test_swallowed_cancel_in_an_anyio_task_group(watch, factory):
    """A task of an anyio task group that swallows the group's cancellation."""
    anyio = pytest.importorskip("anyio")
    watch(watchdog=False)

    async def stubborn():
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            return  # swallowed

    async def main():
        if factory == "eager":
            asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        async with anyio.create_task_group() as group:
            group.start_soon(stubborn)
            await anyio.sleep(0.01)
            group.cancel_scope.cancel()

    asyncio.run(main())
    assert kinds() == ["swallowed-cancel"], [str(f) for f in taskwatch.findings()]
