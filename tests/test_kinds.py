"""Tasks and futures of every kind, through both hot paths: no crash, no internal error, no change.

A program may hand taskwatch's factory, done callback and parent tracking objects that are not
taskwatch's C Task: asyncio's C Task and its subclasses (with ``__slots__``, with a Python
``__init__``), asyncio's pure-Python Task, Future subclasses and duck-typed futures, from its own
task factory, as running tasks (parents) and as awaited futures. For each kind the same program runs
without taskwatch, on the C hot path and on the pure-Python one, in a subprocess (a crash must not
take pytest down): its results, asyncio's own reports and the records must match.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import concurrent.futures
import contextvars
import gc
import json
import os
import re
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

import taskwatch
from taskwatch._core import _accel, _guard

ROOT = Path(__file__).absolute().parents[1]
EAGER = sys.version_info >= (3, 12)
PyTask = asyncio.tasks._PyTask


class Boom(Exception):
    pass


# -- the kinds ------------------------------------------------------------------------------------

class SlotTask(asyncio.Task):  # type: ignore[misc]
    __slots__ = ("tag",)


class DictTask(asyncio.Task):  # type: ignore[misc]
    pass


class InitTask(asyncio.Task):  # type: ignore[misc]
    def __init__(self, coro: Any, **kw: Any) -> None:
        super().__init__(coro, **kw)
        self.tag = "init"


class PySubTask(PyTask):  # type: ignore[misc,valid-type]
    def __init__(self, coro: Any, **kw: Any) -> None:
        super().__init__(coro, **kw)
        self.tag = "pysub"


class FutSub(asyncio.Future):  # type: ignore[misc]
    """A Future subclass, as an awaited future."""


class FutureTask(asyncio.Future):  # type: ignore[misc]
    """A program's 'task' that is a Future: its coroutine runs in a plain Task made directly."""

    def set_name(self, name: Any) -> None:  # 3.13.0-3.13.2 call it on every factory's result
        pass

    def __init__(self, coro: Any, *, loop: Any = None, name: Any = None, context: Any = None,
                 eager_start: Any = None) -> None:
        super().__init__(loop=loop)
        self._runner = asyncio.Task(coro, loop=loop, context=context)
        self._runner.add_done_callback(self._copy)

    def _copy(self, runner: Any) -> None:
        if self.done():
            return
        if runner.cancelled():
            super().cancel()
        elif runner.exception() is not None:
            self.set_exception(runner.exception())
        else:
            self.set_result(runner.result())

    def cancel(self, msg: Any = None) -> bool:
        return self._runner.cancel(msg)


class _Duck:
    """A future-like object asyncio accepts (isfuture() is true) that is no asyncio.Future: no
    get_name(), cancelling(), _exception or _source_traceback."""

    __slots__ = ("_loop", "_fut", "_wrapped", "_asyncio_future_blocking")

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._fut = loop.create_future()
        self._wrapped: dict[Any, Any] = {}
        self._asyncio_future_blocking = False

    def get_loop(self) -> Any:
        return self._loop

    def set_name(self, name: Any) -> None:  # 3.13.0-3.13.2 call it on every factory's result
        pass

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        def call(_: Any) -> None:
            fn(self)

        self._wrapped.setdefault(fn, []).append(call)
        self._fut.add_done_callback(call, context=context)

    def remove_done_callback(self, fn: Any) -> int:
        return sum(self._fut.remove_done_callback(c) for c in self._wrapped.pop(fn, ()))

    def done(self) -> bool:
        return self._fut.done()

    def cancelled(self) -> bool:
        return self._fut.cancelled()

    def result(self) -> Any:
        return self._fut.result()

    def exception(self) -> Any:
        return self._fut.exception()

    def cancel(self, msg: Any = None) -> bool:
        return self._fut.cancel(msg)

    def set_result(self, value: Any) -> None:
        self._fut.set_result(value)

    def set_exception(self, exc: BaseException) -> None:
        self._fut.set_exception(exc)

    def __await__(self) -> Any:
        if not self.done():
            self._asyncio_future_blocking = True
            yield self
        return self.result()

    __iter__ = __await__


