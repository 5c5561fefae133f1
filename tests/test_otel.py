"""OpenTelemetry export: the span tree, attributes, failures, cancellations, findings, blocks, metrics.

Spans go through the SDK's in-memory exporter behind a SimpleSpanProcessor (exported when they end,
no timing involved), on asyncio and on uvloop. Every test also checks that taskwatch hit no internal
error and that no exported span lacks its parent ("no holes").
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

import taskwatch  # noqa: E402
import taskwatch.otel as tw_otel  # noqa: E402
from taskwatch._core._flags import PRECISE, RELEASED  # noqa: E402

from .conftest import here, run  # noqa: E402


class Pipeline:
    """A TracerProvider + MeterProvider of the test's own, given to taskwatch explicitly."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.provider.get_tracer("test-app")

    def spans(self):
        return list(self.exporter.get_finished_spans())

    def named(self, suffix):
        return [s for s in self.spans() if s.name.endswith(suffix)]

    def one(self, suffix):
        found = self.named(suffix)
        assert len(found) == 1, f"{len(found)} spans named *{suffix}: {[s.name for s in self.spans()]}"
        return found[0]

    def metrics(self):
        out = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                if sm.scope.name != "taskwatch":
                    continue
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out


def assert_no_holes(spans):
    ids = {s.context.span_id for s in spans}
    for s in spans:
        if s.parent is not None:
            assert s.parent.span_id in ids, f"{s.name}'s parent was never exported"


def parent_of(span, spans):
    if span.parent is None:
        return None
    for s in spans:
        if s.context.span_id == span.parent.span_id:
            return s
    return None


@pytest.fixture
def otel(watch):
    pipe = Pipeline()
    tw_otel.set_providers(pipe.provider, pipe.meter_provider)

    def install(**options):
        options.setdefault("otel", True)
        options.setdefault("watchdog", False)
        return watch(**options)

    pipe.install = install
    yield pipe
    stats = taskwatch.report()["stats"] if taskwatch.is_installed() else None
    taskwatch.uninstall()
    tw_otel.set_providers(None, None)
    if stats is not None:
        assert stats["internal_errors"] == 0
    assert_no_holes(pipe.spans())
    pipe.provider.shutdown()
    pipe.meter_provider.shutdown()


# -- the span tree --------------------------------------------------------------------------------

def test_task_span_nests_under_the_request_span_and_outlives_it(otel, loop_kind):
    otel.install()  # spans="interesting": tasks created under a recording span are exported
    tracer = otel.tracer
    seen = {}

    async def audit(order):
        await asyncio.sleep(0.05)  # still running after the request's span ended
        with tracer.start_as_current_span("audit.write") as inner:
            seen["inner_parent"] = inner.parent
        seen["current"] = trace.get_current_span().get_span_context()

    async def quick():
        return 1

    async def main():
        await asyncio.create_task(quick())  # no span current: not exported
        with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as request:
            seen["request"] = request.get_span_context()
            task = asyncio.create_task(audit(42))
        await task

    run(main(), loop_kind)
    spans = otel.spans()
    request = next(s for s in spans if s.name == "GET /orders")
    audit_span = otel.one(".audit")
    inner = next(s for s in spans if s.name == "audit.write")
    assert audit_span.kind is SpanKind.INTERNAL
    assert audit_span.parent.span_id == request.context.span_id
    assert audit_span.context.trace_id == request.context.trace_id
    assert inner.parent.span_id == audit_span.context.span_id  # the user's span nests under the task
    assert seen["current"].span_id == audit_span.context.span_id  # current inside the task
    assert audit_span.start_time >= request.start_time
    assert audit_span.end_time > request.end_time  # it outlived the request
    assert audit_span.attributes["taskwatch.task.outcome"] == "finished"
    assert not otel.named(".quick")
    assert audit_span.status.status_code is StatusCode.UNSET


def test_all_tasks_attributes_and_tree(otel, loop_kind):
    otel.install(spans="all")
    lines = {}

    async def worker(n):
        await asyncio.sleep(0)
        return n

    async def main():
        lines["create"] = here() + 1
        task = asyncio.create_task(worker(1), name="worker-1")
        lines["main_task"] = id(asyncio.current_task())
        return await task

    assert run(main(), loop_kind) == 1
    spans = otel.spans()
    main_span = otel.one(".main")
    span = otel.one(".worker")
    assert span.name == f"{__name__}.test_all_tasks_attributes_and_tree.<locals>.worker"
    a = span.attributes
    assert a["code.function.name"] == span.name
    assert a["code.file.path"] == __file__
    assert a["code.line.number"] == worker.__code__.co_firstlineno
    assert a["taskwatch.creation.file.path"] == __file__
    assert a["taskwatch.creation.line.number"] == lines["create"]
    assert a["taskwatch.creation.function.name"].endswith("main")
    assert a["taskwatch.task.name"] == "worker-1"
    assert a["taskwatch.task.outcome"] == "finished"
    assert a["taskwatch.parent_task.id"] == main_span.attributes["taskwatch.task.id"]
    assert a["taskwatch.parent_task.coroutine"] == main_span.name
    assert isinstance(a["taskwatch.task.id"], int)
    assert span.parent.span_id == main_span.context.span_id  # main's span is current in main
    assert main_span.parent is None
    assert span.start_time >= main_span.start_time and span.end_time <= main_span.end_time
    assert span.end_time >= span.start_time
    assert span.instrumentation_scope.name == "taskwatch"
    assert not [s for s in spans if "shutdown_asyncgens" in s.name]  # the loop's own tasks


