"""The C accelerator (taskwatch/_core/_speedups_src/) against the pure-Python hot path it replaces.

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
from taskwatch._core import _accel, _task

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
    assert _accel.speedups is not None, "taskwatch._core._speedups did not build or import"


@pytest.mark.skipif(os.environ.get("TASKWATCH_SPEEDUPS") == "0",
                    reason="already running without the accelerator")
def test_core_suite_without_the_accelerator() -> None:
    """The pure-Python path, as on a machine without a compiler: the core suites pass unchanged."""
    env = dict(os.environ, TASKWATCH_SPEEDUPS="0")
    env.pop("TASKWATCH_REQUIRE_SPEEDUPS", None)
    probe = subprocess.run([sys.executable, "-c",
                            "import taskwatch._core._accel as a, taskwatch._core._record as r;"
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
def test_c_and_python_paths_export_the_same_spans_for_every_task(watch: Any,
                                                                 loop_kind: str) -> None:
    """spans="all": the C hot path records, the Python spans code starts and ends every span
    (C has no span code): the exported spans are the same with and without the accelerator."""
    pytest.importorskip("opentelemetry.sdk")
    with_c = _exported(watch, loop_kind, True, "all")
    without = _exported(watch, loop_kind, False, "all")
    assert with_c == without
    assert len(with_c) >= 16
    annotated = [attrs for name, *_, attrs in with_c if name.endswith("annotated")]
    assert sorted(dict(a)["app.item"] for a in annotated) == [0, 1, 2, 3]


def _accelerator_sources() -> dict[str, str]:
    """The C accelerator's sources, .c and .h (taskwatch/_core/_speedups_src/): file name -> text."""
    folder = Path(taskwatch.__file__).parent / "_core" / "_speedups_src"
    sources = {path.name: path.read_text() for path in sorted(folder.glob("*.[ch]"))}
    assert {"speedups.h", "interp.h", "recorder.c"} <= set(sources), folder
    return sources


def test_the_accelerator_has_no_span_code() -> None:
    """C keeps to the per-task record: OpenTelemetry is reached only through the Python spans
    code, on the API. The gate reads what TaskSpans.c_gate() hands it, nothing of OpenTelemetry's
    own."""
    for name, source in _accelerator_sources().items():
        for word in ("ReadableSpan", "span_processor", "SpanContext", "opentelemetry", "_SPAN_KEY",
                     "TracerProvider", "start_span"):
            assert word not in source, (name, word)


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
            grown = []
            for _ in range(2):
                gc.collect()
                start = tracemalloc.get_traced_memory()[0]
                await _churn(4000, name)
                gc.collect()
                grown.append(tracemalloc.get_traced_memory()[0] - start)
        finally:
            tracemalloc.stop()
        after = [sys.getrefcount(o) for o in (loop, code, name, me)]
        return before, after, grown

    before, after, grown = run(main(), loop_kind)
    assert after == before
    # A leak of the smallest object (16 bytes) per task is 64 KB in each round of 4,000 tasks;
    # what does not grow with the tasks (a loop queue resized on a loaded machine, 17 KB once)
    # is not in both rounds.
    assert min(grown) < 32 * 1024, grown
    assert taskwatch.report()["stats"]["internal_errors"] == 0


def test_only_interp_h_uses_interpreter_internals() -> None:
    """CPython's interpreter internals (Py_BUILD_CORE, the internal/pycore_*.h headers, the
    interpreter's frames) are used in one header of the accelerator, interp.h, where a new CPython
    version is ported: every other file walks frames through interp.h's functions."""
    internals = re.compile(r"Py_BUILD_CORE|#\s*include\s*[<\"](?:internal/|pycore_)"
                           r"|_PyInterpreterFrame|_PyFrame_|\bTW_TOP_FRAME\b|\bTW_FRAME_CODE\b"
                           r"|\bcframe\b|\bcurrent_frame\b")
    used = {name: sorted(set(internals.findall(source)))
            for name, source in _accelerator_sources().items()}
    assert {name for name, found in used.items() if found} == {"interp.h"}, used