class DuckFuture(_Duck):
    """A duck-typed future (it has a __dict__)."""


class DuckSlots(_Duck):
    """A duck-typed future with no room for taskwatch's record."""

    __slots__ = ()


class DuckTask(DuckFuture):
    """A duck-typed task: it steps its own coroutine and makes itself the loop's current task,
    with no get_name(), cancelling(), _exception or _source_traceback."""

    def __init__(self, coro: Any, *, loop: Any = None, name: Any = None, context: Any = None,
                 eager_start: Any = None) -> None:
        super().__init__(loop)
        self._coro = coro
        self._ctx = context if context is not None else contextvars.copy_context()
        self._waiting: Any = None
        self._must_cancel = False
        loop.call_soon(self._step, context=self._ctx)

    def _step(self) -> None:
        if self.done():
            return
        loop = self._loop
        asyncio.tasks._enter_task(loop, self)
        try:
            if self._must_cancel:
                self._must_cancel = False
                res = self._coro.throw(asyncio.CancelledError())
            else:
                res = self._coro.send(None)
        except StopIteration as stop:
            self._fut.set_result(stop.value)
        except asyncio.CancelledError:
            self._fut.cancel()
        except BaseException as exc:  # noqa: BLE001 - a task keeps its coroutine's error
            self._fut.set_exception(exc)
        else:
            if res is None:  # a bare yield (sleep(0))
                loop.call_soon(self._step, context=self._ctx)
            else:
                res._asyncio_future_blocking = False
                self._waiting = res
                res.add_done_callback(self._wake, context=self._ctx)
        finally:
            asyncio.tasks._leave_task(loop, self)

    def _wake(self, fut: Any) -> None:
        self._waiting = None
        self._step()

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        if self._waiting is not None:
            return bool(self._waiting.cancel(msg))
        self._must_cancel = True
        return True


def _factory_of(cls: Any) -> Any:
    def factory(loop: Any, coro: Any, **kw: Any) -> Any:
        if kw.get("eager_start", 0) is None:
            del kw["eager_start"]
        return cls(coro, loop=loop, **kw)

    factory.__name__ = f"factory_of_{cls.__name__}"
    return factory


# the program's own task factory, per kind ("none": it sets none)
FACTORIES: dict[str, Any] = {
    "none": None,
    "ctask": _factory_of(asyncio.tasks._CTask),
    "pytask": _factory_of(PyTask),
    "slots": _factory_of(SlotTask),
    "dict": _factory_of(DictTask),
    "init": _factory_of(InitTask),
    "pysub": _factory_of(PySubTask),
    "future": _factory_of(FutureTask),
    "duck": _factory_of(DuckTask),
}
if EAGER:
    FACTORIES["eager"] = asyncio.eager_task_factory
    FACTORIES["eager_pytask"] = asyncio.create_eager_task_factory(PyTask)
    FACTORIES["eager_init"] = asyncio.create_eager_task_factory(InitTask)
KINDS = list(FACTORIES)
# kinds that are whole tasks (cancelling(), uncancel(): TaskGroup, timeout() work)
FULL_TASKS = {"none", "ctask", "pytask", "slots", "dict", "init", "pysub", "eager",
              "eager_pytask", "eager_init"}


# -- the program ----------------------------------------------------------------------------------

async def leaf(i: int) -> int:
    await asyncio.sleep(0)
    return i * 10


async def boom(i: int) -> None:
    await asyncio.sleep(0)
    raise Boom(f"boom {i}")


async def sleeper() -> None:
    await asyncio.sleep(30)


async def swallow() -> str:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return "swallowed"
    return "not cancelled"