def test_span_tree_without_lineage(otel, loop_kind):
    """lineage=False takes taskwatch's variable out of task contexts, not the spans': each task
    still gets a context of its own where its span is current, and children nest under it."""
    otel.install(spans="all", lineage=False)

    async def worker():
        await asyncio.sleep(0)
        return [var.name for var in contextvars.copy_context()]

    async def main():
        return await asyncio.create_task(worker())

    assert "taskwatch_task" not in run(main(), loop_kind)
    main_span, span = otel.one(".main"), otel.one(".worker")
    assert span.parent.span_id == main_span.context.span_id
    assert span.attributes["taskwatch.parent_task.id"] == main_span.attributes["taskwatch.task.id"]


def test_failure_status_and_exception_event(otel, loop_kind):
    otel.install(spans="all")
    lines = {}

    async def charge():
        await asyncio.sleep(0)
        lines["raise"] = here() + 1
        raise ValueError("card declined")

    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_task(charge())

    run(main(), loop_kind)
    span = otel.one(".charge")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "card declined"
    assert span.attributes["error.type"] == "ValueError"
    assert span.attributes["taskwatch.task.outcome"] == "failed"
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "card declined"
    trace_text = event.attributes["exception.stacktrace"]
    assert f'line {lines["raise"]}, in ' in trace_text and 'raise ValueError("card declined")' in trace_text
    assert trace_text.rstrip().endswith("ValueError: card declined")
    assert span.start_time <= event.timestamp <= span.end_time


def test_cancellation_event_names_the_canceller(otel, loop_kind):
    otel.install()  # interesting: a cancelled task is exported
    lines = {}

    async def slow():
        await asyncio.sleep(10)

    async def supervisor(task):
        await asyncio.sleep(0.01)
        lines["cancel"] = here() + 1
        task.cancel("shutting down")

    async def main():
        task = asyncio.create_task(slow())
        await asyncio.create_task(supervisor(task), name="supervisor")
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main(), loop_kind)
    span = otel.one(".slow")
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["taskwatch.task.outcome"] == "cancelled"
    (event,) = [e for e in span.events if e.name == "taskwatch.cancel"]
    a = event.attributes
    assert a["taskwatch.cancel.message"] == "shutting down"
    assert a["taskwatch.cancel.line.number"] == lines["cancel"]
    assert a["taskwatch.cancel.file.path"] == __file__
    assert a["taskwatch.cancel.function.name"].endswith("supervisor")
    assert a["taskwatch.cancel.by_task.name"] == "supervisor"
    assert a["taskwatch.cancel.by_task.coroutine"].endswith("supervisor")
    assert span.start_time <= event.timestamp <= span.end_time


def test_interesting_exports_only_what_matters_without_holes(otel, loop_kind):
    otel.install(span_threshold=0.2)

    async def ok():
        await asyncio.sleep(0)

    async def fails():
        await asyncio.sleep(0)
        raise KeyError("gone")

    async def long_running():
        await asyncio.sleep(0.3)

    async def middle():  # not interesting itself, but its child fails
        await asyncio.gather(ok(), asyncio.create_task(fails()), return_exceptions=True)

    async def main():
        await asyncio.gather(ok(), ok(), long_running(), asyncio.create_task(middle()))

    run(main(), loop_kind)
    spans = otel.spans()
    names = sorted(s.name.rpartition(".")[2] for s in spans)
    # ok() tasks are not exported; nor is the loop's main task, though it ran 0.3 s: as a trace
    # of its own it would be one span the length of the program (a server's whole life)
    assert names == ["fails", "long_running", "middle"]
    fails_span, middle_span = otel.one(".fails"), otel.one(".middle")
    assert fails_span.parent.span_id == middle_span.context.span_id
    for top in (middle_span, otel.one(".long_running")):  # the main task's children: roots
        assert top.parent is None
        assert top.attributes["taskwatch.parent_task.coroutine"].endswith(".main")
    assert middle_span.attributes["taskwatch.task.outcome"] == "finished"
    assert_no_holes(spans)
    assert taskwatch.report()["stats"]["spans_exported"] == len(spans)


