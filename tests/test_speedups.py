"""The C accelerator (taskwatch/_speedups.c) against the pure-Python hot path it replaces.

The Python closures in ``_hotpath`` are the reference: with ``speedups=False`` a probe runs them, so
the same workload under both paths must leave identical records. The suite as a whole also runs with
the accelerator not loaded at all (``TASKWATCH_SPEEDUPS=0``), as on a machine without a compiler.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import taskwatch
from taskwatch import _accel, _task

from .conftest import run

ROOT = Path(__file__).resolve().parents[1]


class Boom(Exception):
    pass


async def leaf(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def fails() -> None:
    await asyncio.sleep(0)
    raise Boom("leaf failed")


async def sleeper() -> None:
    await asyncio.sleep(10)


def spawn_from_callback(bucket: list[asyncio.Task[Any]]) -> None:
    bucket.append(asyncio.get_running_loop().create_task(leaf(99)))  # parent: the scheduling task


async def middle(bucket: list[asyncio.Task[Any]]) -> None:
    asyncio.get_running_loop().call_soon(spawn_from_callback, bucket)
    await asyncio.gather(*(asyncio.create_task(leaf(i)) for i in range(3)))
    await asyncio.sleep(0)


async def workload() -> None:
    bucket: list[asyncio.Task[Any]] = []
    await asyncio.create_task(middle(bucket), name="middle")
    await asyncio.gather(*bucket)
    failing = asyncio.create_task(fails())
    with pytest.raises(Boom):
        await failing
    victim = asyncio.create_task(sleeper(), name="victim")
    await asyncio.sleep(0)
    victim.cancel("enough")
    with pytest.raises(asyncio.CancelledError):
        await victim
    async with asyncio.TaskGroup() as group:
        for i in range(2):
            group.create_task(leaf(i))


def _normalized() -> list[dict[str, Any]]:
    """Records without what differs between runs (ids, times, unnamed tasks' numbers)."""
    gc.collect()  # a failed task held by its own traceback's frames is closed when freed
    out = []
    for rec in taskwatch.tasks(include_finished=True):
        parent = rec["parent"]
        out.append({
            "name": rec["name"] if not (rec["name"] or "").startswith("Task-") else "Task-N",
            "coro": rec["coro"],
            "created_at": rec["created_at"],
            "creation_stack": rec["creation_stack"],
            "parent": parent and (parent["coro"], parent["created_at"]),
            "state": rec["state"],
            "exception": rec.get("exception"),
            "cancels": [(c["requested_at"], c["message"], c["by_task"] and c["by_task"]["coro"])
                        for c in rec.get("cancels", [])],
        })
    return sorted(out, key=repr)


def _records(watch: Any, loop_kind: str, speedups: bool) -> list[dict[str, Any]]:
    watch(speedups=speedups, watchdog=False)
    run(workload(), loop_kind)
    records = _normalized()
    stats = taskwatch.report()["stats"]
    taskwatch.uninstall()
    assert stats["internal_errors"] == 0
    return records


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_c_and_python_paths_leave_the_same_records(watch: Any, loop_kind: str) -> None:
    # one call site for both runs: the test's own line is in the creation stacks
    with_c, without = (_records(watch, loop_kind, speedups) for speedups in (True, False))
    assert with_c == without
    by_coro = {r["coro"].rsplit(".", 1)[-1]: r for r in with_c}
    assert by_coro["leaf"]["parent"] is not None
    assert by_coro["fails"]["exception"]["type"].endswith("Boom")
    assert by_coro["sleeper"]["cancels"][0][1] == "enough"
    # the task made in a call_soon callback has the task that scheduled the callback as parent
    callback_child = [r for r in with_c if r["created_at"] and
                      r["created_at"]["function"] == "spawn_from_callback"]
    assert callback_child and callback_child[0]["parent"][0].endswith("middle")


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_c_path_is_what_runs_by_default(watch: Any, loop_kind: str) -> None:
    watch(watchdog=False)
    seen: dict[str, Any] = {}

    async def main() -> None:
        task = asyncio.create_task(leaf(1))
        seen["class"] = type(task)
        seen["factory"] = type(asyncio.get_running_loop().get_task_factory())
        await task

    run(main(), loop_kind)
    assert seen["class"] is _task.CTask
    assert seen["class"].__name__ == "Task"
    assert seen["factory"] is type(None)  # the program still reads back its own (no) factory


def test_accelerator_built_where_required() -> None:
    """CI sets TASKWATCH_REQUIRE_SPEEDUPS: a C build that silently failed must not pass."""
    if not os.environ.get("TASKWATCH_REQUIRE_SPEEDUPS"):
        pytest.skip("TASKWATCH_REQUIRE_SPEEDUPS is not set")
    assert _accel.speedups is not None, "taskwatch._speedups did not build or import"


@pytest.mark.skipif(os.environ.get("TASKWATCH_SPEEDUPS") == "0",
                    reason="already running without the accelerator")
def test_core_suite_without_the_accelerator() -> None:
    """The pure-Python path, as on a machine without a compiler: the core suites pass unchanged."""
    env = dict(os.environ, TASKWATCH_SPEEDUPS="0")
    env.pop("TASKWATCH_REQUIRE_SPEEDUPS", None)
    probe = subprocess.run([sys.executable, "-c",
                            "import taskwatch._accel as a, taskwatch._record as r;"
                            "assert a.speedups is None and r.TaskRecord is r._TaskRecord"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    suites = ["tests/test_record.py", "tests/test_transparency.py", "tests/test_findings.py",
              "tests/test_hooks.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *suites],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


async def _traced_workload(tracer: Any) -> None:
    from opentelemetry import trace

    async def quick() -> None:
        await asyncio.sleep(0)

    async def slow() -> None:
        await asyncio.sleep(0.3)

    async def broken() -> None:
        raise Boom("traced failure")

    async def victim() -> None:
        await asyncio.sleep(10)

    async def annotated(item: int) -> None:  # sets what only its own span (spans="all") keeps
        span = trace.get_current_span()
        span.set_attribute("app.item", item)
        if item == 2:
            span.add_event("app.checkpoint", {"item": item})

    for _ in range(5):  # outside any span: not exported
        await asyncio.create_task(quick())
    for item in range(4):
        await asyncio.create_task(annotated(item))
    await asyncio.create_task(slow())  # longer than span_threshold: exported
    failing = asyncio.create_task(broken())
    with pytest.raises(Boom):
        await failing
    cancelled = asyncio.create_task(victim())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    with tracer.start_as_current_span("request"):  # under a recording span: exported
        await asyncio.gather(*(asyncio.create_task(quick()) for _ in range(2)))


_IDS = ("taskwatch.task.id", "taskwatch.parent_task.id")  # a process-wide count: differ per run
_DEFAULT_NAME = re.compile(r"^Task-\d+$")  # asyncio's default names: a process-wide count too


def _exported(watch: Any, loop_kind: str, speedups: bool,
              spans: str = "interesting") -> list[tuple[Any, ...]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import taskwatch.otel as tw_otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tw_otel.set_providers(provider, None)  # no meter provider: the end filter decides alone
    try:
        watch(otel=True, spans=spans, span_threshold=0.2, watchdog=False, speedups=speedups)
        run(_traced_workload(provider.get_tracer("test")), loop_kind)
        gc.collect()
        assert taskwatch.report()["stats"]["internal_errors"] == 0
        taskwatch.uninstall()
    finally:
        tw_otel.set_providers(None, None)
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s.name for s in spans}
    out = [(s.name, by_id.get(s.parent.span_id) if s.parent else None, s.status.status_code.name,
            [e.name for e in s.events], s.kind.name, s.context.trace_flags,
            sorted((k, _DEFAULT_NAME.sub("Task-N", v) if isinstance(v, str) else v)
                   for k, v in s.attributes.items() if k not in _IDS)) for s in spans]
    provider.shutdown()
    return sorted(out, key=repr)


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_c_span_gate_exports_what_the_python_hooks_export(watch: Any, loop_kind: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    with_c, without = (_exported(watch, loop_kind, speedups) for speedups in (True, False))
    assert with_c == without
    names = [name.rsplit(".", 1)[-1] for name, *_ in with_c]
    assert names.count("quick") == 2  # the two under "request", not the five outside it
    assert {"slow", "broken", "victim", "request"} <= set(names)


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_c_span_start_exports_what_the_python_hook_exports(watch: Any, loop_kind: str,
                                                           monkeypatch: Any) -> None:
    """spans="all": C starts the spans of the common case, and ends those of tasks that finished
    cleanly with nothing set on their span; the exported spans are the same."""
    pytest.importorskip("opentelemetry.sdk")
    from taskwatch import _otel_spans

    calls, ends = [], []
    hook, end_hook = _otel_spans.TaskSpans.on_create_all, _otel_spans.TaskSpans.on_end

    def counted(self: Any, rec: Any, context: Any) -> None:
        calls.append(rec)
        hook(self, rec, context)

    def counted_end(self: Any, rec: Any, task: Any) -> None:
        ends.append(rec)
        end_hook(self, rec, task)

    monkeypatch.setattr(_otel_spans.TaskSpans, "on_create_all", counted)
    monkeypatch.setattr(_otel_spans.TaskSpans, "on_end", counted_end)
    with_c = _exported(watch, loop_kind, True, "all")
    in_python, ended_in_python = len(calls), len(ends)
    without = _exported(watch, loop_kind, False, "all")
    assert with_c == without
    assert len(with_c) >= 16
    assert in_python < len(calls) - in_python  # C started most of them
    # C ended the clean repeats (4 of the 5 "quick", 1 of the 2 under "request"), never a task
    # whose span the program annotated, failed or was cancelled
    assert len(ends) - 2 * ended_in_python >= 5
    annotated = [attrs for name, *_, attrs in with_c if name.endswith("annotated")]
    assert sorted(dict(a)["app.item"] for a in annotated) == [0, 1, 2, 3]


def _run_with_all_spans(watch: Any, provider: Any, main: Any, loop_kind: str) -> None:
    """Run ``main`` with taskwatch exporting every task's span to ``provider``."""
    import taskwatch.otel as tw_otel

    tw_otel.set_providers(provider, None)
    try:
        watch(otel=True, spans="all", watchdog=False)
        run(main, loop_kind)
        assert taskwatch.report()["stats"]["internal_errors"] == 0
        taskwatch.uninstall()
    finally:
        tw_otel.set_providers(None, None)


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_c_span_end_hands_every_processor_a_complete_readable_span(watch: Any,
                                                                   loop_kind: str) -> None:
    """The C end fills the SDK's ReadableSpan itself and calls each processor of the provider's
    SynchronousMultiSpanProcessor: the spans must be the SDK's, field by field, in every
    processor (one added after install too)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from taskwatch import _otel_spans

    class Counting(SpanProcessor):  # the SDK's no-op on_start: C may start the spans
        """Added after install: the C end must read the provider's current processors."""

        def __init__(self) -> None:
            self.ended: list[Any] = []

        def on_end(self, span: Any) -> None:
            self.ended.append(span)

    exporter, late = InMemorySpanExporter(), Counting()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    contexts: list[Any] = []
    ends: list[Any] = []
    end_hook = _otel_spans.TaskSpans.on_end

    async def quick() -> None:
        from opentelemetry import trace

        contexts.append(trace.get_current_span().get_span_context())

    async def main() -> None:
        provider.add_span_processor(late)
        for _ in range(20):
            await asyncio.create_task(quick())

    def counted_end(self: Any, rec: Any, task: Any) -> None:
        ends.append(rec)
        end_hook(self, rec, task)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_otel_spans.TaskSpans, "on_end", counted_end)
        _run_with_all_spans(watch, provider, main(), loop_kind)
    spans = [s for s in exporter.get_finished_spans() if s.name.endswith("quick")]
    assert len(spans) == 20 and len(ends) < 10  # C ended most of them
    assert [s.context.span_id for s in late.ended if s.name.endswith("quick")] == [
        s.context.span_id for s in spans]
    (main_span,) = [s for s in exporter.get_finished_spans() if s.name.endswith("main")]
    sdk_made = ReadableSpan(name="x", context=spans[0].context, resource=provider.resource)
    for span in spans:
        assert type(span) is ReadableSpan
        assert list(vars(span)) == list(vars(sdk_made))  # the same fields, in the same order
        assert span.resource is provider.resource
        assert span.instrumentation_scope.name == "taskwatch"
        assert span.kind.name == "INTERNAL" and span.status.status_code.name == "UNSET"
        assert span.events == () and span.links == () and span.parent == main_span.context
        assert 0 < span.start_time <= span.end_time
        assert span.attributes["code.function.name"].endswith("quick")
    assert [c.span_id for c in contexts] == [s.context.span_id for s in spans]
    # the paths under test were the ones taken
    assert _otel_spans._readable_layout(ReadableSpan) is not None
    assert _otel_spans._direct_on_end(provider._active_span_processor) is not None
    provider.shutdown()


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_c_span_end_honours_patches_made_after_install(watch: Any, loop_kind: str) -> None:
    """A wrapper put on ReadableSpan.__init__, or on the processor's on_end, after install sees
    every span the C end makes from then on."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    multi = provider._active_span_processor
    built: list[str] = []
    handed: list[str] = []
    init, on_end = ReadableSpan.__init__, multi.on_end

    def wrapped_init(self: Any, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        built.append(self._name)

    def wrapped_on_end(span: Any) -> None:
        handed.append(span.name)
        on_end(span)

    async def quick() -> None:
        pass

    async def main() -> None:
        for _ in range(5):  # C ends these
            await asyncio.create_task(quick())
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ReadableSpan, "__init__", wrapped_init)
            mp.setattr(multi, "on_end", wrapped_on_end)
            for _ in range(10):
                await asyncio.create_task(quick())

    _run_with_all_spans(watch, provider, main(), loop_kind)
    assert len([n for n in built if n.endswith("quick")]) == 10
    assert len([n for n in handed if n.endswith("quick")]) == 10
    assert len([s for s in exporter.get_finished_spans() if s.name.endswith("quick")]) == 15
    provider.shutdown()


def test_readable_layout_only_for_an_init_that_just_stores() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import ReadableSpan

    from taskwatch._otel_spans import _READABLE_ARGS, _readable_layout

    found = _readable_layout(ReadableSpan)
    assert found is not None
    init, layout = found
    assert init is vars(ReadableSpan)["__init__"]
    assert sorted(i for _, i in layout) == list(range(len(_READABLE_ARGS)))

    class Copies(ReadableSpan):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self._attributes = dict(self._attributes or {})

    class Registers(ReadableSpan):
        registry: list[Any] = []

        def __init__(self, name: str, **kw: Any) -> None:
            self._name = name
            self.registry.append(self)

    registry: list[Any] = []

    class Extends(ReadableSpan):  # stores everything, then does more
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            registry.append(self)

    class Defaults(ReadableSpan):  # stores everything, but replaces empty links
        def __init__(self, name: Any, context: Any = None, parent: Any = None,
                     resource: Any = None, attributes: Any = None, events: Any = (),
                     links: Any = (), kind: Any = None, instrumentation_info: Any = None,
                     status: Any = None, start_time: Any = None, end_time: Any = None,
                     instrumentation_scope: Any = None) -> None:
            (self._name, self._context, self._parent, self._resource, self._attributes,
             self._events, self._links, self._kind, self._instrumentation_info, self._status,
             self._start_time, self._end_time, self._instrumentation_scope) = (
                name, context, parent, resource, attributes, events, links or [], kind,
                instrumentation_info, status, start_time, end_time, instrumentation_scope)

    class Inherits(ReadableSpan):  # no __init__ of its own: not the function that was checked
        pass

    for cls in (Copies, Registers, Extends, Defaults, Inherits):
        assert _readable_layout(cls) is None, cls.__name__


async def _named_leaf(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def _failing_leaf() -> None:
    raise Boom("leaf failed")


async def _churn(n: int, name: str) -> None:
    """n tasks through the factory: named, finished, failed and retrieved, cancelled."""
    for _ in range(n // 4):
        ok = asyncio.create_task(_named_leaf(1), name=name)
        bad = asyncio.create_task(_failing_leaf())
        victim = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        victim.cancel()
        await asyncio.gather(ok, bad, victim, return_exceptions=True)
        await asyncio.create_task(_named_leaf(2))


def test_hot_path_gives_back_every_reference_it_takes(watch: Any, loop_kind: str) -> None:
    """A reference-leak check of the hot path, C and Python (factory, record, done callback,
    finalizer, failure and cancel paths): once the caches and the finished-records ring are full, 4,000 more
    tasks leave the reference counts of what every task touches (the loop, the coroutine's code,
    the name, the main task) and the traced memory where they were. (A release build has no
    sys.gettotalrefcount: the objects are counted one by one.)"""
    import tracemalloc

    watch(watchdog=False, history=200)
    name = "".join(["churn", "-task"])  # one string object, not an interned constant
    code = _named_leaf.__code__

    async def main() -> tuple[list[int], list[int], int]:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        await _churn(2000, name)  # warm: caches filled, the ring full
        gc.collect()
        before = [sys.getrefcount(o) for o in (loop, code, name, me)]
        tracemalloc.start()
        try:
            await _churn(1000, name)  # tracemalloc's own first allocations settle
            gc.collect()
            start = tracemalloc.get_traced_memory()[0]
            await _churn(4000, name)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        after = [sys.getrefcount(o) for o in (loop, code, name, me)]
        return before, after, grown

    before, after, grown = run(main(), loop_kind)
    assert after == before
    assert grown < 16 * 1024, grown  # a leak of one small object per task would be 4,000 of them
    assert taskwatch.report()["stats"]["internal_errors"] == 0