async def parent_of(n: int) -> int:
    kids = [asyncio.create_task(leaf(i)) for i in range(n)]
    return sum(await asyncio.gather(*kids))


async def awaiter(fut: Any) -> Any:
    return await fut


def _short(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}({value})"
    if isinstance(value, (list, tuple)):
        return [_short(v) for v in value]
    return value


async def program(kind: str) -> list[Any]:
    loop = asyncio.get_running_loop()
    out: list[Any] = []

    async def step(label: str, coro: Any) -> None:
        try:
            out.append([label, _short(await coro)])
        except BaseException as exc:  # noqa: BLE001 - the program's outcome, whatever it is
            out.append([label, "raised", type(exc).__name__, str(exc)])

    me = asyncio.current_task()
    out.append(["main", type(me).__name__ if me is not None else None])

    async def children() -> Any:
        t = asyncio.create_task(parent_of(3), name="parent")
        return [type(t).__name__, await t]

    async def awaited() -> Any:
        fs = FutSub(loop=loop)
        loop.call_soon(fs.set_result, "futsub")
        duck = DuckFuture(loop)
        loop.call_soon(duck.set_result, "duck")
        cf: concurrent.futures.Future[str] = concurrent.futures.Future()
        loop.call_soon(cf.set_result, "concurrent")
        return [await fs, await duck, await asyncio.wrap_future(cf)]

    async def gathered() -> Any:
        d, s, cf = DuckFuture(loop), DuckSlots(loop), concurrent.futures.Future()
        fs = FutSub(loop=loop)
        for fut, value in ((d, 1), (s, 2), (cf, 3), (fs, 4)):
            loop.call_soon(fut.set_result, value)
        return await asyncio.gather(d, s, asyncio.wrap_future(cf), fs, asyncio.create_task(leaf(5)))

    async def failures() -> Any:
        got = []
        try:
            await asyncio.create_task(boom(1))
        except Boom as exc:
            got.append(str(exc))
        bad = DuckFuture(loop)
        loop.call_soon(bad.set_exception, Boom("duck"))
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        cf.set_exception(Boom("concurrent"))
        got.append(await asyncio.gather(asyncio.create_task(boom(2)), asyncio.create_task(leaf(6)),
                                        bad, asyncio.wrap_future(cf), return_exceptions=True))
        return got

    async def cancels() -> Any:
        got = []
        victim = asyncio.create_task(sleeper(), name="victim")
        await asyncio.sleep(0)
        victim.cancel("stop")
        try:
            await victim
        except asyncio.CancelledError:
            got.append(["victim", victim.cancelled()])
        inner: list[Any] = []

        async def outer() -> Any:
            task = asyncio.create_task(sleeper())
            inner.append(task)
            return await task

        o = asyncio.create_task(outer())
        for _ in range(3):
            await asyncio.sleep(0)
        o.cancel("forwarded")
        try:
            await o
        except asyncio.CancelledError:
            got.append(["forwarded", o.cancelled(), inner[0].cancelled()])
        s = asyncio.create_task(swallow())
        await asyncio.sleep(0)
        s.cancel()
        got.append(["swallow", await s])
        for make in (lambda: DuckFuture(loop), lambda: FutSub(loop=loop),
                     lambda: asyncio.wrap_future(concurrent.futures.Future())):
            fut = make()
            w = asyncio.create_task(awaiter(fut))
            for _ in range(3):
                await asyncio.sleep(0)
            w.cancel()
            try:
                await w
            except asyncio.CancelledError:
                got.append(["awaited", type(fut).__name__, fut.cancelled()])
        return got

    async def from_callback() -> Any:
        holder: list[Any] = []
        loop.call_soon(lambda: holder.append(loop.create_task(leaf(7))))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return await holder[0]

    async def group() -> Any:
        try:
            async with asyncio.TaskGroup() as g:
                g.create_task(leaf(1))
                g.create_task(boom(3))
                g.create_task(sleeper())
        except BaseExceptionGroup as eg:  # noqa: F821 - 3.11+
            return [type(e).__name__ for e in eg.exceptions]
        return "no error"

    async def timed_out() -> Any:
        try:
            await asyncio.wait_for(sleeper(), 0.01)
        except TimeoutError:
            return "timeout"
        return "no timeout"

    await step("children", children())
    await step("awaited", awaited())
    await step("gathered", gathered())
    await step("failures", failures())
    await step("cancels", cancels())
    await step("from_callback", from_callback())
    if kind in FULL_TASKS:
        await step("group", group())
        await step("timed_out", timed_out())
    lost = asyncio.create_task(boom(9))  # never retrieved: asyncio reports it when freed
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    out.append(["lost", lost.done()])
    del lost
    return out