# -- span ends: a done callback only where a span exists at creation -------------------------------

@pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])
def test_interesting_end_is_when_the_task_is_seen_done(otel, loop_kind, speedups):
    """spans="interesting": a task created under no span has no done callback of taskwatch's; its
    end is the first moment it is seen done (gather reading its error, its awaiter waking, a
    done() call), not when it is freed."""
    otel.install(span_threshold=5.0, speedups=speedups)
    kept = []

    async def fails():
        await asyncio.sleep(0)
        raise KeyError("gone")

    async def main():
        gathered = asyncio.create_task(fails(), name="gathered")
        polled = asyncio.create_task(fails(), name="polled")
        await asyncio.gather(gathered, return_exceptions=True)
        awaited = asyncio.create_task(fails(), name="awaited")
        kept.extend((gathered, awaited, polled))
        with pytest.raises(KeyError):
            await awaited  # pending when awaited: its awaiter's wake-up reads its result
        await asyncio.sleep(0.6)  # all three still referenced, all done long ago
        assert sorted(s.attributes["taskwatch.task.name"] for s in otel.named(".fails")) == [
            "awaited", "gathered"]
        assert polled.done()
        assert len(otel.named(".fails")) == 3  # closed by that done() call, not by its release
        assert isinstance(polled.exception(), KeyError)

    run(main(), loop_kind)
    spans = {s.attributes["taskwatch.task.name"]: s for s in otel.named(".fails")}
    for name in ("gathered", "awaited"):
        assert spans[name].end_time - spans[name].start_time < 0.3e9, name
        assert spans[name].status.status_code is StatusCode.ERROR
    assert spans["polled"].end_time - spans["polled"].start_time >= 0.5e9  # seen after 0.6 s
    for task in kept:
        assert not task._tw_rec.flags & (PRECISE | RELEASED)


@pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])
def test_interesting_end_of_a_task_seen_done_only_when_freed(otel, loop_kind, speedups):
    """Kept after it failed and read by no one: its end is its release, and the span says so."""
    otel.install(span_threshold=5.0, speedups=speedups)

    async def fails():
        raise KeyError("gone")

    async def main():
        kept = asyncio.create_task(fails())
        await asyncio.sleep(0.3)
        assert otel.named(".fails") == []  # done, but not seen done yet
        kept.exception()  # read it: no "never retrieved" noise
        otel.exporter.clear()
        kept = asyncio.create_task(fails())
        await asyncio.sleep(0.3)
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
        del kept  # freed without anyone reading it ("never retrieved" goes to the handler)
        gc.collect()

    run(main(), loop_kind)
    span = otel.one(".fails")
    assert span.attributes["taskwatch.task.closed"] == "released"
    assert span.end_time - span.start_time >= 0.25e9  # kept 0.3 s (timers may fire early)


@pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])
def test_interesting_done_callback_only_under_a_span(otel, loop_kind, speedups):
    otel.install(speedups=speedups)
    kept = []

    async def leaf():
        await asyncio.sleep(0)

    async def main():
        kept.append(asyncio.create_task(leaf(), name="bare"))
        with otel.tracer.start_as_current_span("request"):
            kept.append(asyncio.create_task(leaf(), name="traced"))
        await asyncio.gather(*kept)

    run(main(), loop_kind)
    bare, traced = kept
    assert not bare._tw_rec.flags & PRECISE
    assert traced._tw_rec.flags & PRECISE
    assert [s.attributes["taskwatch.task.name"] for s in otel.named(".leaf")] == ["traced"]


@pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])
def test_no_spans_no_close_when_seen_done(watch, loop_kind, speedups):
    """Without OpenTelemetry records close when tasks are freed: done() changes nothing."""
    watch(speedups=speedups)
    kept = []

    async def leaf():
        await asyncio.sleep(0)

    async def main():
        kept.append(asyncio.create_task(leaf()))
        await kept[0]
        assert kept[0].done() and kept[0].result() is None

    run(main(), loop_kind)
    assert kept[0]._tw_rec.ended == 0.0
    kept.clear()
    gc.collect()


def test_spans_none_exports_no_span(otel, loop_kind):
    otel.install(spans="none")

    async def fails():
        raise RuntimeError("x")

    async def main():
        await asyncio.gather(asyncio.create_task(fails()), return_exceptions=True)

    run(main(), loop_kind)
    assert otel.spans() == []
    assert otel.metrics()["taskwatch.task.finished"]


# -- findings and blocks --------------------------------------------------------------------------

def _spin(seconds):
    """CPU work of ``seconds`` of this thread's CPU time (not wall time: on a loaded machine a
    wall-time spin gets little CPU and is a step the machine starved, which is no finding)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_blocked_loop_span_under_the_blocking_task(otel, loop_kind):
    otel.install(watchdog=True, block_threshold=0.1)

    async def crunch():
        await asyncio.sleep(0.02)
        _spin(0.35)  # finishes right after blocking: exported because it blocked the loop

    async def main():
        await asyncio.create_task(crunch())
        await asyncio.sleep(0.1)  # let the heartbeat report the block

    run(main(), loop_kind)
    (finding,) = [f for f in taskwatch.findings() if f.kind == "blocked-loop"]
    block = next(s for s in otel.spans() if s.name == "taskwatch blocked-loop")
    task_span = otel.one(".crunch")
    assert block.parent.span_id == task_span.context.span_id
    assert block.start_time == int(finding.data["started_at"] * 1e9)
    assert block.end_time == int(finding.data["ended_at"] * 1e9)
    a = block.attributes
    assert a["taskwatch.block.duration"] == finding.data["duration_s"] >= 0.3
    assert a["taskwatch.block.cpu_time"] == finding.data["cpu_s"]
    assert a["code.function.name"] == f"{__name__}._spin"  # qualified, as on task spans
    assert a["code.file.path"] == __file__
    top = finding.data["top_frames"]  # what the watchdog sampled; may be few on a loaded machine
    assert list(a.get("taskwatch.block.top_frames", ())) == [
        f'{t["frame"]["file"]}:{t["frame"]["line"]} in {t["frame"]["function"]} ({t["share"]:.0%})'
        for t in top]
    assert a["taskwatch.finding.kind"] == "blocked-loop"
    if finding.data["stack"]:
        assert "_spin" in a["code.stacktrace"]
    assert task_span.start_time <= block.start_time


def test_blocked_loop_by_a_task_still_running(otel, loop_kind):
    otel.install(watchdog=True, block_threshold=0.1)

    async def periodic():
        await asyncio.sleep(0.02)
        _spin(0.3)
        await asyncio.sleep(0.3)  # still running when the block is reported: its span waits

    async def main():
        await asyncio.create_task(periodic())

    run(main(), loop_kind)
    block = next(s for s in otel.spans() if s.name == "taskwatch blocked-loop")
    task_span = otel.one(".periodic")
    assert block.parent.span_id == task_span.context.span_id
    assert task_span.end_time > block.end_time
    assert task_span.parent is None  # the loop's main task is nobody's parent span
    assert otel.named(".main") == []


def test_finding_is_an_event_on_the_task_span(otel, loop_kind):
    otel.install()

    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # swallowed
        await asyncio.sleep(0)

    async def main():
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    run(main(), loop_kind)
    span = otel.one(".stubborn")
    kinds = [e.attributes.get("taskwatch.finding.kind") for e in span.events if e.name == "taskwatch.finding"]
    assert kinds == ["swallowed-cancel"]
    (event,) = [e for e in span.events if e.name == "taskwatch.finding"]
    assert event.attributes["taskwatch.finding.severity"] == "warning"
    (finding,) = [f for f in taskwatch.findings() if f.kind == "swallowed-cancel"]
    assert event.attributes["taskwatch.finding.message"] == finding.message
    assert event.timestamp == int(finding.time * 1e9)
    assert span.attributes["taskwatch.task.outcome"] == "finished"


def test_late_finding_is_a_child_span(otel, loop_kind):
    otel.install()

    async def doomed():
        raise ConnectionError("reset")

    async def main():
        asyncio.create_task(doomed())  # nobody keeps it: its error is never retrieved
        await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0)

    run(main(), loop_kind)
    gc.collect()
    task_span = otel.one(".doomed")
    assert task_span.status.status_code is StatusCode.ERROR
    (child,) = [s for s in otel.spans() if s.name == "taskwatch unretrieved-exception"]
    assert child.parent.span_id == task_span.context.span_id
    assert child.start_time >= task_span.end_time
    assert child.attributes["exception.type"] == "ConnectionError"
    assert child.status.status_code is StatusCode.ERROR


# -- metrics --------------------------------------------------------------------------------------

def test_metrics(otel, loop_kind):
    otel.install(watchdog=True, block_threshold=0.1)

    async def ok():
        await asyncio.sleep(0)

    async def fails():
        raise ValueError("no")

    async def blocks():
        _spin(0.3)

    async def main():
        await asyncio.gather(*[asyncio.create_task(ok()) for _ in range(5)])
        await asyncio.gather(asyncio.create_task(fails()), return_exceptions=True)
        t = asyncio.create_task(asyncio.sleep(5))
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        await asyncio.create_task(blocks())
        await asyncio.sleep(0.1)

    run(main(), loop_kind)
    m = otel.metrics()
    created = m["taskwatch.task.created"]
    assert created.unit == "{task}"
    assert created.data.data_points[0].value >= 9
    finished = {p.attributes["taskwatch.task.outcome"]: p.value
                for p in m["taskwatch.task.finished"].data.data_points}
    assert finished["failed"] == 1 and finished["cancelled"] == 1 and finished["finished"] >= 7
    assert m["taskwatch.task.active"].data.data_points[0].value == 0
    duration = m["taskwatch.task.duration"]
    assert duration.unit == "s"
    counts = {p.attributes["taskwatch.task.outcome"]: p.count for p in duration.data.data_points}
    assert counts["failed"] == 1 and counts["cancelled"] == 1 and counts["finished"] >= 7
    block = m["taskwatch.loop.block.duration"].data.data_points[0]
    assert block.count == 1 and block.sum >= 0.2  # a 0.3 s spin; the start is known within a look
    findings = {p.attributes["taskwatch.finding.kind"]: p.value
                for p in m["taskwatch.findings"].data.data_points}
    assert findings == {"blocked-loop": 1}


# -- transparency ---------------------------------------------------------------------------------

def test_a_callers_context_is_never_modified(otel, loop_kind):
    otel.install(spans="all")
    tracer = otel.tracer

    async def job():
        return trace.get_current_span().get_span_context()

    async def main():
        with tracer.start_as_current_span("outer"):
            ctx = contextvars.copy_context()
            before = ctx.run(otel_context.get_current)
            loop = asyncio.get_running_loop()
            seen = await loop.create_task(job(), context=ctx)
            assert ctx.run(otel_context.get_current) is before
            return seen

    seen = run(main(), loop_kind)
    span = otel.one(".job")  # still exported, under the span current where it was created
    outer = next(s for s in otel.spans() if s.name == "outer")
    assert span.parent.span_id == outer.context.span_id
    assert seen.span_id == outer.context.span_id  # the caller's context was left as it was


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_tasks(otel, loop_kind):
    otel.install(spans="all")
    tracer = otel.tracer

    async def eager_child():
        with tracer.start_as_current_span("inside"):
            pass
        return 5

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        return await asyncio.create_task(eager_child())

    assert run(main(), loop_kind) == 5
    child = otel.one(".eager_child")
    inside = next(s for s in otel.spans() if s.name == "inside")
    assert inside.parent.span_id == child.context.span_id
    assert child.parent.span_id == otel.one(".main").context.span_id


def test_user_attributes_on_the_task_span(otel, loop_kind):
    """The task's span is the SDK's own span, current in the task: what the program sets on it
    goes through the SDK (its span limits apply), and taskwatch adds its own at the task's end."""
    otel.install(spans="all")

    async def handler():
        span = trace.get_current_span()
        assert isinstance(span, ReadableSpan)  # the SDK's span, not a stand-in
        span.set_attribute("order.id", 42)
        span.add_event("validated", {"ok": True})
        span.set_status(StatusCode.OK)
        await asyncio.sleep(0)

    async def main():
        await asyncio.create_task(handler())

    run(main(), loop_kind)
    span = otel.one(".handler")
    assert span.attributes["order.id"] == 42
    assert span.attributes["taskwatch.task.outcome"] == "finished"
    assert [e.name for e in span.events] == ["validated"]
    assert span.status.status_code is StatusCode.OK