def _normalize_name(name: Any) -> Any:
    return "Task-N" if isinstance(name, str) and re.fullmatch(r"Task-\d+", name) else name


def _records() -> list[dict[str, Any]]:
    """Records without what differs between runs (ids, times, asyncio's numbers in names)."""
    gc.collect()
    records = taskwatch.tasks(include_finished=True)
    coro_of = {rec["id"]: rec["coro"] for rec in records}
    out = []
    for rec in records:
        parent = rec["parent"]
        out.append({
            "name": _normalize_name(rec["name"]),
            "coro": rec["coro"],
            "created_at": rec["created_at"],
            "creation_stack": rec["creation_stack"],
            "parent": parent and (parent["coro"], parent["created_at"]),
            "state": rec["state"],
            "closed": rec.get("closed"),
            "exception": rec.get("exception"),
            "cancels": [(c["requested_at"], c["message"], c["by_task"] and c["by_task"]["coro"],
                         c["via_task"] and coro_of.get(c["via_task"], "?"))
                        for c in rec.get("cancels", [])],
        })
    return sorted(out, key=repr)


def run_kind(kind: str, loop_kind: str) -> dict[str, Any]:
    """The program once per mode: without taskwatch, on the C path, on the Python path."""
    factory = FACTORIES[kind]
    result: dict[str, Any] = {"speedups_built": _accel.speedups is not None}
    for mode in ("off", "c", "py"):
        reports: list[str] = []

        def handler(loop: Any, context: dict[str, Any]) -> None:
            reports.append(context.get("message", ""))

        def new_loop() -> Any:
            if loop_kind == "uvloop":
                import uvloop

                loop = uvloop.new_event_loop()
            else:
                loop = asyncio.new_event_loop()
            loop.set_exception_handler(handler)
            if factory is not None:
                loop.set_task_factory(factory)
            return loop

        if mode != "off":
            _guard.reset()
            taskwatch.install(speedups=mode == "c", watchdog=False, log=False)
        try:
            try:
                with asyncio.Runner(loop_factory=new_loop) as runner:
                    out = runner.run(program(kind))
            except Exception as exc:  # the program fails without taskwatch too (3.13.0 + uvloop
                out = ["failed", type(exc).__name__, str(exc)]  # 0.23 + eager_task_factory)
            gc.collect()
            entry: dict[str, Any] = {"out": out, "reports": sorted(reports)}
            if mode != "off":
                entry["records"] = _records()
                stats = taskwatch.report()["stats"]
                entry["stats"] = {k: stats[k] for k in (
                    "tasks_created", "tasks_finished", "tasks_failed", "tasks_cancelled",
                    "internal_errors", "findings_by_kind")}
                entry["findings"] = sorted(f.kind for f in taskwatch.findings())
                entry["error_places"] = sorted(_guard._seen)
        finally:
            if mode != "off":
                taskwatch.uninstall()
        result[mode] = entry
    return result