def test_a_task_span_the_program_ended_is_left_alone(otel, loop_kind, caplog):
    """The program ends the task's span itself (``get_current_span().end()``): the SDK exports
    it then, as for any span; taskwatch does not write to the ended span (the SDK would warn
    "Setting attribute on ended span" into the program's log) nor end it twice."""
    otel.install(spans="all")

    async def handler():
        trace.get_current_span().set_attribute("order.id", 42)
        trace.get_current_span().end()
        await asyncio.sleep(0)

    async def main():
        await asyncio.create_task(handler())

    with caplog.at_level("WARNING", logger="opentelemetry"):
        run(main(), loop_kind)
    span = otel.one(".handler")
    assert span.attributes["order.id"] == 42
    assert "taskwatch.task.outcome" not in span.attributes
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]


def test_uninstall_exports_running_tasks(otel):
    otel.install(spans="all")
    done = {}

    async def forever():
        await asyncio.sleep(10)

    async def main():
        loop = asyncio.get_running_loop()
        done["task"] = loop.create_task(forever())
        await asyncio.sleep(0.01)
        taskwatch.uninstall()
        done["task"].cancel()

    run(main())
    span = otel.one(".forever")
    assert span.attributes["taskwatch.task.outcome"] == "pending"
    assert otel.one(".main").attributes["taskwatch.task.outcome"] == "pending"


# -- a TracerProvider that is not the SDK's ---------------------------------------------------------

class ApiOnlyTracer(trace.Tracer):
    def __init__(self, inner):
        self.inner = inner

    def start_span(self, *args, **kwargs):
        return self.inner.start_span(*args, **kwargs)

    def start_as_current_span(self, *args, **kwargs):
        return self.inner.start_as_current_span(*args, **kwargs)


class ApiOnlyProvider(trace.TracerProvider):
    """Any vendor's provider: taskwatch can only use the API (start_span with times, then end)."""

    def __init__(self, inner):
        self.inner = inner

    def get_tracer(self, *args, **kwargs):
        return ApiOnlyTracer(self.inner.get_tracer(*args, **kwargs))


def test_a_provider_that_is_not_the_sdks(otel, loop_kind):
    tw_otel.set_providers(ApiOnlyProvider(otel.provider), otel.meter_provider)
    otel.install(spans="all")
    tracer = otel.tracer

    async def step(n):
        with tracer.start_as_current_span("inside"):
            await asyncio.sleep(0)
        trace.get_current_span().set_attribute("step.n", n)
        if n == 2:
            raise LookupError("missing")

    async def main():
        with tracer.start_as_current_span("job"):
            await asyncio.gather(*(asyncio.create_task(step(n)) for n in range(3)),
                                 return_exceptions=True)

    run(main(), loop_kind)
    spans = otel.spans()
    job = next(s for s in spans if s.name == "job")
    steps = otel.named(".step")
    assert len(steps) == 3 and all(s.parent.span_id == job.context.span_id for s in steps)
    inside = [s for s in spans if s.name == "inside"]
    assert {s.parent.span_id for s in inside} == {s.context.span_id for s in steps}
    failed = next(s for s in steps if s.attributes["step.n"] == 2)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["taskwatch.task.outcome"] == "failed"
    assert [e.name for e in failed.events] == ["exception"]
    assert_no_holes(spans)


def test_metrics_while_the_loop_runs(otel, loop_kind):
    """Runtime metrics are observed while the program runs, not only after its loop closed (every
    collection once failed with AttributeError, and the SDK printed a traceback each interval)."""
    otel.install()
    seen = {}

    async def worker():
        await asyncio.sleep(0.01)

    async def main():
        done = [asyncio.create_task(worker()) for _ in range(5)]
        await asyncio.gather(*done)
        pending = [asyncio.create_task(asyncio.sleep(10)) for _ in range(3)]
        await asyncio.sleep(0)
        seen.update(otel.metrics())  # collected with the loop running
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    run(main(), loop_kind)
    assert seen["taskwatch.task.created"].data.data_points[0].value >= 8
    assert seen["taskwatch.task.active"].data.data_points[0].value >= 3
    finished = {p.attributes["taskwatch.task.outcome"]: p.value
                for p in seen["taskwatch.task.finished"].data.data_points}
    assert finished.get("finished", 0) >= 5


# -- a cancel seen in the request's trace -------------------------------------------------------

@pytest.mark.skipif(sys.version_info < (3, 12), reason="Task.get_context() is 3.12+")
def test_cancel_event_on_the_programs_span_inside_the_cancelled_task(otel, loop_kind):
    """A task with no span of taskwatch's (spans="interesting", created under no span) opens a
    request span itself and is cancelled in it: by a timeout() that then withdraws the cancel
    (the task ends normally and is never exported), or by another task. The request span, current
    in the cancelled task, gets the taskwatch.cancel event while it is still recording."""
    otel.install()
    tracer = otel.tracer
    lines = {}

    async def report_handler():
        with tracer.start_as_current_span("GET /report"):
            try:
                async with asyncio.timeout(0.02):
                    await asyncio.sleep(10)
            except TimeoutError:
                pass

    async def poll_handler():
        with tracer.start_as_current_span("GET /poll"):
            await asyncio.sleep(10)

    async def main():
        await asyncio.create_task(report_handler(), name="report")
        task = asyncio.create_task(poll_handler(), name="poll")
        await asyncio.sleep(0.01)
        lines["cancel"] = here() + 1
        task.cancel("client went away")
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main(), loop_kind)
    assert not otel.named(".report_handler")  # its cancel was withdrawn: no span of its own
    report = otel.one("GET /report")
    (event,) = [e for e in report.events if e.name == "taskwatch.cancel"]
    assert event.attributes["taskwatch.task.name"] == "report"
    assert event.attributes["taskwatch.task.coroutine"].endswith("report_handler")
    assert report.start_time <= event.timestamp <= report.end_time
    poll = otel.one("GET /poll")
    (event,) = [e for e in poll.events if e.name == "taskwatch.cancel"]
    a = event.attributes
    assert a["taskwatch.task.name"] == "poll"
    assert a["taskwatch.cancel.message"] == "client went away"
    assert a["taskwatch.cancel.line.number"] == lines["cancel"]
    assert a["taskwatch.cancel.file.path"] == __file__
    assert poll.start_time <= event.timestamp <= poll.end_time
    # the task's own span (exported: it ended cancelled) has the event too, once
    task_span = otel.one(".poll_handler")
    assert [e.name for e in task_span.events] == ["taskwatch.cancel"]