def _run_child(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-X", "faulthandler", "-m", "tests.test_kinds", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _require_c() -> bool:
    return os.environ.get("TASKWATCH_REQUIRE_SPEEDUPS", "").strip() == "1"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_task_on_both_paths(kind: str, loop_kind: str) -> None:
    done = _run_child(["matrix", kind, loop_kind])
    assert done.returncode == 0, f"the child died ({done.returncode}):\n{done.stderr[-6000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if _require_c():
        assert result["speedups_built"], "taskwatch._core._speedups is not loaded"
    off, c, py = result["off"], result["c"], result["py"]
    # uvloop 0.23 on 3.13+ passes eager_start=None to every task factory, which taskwatch reads as
    # "not set" by design (programs' factories never see it): asyncio's eager_task_factory of
    # 3.12/3.13 rejects the keyword, so this program fails without taskwatch and runs with it.
    normalized = (kind.startswith("eager") and loop_kind == "uvloop" and off["out"][:1] == ["failed"]
                  and "eager_start" in off["out"][-1])
    for mode, entry in (("c", c), ("py", py)):
        assert entry["error_places"] == [], (mode, done.stderr[-6000:])
        assert entry["stats"]["internal_errors"] == 0, mode
        if not normalized:
            assert entry["out"] == off["out"], mode  # the program's results, unchanged
            assert entry["reports"] == off["reports"], mode  # asyncio's own reports, unchanged
    assert c["out"] == py["out"]
    assert c["records"] == py["records"]
    assert c["stats"] == py["stats"]
    assert c["findings"] == py["findings"]
    if c["out"][:1] != ["failed"]:  # (a program that fails without taskwatch fails the same)
        _check_program(kind, c)


def _check_program(kind: str, c: dict[str, Any]) -> None:
    """The program did what it says with taskwatch, and taskwatch saw it."""
    out = dict((row[0], row[1:]) for row in c["out"])
    assert out["children"] == [[out["children"][0][0], 30]]
    assert out["failures"][0][0] == "boom 1"
    assert ["victim", True] in out["cancels"][0]
    assert ["swallow", "swallowed"] in out["cancels"][0]
    # each watched task's record closed with its outcome
    records = c["records"]
    states = {(r["coro"].rsplit(".", 1)[-1], r["state"]) for r in records}
    assert ("leaf", "finished") in states
    assert ("sleeper", "cancelled") in states
    if kind != "duck":  # a duck-typed task has no _exception: its failure reads as finished
        assert ("boom", "failed") in states
    assert c["stats"]["tasks_created"] == len(records)
    # A Future's coroutine runs in a plain Task taskwatch never saw; a task the program's own eager
    # factory builds runs its first step inside that factory, before taskwatch's record is on it:
    # children made in that step have a parent taskwatch does not know (None, not a guess).
    if kind not in ("future", "eager_pytask", "eager_init"):
        assert any(r["coro"].endswith(".leaf") and r["parent"] and
                   r["parent"][0].endswith(".parent_of") for r in records)  # parents of each kind
    assert not [r for r in records if r["state"] == "pending" and r["closed"] is not None]


def direct_checks() -> dict[str, Any]:
    """Call each entry point of both hot paths with objects of every kind, and return what the
    records say (the parent compares the two paths)."""
    out: dict[str, Any] = {"speedups_built": _accel.speedups is not None}
    for mode in ("c", "py"):
        _guard.reset()
        taskwatch.install(speedups=mode == "c", watchdog=False, log=False)
        seen: list[Any] = []
        try:
            loop = asyncio.new_event_loop()
            probe = taskwatch._core._hooks.current().probes[loop]
            from taskwatch._core._record import TaskRecord

            def make_done() -> dict[str, Any]:
                fut = loop.create_future()
                fut.set_result(1)
                failed = FutSub(loop=loop)
                failed.set_exception(Boom("x"))
                failed.exception()  # retrieved
                cancelled = FutSub(loop=loop)
                cancelled.cancel()
                duck = DuckFuture(loop)
                duck.set_result(2)

                async def noop() -> None:
                    pass

                py = PyTask(noop(), loop=loop)
                py.cancel()
                loop.run_until_complete(asyncio.gather(py, return_exceptions=True))
                return {"future": fut, "failed": failed, "cancelled": cancelled, "duck": duck,
                        "pytask": py, "object": object(), "namespace": types.SimpleNamespace(),
                        "none": None, "str": "x", "int": 3}

            objs = make_done()
            for name, obj in objs.items():
                rec = TaskRecord(None, None, None, 0.0)
                try:
                    obj._tw_rec = rec
                except AttributeError:
                    pass
                probe.on_done(obj)  # a done callback handed something odd
                seen.append([name, "on_done", rec.state, _normalize_name(rec.name)])
            # a duck-typed or odd current task while a task is created (parents); from a
            # callback of the running loop (3.14 enters a task only on its running loop)
            made: list[Any] = []

            def as_current(name: str, cur: Any) -> None:
                asyncio.tasks._enter_task(loop, cur)
                try:
                    task = probe.factory(loop, leaf(1))
                    seen.append([name, "parent", task._tw_rec.parent is not None])
                    made.append(task)
                finally:
                    asyncio.tasks._leave_task(loop, cur)

            for name, cur in (("namespace", types.SimpleNamespace()),
                              ("with_record", types.SimpleNamespace(
                                  _tw_rec=TaskRecord(None, None, None, 0.0))),
                              ("not_a_record", types.SimpleNamespace(_tw_rec=42)),
                              ("duck", DuckFuture(loop)), ("object", object())):
                loop.call_soon(as_current, name, cur)
            tick = loop.create_future()
            loop.call_soon(tick.set_result, None)
            loop.run_until_complete(tick)
            loop.run_until_complete(asyncio.gather(*made))
            # factory results of odd kinds (the program's factory), through taskwatch's factory
            for name, make in (("duck", lambda coro: (coro.close(), DuckFuture(loop))[1]),
                               ("slots", lambda coro: (coro.close(), DuckSlots(loop))[1]),
                               ("namespace", lambda coro: (coro.close(), types.SimpleNamespace(
                                   set_name=lambda name: None))[1]),
                               ("nocontext", lambda coro: (coro.close(), _NoContext(loop))[1])):
                loop.set_task_factory(lambda loop, coro, make=make, **kw: make(coro))
                made = loop.create_task(leaf(2))
                seen.append([name, "factory", type(made).__name__,
                             getattr(getattr(made, "_tw_rec", None), "state", None)])
                if hasattr(made, "set_result"):
                    made.set_result(3)
                    tick = loop.create_future()  # not a task: the factory would make a duck
                    loop.call_soon(tick.set_result, None)
                    loop.run_until_complete(tick)
                    seen.append([name, "closed", made._tw_rec.state
                                 if hasattr(made, "_tw_rec") else None])
            loop.set_task_factory(None)
            loop.close()
            gc.collect()
            out[mode] = {"seen": seen, "errors": _guard.count}
        finally:
            taskwatch.uninstall()
    return out


class _NoContext(DuckFuture):
    """A duck-typed future whose add_done_callback() takes no context."""

    def add_done_callback(self, fn: Any) -> None:  # type: ignore[override]
        super().add_done_callback(fn)


def test_entry_points_take_objects_of_any_kind() -> None:
    done = _run_child(["direct"])
    assert done.returncode == 0, f"the child died ({done.returncode}):\n{done.stderr[-6000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    c, py = result["c"], result["py"]
    assert c["errors"] == 0 and py["errors"] == 0, done.stderr[-6000:]
    assert c["seen"] == py["seen"]
    seen = {(row[0], row[1]): row[2:] for row in c["seen"]}
    assert seen[("future", "on_done")] == ["finished", None]
    assert seen[("failed", "on_done")] == ["failed", None]
    assert seen[("cancelled", "on_done")] == ["cancelled", None]
    assert seen[("pytask", "on_done")][0] == "cancelled"
    assert seen[("duck", "on_done")] == ["finished", None]
    assert seen[("with_record", "parent")] == [True]
    assert seen[("not_a_record", "parent")] == [False]
    assert seen[("duck", "closed")] == ["finished"]
    assert seen[("nocontext", "closed")] == ["finished"]


def test_free_threaded_build_keeps_the_accelerator_unloaded() -> None:
    """On a free-threaded build, importing the C module would turn the GIL back on."""
    code = ("import sys, sysconfig\n"
            "real = sysconfig.get_config_var\n"
            "sysconfig.get_config_var = lambda name: 1 if name == 'Py_GIL_DISABLED' else real(name)\n"
            "if not hasattr(sys, '_is_gil_enabled'):\n"
            "    sys._is_gil_enabled = lambda: False\n"
            "import taskwatch, taskwatch._core._accel as a\n"
            "assert a.speedups is None, a.speedups\n"
            "assert 'taskwatch._core._speedups' not in sys.modules\n"
            "taskwatch.install(log=False, watchdog=False)\n"
            "import asyncio\n"
            "async def main():\n"
            "    return await asyncio.create_task(asyncio.sleep(0, 'ok'))\n"
            "assert asyncio.run(main()) == 'ok'\n"
            "assert taskwatch.report()['stats']['tasks_created'] >= 2\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# -- threads ----------------------------------------------------------------------------------------

def test_cancels_across_threads_name_their_own_tasks(watch: Any) -> None:
    """Four loops in four threads cancel each other's tasks at once (call_soon_threadsafe): the
    task a forwarded cancel came through is always the one of the same loop."""
    watch(watchdog=False)
    loops_n, pairs = 4, 40
    loops: list[Any] = [None] * loops_n
    outers: list[list[Any]] = [[] for _ in range(loops_n)]
    ready = [threading.Event() for _ in range(loops_n)]
    go = threading.Event()
    errors: list[BaseException] = []

    def run_loop(i: int) -> None:
        async def outer() -> None:
            await asyncio.create_task(sleeper())

        async def main() -> None:
            for _ in range(pairs):
                outers[i].append(asyncio.create_task(outer()))
            for _ in range(3):
                await asyncio.sleep(0)
            ready[i].set()
            await asyncio.gather(*outers[i], return_exceptions=True)

        try:
            loop = asyncio.new_event_loop()
            loops[i] = loop
            loop.run_until_complete(main())
            loop.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def canceller(i: int) -> None:
        go.wait()
        target = (i + 1) % loops_n
        for task in outers[target]:
            loops[target].call_soon_threadsafe(task.cancel)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        runners = [threading.Thread(target=run_loop, args=(i,)) for i in range(loops_n)]
        cancellers = [threading.Thread(target=canceller, args=(i,)) for i in range(loops_n)]
        for t in runners + cancellers:
            t.start()
        for event in ready:
            assert event.wait(30)
        go.set()
        for t in runners + cancellers:
            t.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    gc.collect()
    records = taskwatch.tasks(include_finished=True)
    assert taskwatch.report()["stats"]["internal_errors"] == 0
    inner = [r for r in records if r["coro"].endswith("sleeper")]
    outer = [r for r in records if r["coro"].endswith("outer")]
    assert len(inner) == len(outer) == loops_n * pairs
    for rec in outer:
        assert rec["state"] == "cancelled"
        assert [c["via_task"] for c in rec["cancels"]] == [None], rec
    for rec in inner:
        assert rec["state"] == "cancelled"
        assert [c["via_task"] for c in rec["cancels"]] == [rec["parent"]["id"]], rec


if __name__ == "__main__":
    if sys.argv[1] == "matrix":
        print(json.dumps(run_kind(sys.argv[2], sys.argv[3])))
    else:
        print(json.dumps(direct_checks()))