def test_cancel_event_not_doubled_on_a_task_with_its_own_span(otel, loop_kind):
    """A task with a span of its own (created under a recording span) carries the cancel event on
    that span only: the spans the program opened inside it are left as they are."""
    otel.install()
    tracer = otel.tracer

    async def poll_handler():
        with tracer.start_as_current_span("GET /poll"):
            await asyncio.sleep(10)

    async def main():
        with tracer.start_as_current_span("request"):
            task = asyncio.create_task(poll_handler())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main(), loop_kind)
    task_span = otel.one(".poll_handler")
    assert [e.name for e in task_span.events] == ["taskwatch.cancel"]
    inner = otel.one("GET /poll")
    assert inner.parent.span_id == task_span.context.span_id
    assert not inner.events


# -- attributes: one form on every span ---------------------------------------------------------

class Crunch:
    def run(self):  # CPU work in this very frame (see _spin)
        end = time.thread_time() + 0.35
        while time.thread_time() < end:
            pass


def test_function_names_are_qualified_on_every_span(otel, loop_kind):
    """code.function.name (and the cancel and creation sites' function names) are
    ``module.qualname`` everywhere: on task spans and on blocked-loop spans, for a method too."""
    otel.install(watchdog=True, block_threshold=0.1)

    class Service:
        async def crunch(self):
            await asyncio.sleep(0.02)
            Crunch().run()

        async def stop(self, task):
            task.cancel()

    async def main():
        await asyncio.create_task(Service().crunch())
        await asyncio.sleep(0.1)  # let the heartbeat report the block
        victim = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        await Service().stop(victim)
        with pytest.raises(asyncio.CancelledError):
            await victim

    run(main(), loop_kind)
    prefix = f"{__name__}.test_function_names_are_qualified_on_every_span.<locals>"
    block = next(s for s in otel.spans() if s.name == "taskwatch blocked-loop")
    assert block.attributes["code.function.name"] == f"{__name__}.Crunch.run"
    task_span = otel.one(".crunch")
    assert task_span.attributes["code.function.name"] == f"{prefix}.Service.crunch"
    assert task_span.attributes["taskwatch.creation.function.name"] == f"{prefix}.main"
    (event,) = [e for e in otel.one("asyncio.tasks.sleep").events if e.name == "taskwatch.cancel"]
    assert event.attributes["taskwatch.cancel.function.name"] == f"{prefix}.Service.stop"


def test_parent_task_attributes_are_the_same_on_every_child(otel, loop_kind):
    """Children of one parent exported while it runs and after it ended (its name is learnt only
    then) carry the same taskwatch.parent_task.* attributes."""
    otel.install()
    kept = []

    async def fails(delay):
        await asyncio.sleep(delay)
        raise ValueError(delay)

    async def parent():
        first = asyncio.create_task(fails(0.01))
        kept.append(asyncio.create_task(fails(0.1)))  # outlives its parent
        await asyncio.gather(first, return_exceptions=True)

    async def main():
        await asyncio.create_task(parent(), name="the-parent")
        await asyncio.gather(*kept, return_exceptions=True)

    run(main(), loop_kind)
    children = otel.named(".fails")
    assert len(children) == 2
    seen = [{k: v for k, v in c.attributes.items() if k.startswith("taskwatch.parent_task.")}
            for c in children]
    assert seen[0] == seen[1]
    parent_span = otel.one(".parent")
    assert seen[0]["taskwatch.parent_task.id"] == parent_span.attributes["taskwatch.task.id"]
    assert seen[0]["taskwatch.parent_task.coroutine"] == parent_span.name
    assert parent_span.attributes["taskwatch.task.name"] == "the-parent"


def test_file_paths_are_absolute_whatever_the_working_directory(otel, loop_kind, tmp_path,
                                                                monkeypatch):
    """A module imported through a relative sys.path entry has a relative co_filename
    (``../lib/jobs.py``); an absolute one may hold ``..`` (``/srv/app/../lib/jobs.py``). Every
    file path taskwatch exports is absolute and normalized, the same after a chdir."""
    lib, other = tmp_path / "lib", tmp_path / "other"
    lib.mkdir()
    other.mkdir()
    (lib / "twjobs_rel.py").write_text(textwrap.dedent("""
        import asyncio

        async def fails():
            await asyncio.sleep(0.01)
            raise ValueError("x")

        def start(coro):
            return asyncio.create_task(coro)
    """))
    (other / "twjobs_dotted.py").write_text(textwrap.dedent("""
        import asyncio

        async def fails():
            await asyncio.sleep(0.01)
            raise KeyError("y")
    """))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work) + os.sep + os.path.join("..", "other"))
    import importlib
    import types

    dotted = importlib.import_module("twjobs_dotted")  # as `python ../other/app.py` names it
    rel = types.ModuleType("twjobs_rel")  # code compiled under a relative name (exec, tools)
    rel_name = os.path.join("..", "lib", "twjobs_rel.py")
    rel.__file__ = rel_name
    exec(compile((lib / "twjobs_rel.py").read_text(), rel_name, "exec"), rel.__dict__)
    monkeypatch.setitem(sys.modules, "twjobs_rel", rel)
    assert rel.fails.__code__.co_filename.startswith("..")
    assert ".." in dotted.fails.__code__.co_filename
    otel.install()

    async def main():
        tasks = [rel.start(rel.fails()), asyncio.create_task(dotted.fails())]
        os.chdir(tmp_path)  # the program changes its working directory
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        run(main(), loop_kind)
    finally:
        sys.modules.pop("twjobs_rel", None)
        sys.modules.pop("twjobs_dotted", None)
    expected = str(lib / "twjobs_rel.py")
    spans = [s for s in otel.spans() if s.name.endswith(".fails")]
    assert len(spans) == 2
    for span in spans:
        a = span.attributes
        for key in ("code.file.path", "taskwatch.creation.file.path"):
            assert os.path.isabs(a[key]) and ".." not in a[key].split(os.sep), (key, a[key])
        (event,) = [e for e in span.events if e.name == "exception"]
        assert ".." not in event.attributes["exception.stacktrace"]
    by_type = {s.attributes["error.type"]: s.attributes for s in spans}
    assert by_type["ValueError"]["code.file.path"] == expected
    assert by_type["ValueError"]["taskwatch.creation.file.path"] == expected
    assert by_type["KeyError"]["code.file.path"] == str(other / "twjobs_dotted.py")


def test_the_providers_span_limits_apply_to_taskwatchs_spans(watch, loop_kind):
    """taskwatch's spans are made by the provider (Tracer.start_span and the API's setters), so
    the limits the user configured apply: a 5,000-character task name and exception message go
    out cut to the attribute length limit, with no more attributes than allowed."""
    from opentelemetry.sdk.trace import SpanLimits

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=5,
                                                     max_attribute_length=32,
                                                     max_event_attributes=3))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tw_otel.set_providers(provider, None)
    try:
        watch(otel=True, spans="interesting", watchdog=False)

        async def fails():
            raise ValueError("m" * 5000)

        async def main():
            task = asyncio.create_task(fails(), name="n" * 5000)
            await asyncio.gather(task, return_exceptions=True)

        run(main(), loop_kind)
        taskwatch.uninstall()
    finally:
        tw_otel.set_providers(None, None)
    (span,) = [s for s in exporter.get_finished_spans() if s.name.endswith(".fails")]
    assert len(span.attributes) <= 5
    assert span.dropped_attributes > 0
    assert all(len(v) <= 32 for v in span.attributes.values() if isinstance(v, str))
    assert span.status.status_code is StatusCode.ERROR
    for event in span.events:
        assert len(event.attributes) <= 3
        assert all(len(v) <= 32 for v in event.attributes.values() if isinstance(v, str))
    provider.shutdown()


@pytest.mark.parametrize("speedups", [True, False], ids=["c", "py"])
def test_durations_reach_a_meter_provider_the_program_sets_later(speedups):
    """No MeterProvider at install (the API's proxy): task durations go nowhere and the hot path
    skips them; once the program sets one, they are recorded (taskwatch's thread looks for one
    once a second)."""
    script = textwrap.dedent(f"""
        import asyncio, time
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        import taskwatch

        taskwatch.install(otel=True, watchdog=False, speedups={speedups})

        async def leaf():
            pass

        async def main():
            await asyncio.gather(*[asyncio.create_task(leaf()) for _ in range(10)])

        asyncio.run(main())
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        time.sleep(2.5)  # taskwatch's thread looks for a provider once a second
        asyncio.run(main())
        count = 0
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "taskwatch.task.duration":
                        count += sum(p.count for p in m.data.data_points)
        print("durations", count)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count = int(proc.stdout.split()[-1])
    # the second run: its main task, 10 leaves and asyncio.run's own shutdown tasks (2 at most)
    assert 11 <= count <= 13, proc.stdout
