"""Contenders: how each one is switched on, and how it proves it was on.

A contender that did nothing (a factory that was never installed, spans that were never
exported) would make every ratio look good, so each setup returns a ``proof`` callable that
inspects the run afterwards and says whether the contender demonstrably touched the workload.
Missing packages raise :class:`Skip`; anything else that goes wrong is a failed contender.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ._workloads import TRACED_COROUTINES, Outcome

Proof = dict[str, Any]  # {"active": bool, "evidence": {...}, "why": "..."}

CONTENDERS = (
    "plain-uvloop",
    "plain-asyncio",
    "taskwatch",
    "taskwatch-nowatchdog",
    "taskwatch-python",
    "taskwatch-recorder",
    "taskwatch-cpu",
    "taskwatch-cpu10",
    "taskwatch-spans-interesting",
    "taskwatch-spans-all",
    "debug-mode",
    "aiomonitor",
    "otel-asyncio",
    "otel-sdk-floor",
    "otel-sdk-floor-11",
    "otel-sdk-idle",
)
#: Contenders that only make sense for some workloads (the harness runs them nowhere else).
ONLY: dict[str, tuple[str, ...]] = {"otel-sdk-floor": ("churn",), "otel-sdk-floor-11": ("churn",),
                                    "otel-sdk-idle": ("server",)}
#: Contenders that report blocked-loop durations (scored by the watchdog workload).
DETECTORS = ("taskwatch", "taskwatch-spans-interesting", "taskwatch-spans-all", "debug-mode")
#: Python modules each contender needs; the harness skips a contender whose module is missing.
REQUIRES: dict[str, tuple[str, ...]] = {
    "plain-uvloop": ("uvloop",),
    "taskwatch": ("taskwatch",),
    "taskwatch-nowatchdog": ("taskwatch",),
    "taskwatch-python": ("taskwatch",),
    "taskwatch-recorder": ("taskwatch",),
    "taskwatch-cpu": ("taskwatch",),
    "taskwatch-cpu10": ("taskwatch",),
    "taskwatch-spans-interesting": ("taskwatch", "opentelemetry.sdk"),
    "taskwatch-spans-all": ("taskwatch", "opentelemetry.sdk"),
    "aiomonitor": ("aiomonitor",),
    "otel-asyncio": ("opentelemetry.instrumentation.asyncio", "opentelemetry.sdk"),
    "otel-sdk-floor": ("opentelemetry.sdk",),
    "otel-sdk-floor-11": ("opentelemetry.sdk",),
    "otel-sdk-idle": ("opentelemetry.sdk",),
}


class Skip(Exception):
    """The contender's package is not installed: reported as skipped, not as an error."""


@dataclass
class Setup:
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    proof: Callable[[Outcome], Proof]
    teardown: Callable[[], None] = lambda: None
    block_reports: Callable[[], tuple[list[dict[str, float]], list[float]]] | None = None
    versions: dict[str, str] = field(default_factory=dict)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _require(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name.split(".")[0]):
            raise Skip(f"{module} is not installed") from e
        raise


def _base_loop(kind: str, versions: dict[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        uvloop = _require("uvloop")
        versions["uvloop"] = _version("uvloop")
        return uvloop.new_event_loop
    return asyncio.new_event_loop


class _LoopBox:
    """Wraps a loop factory so proofs and hooks can reach the loop that actually ran."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop],
                 on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None) -> None:
        self.factory, self.on_loop = factory, on_loop
        self.loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> asyncio.AbstractEventLoop:
        self.loop = self.factory()
        if self.on_loop:
            self.on_loop(self.loop)
        return self.loop


def _proof(active: bool, why: str, **evidence: Any) -> Proof:
    return {"active": bool(active), "why": why, "evidence": evidence}


# ---------------------------------------------------------------------------------------------


def _plain(kind: str, versions: dict[str, str]) -> Setup:
    box = _LoopBox(_base_loop(kind, versions))

    def proof(out: Outcome) -> Proof:
        loop = box.loop
        ok = (loop is not None and loop.get_task_factory() is None and not loop.get_debug()
              and (kind != "uvloop" or type(loop).__module__.startswith("uvloop")))
        return _proof(ok, "plain loop: no task factory, debug off",
                      loop=f"{type(loop).__module__}.{type(loop).__name__}")

    return Setup(box, proof, versions=versions)


class _Counter:
    """Span tally shared with the counting exporter."""

    def __init__(self) -> None:
        self.count = 0  # exported
        self.ended = 0  # ended (exported, dropped or still queued)
        self.names: dict[str, int] = {}


def _counting_exporter(counter: _Counter) -> Any:
    """A SpanExporter that only counts, so export cost stays out of the numbers."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            counter.count += len(spans)
            if len(counter.names) < 20:
                for s in spans[:4]:
                    counter.names[s.name] = counter.names.get(s.name, 0) + 1
            return SpanExportResult.SUCCESS

    return CountingExporter()


def _otel_pipeline(versions: dict[str, str]) -> tuple[Any, _Counter]:
    """SDK TracerProvider -> default BatchSpanProcessor -> counting exporter, set globally.

    A tiny processor in front counts every span that ended, because the SDK's "Queue full,
    dropping" warning goes through a duplicate filter and cannot be counted; dropped spans are
    then ended minus exported. The processor costs both OTel contenders the same call per span.
    """
    _require("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    counter = _Counter()

    class Ended(SpanProcessor):
        def on_end(self, span: Any) -> None:
            counter.ended += 1

    provider = TracerProvider()
    provider.add_span_processor(Ended())
    # SDK defaults (queue 2048, batch 512, 5 s), as in production.
    provider.add_span_processor(BatchSpanProcessor(_counting_exporter(counter)))
    trace.set_tracer_provider(provider)
    logging.getLogger("opentelemetry.sdk").setLevel(logging.ERROR)  # no "Queue full" on stderr
    versions["opentelemetry-sdk"] = _version("opentelemetry-sdk")
    return provider, counter


def _spans(provider: Any, counter: _Counter) -> dict[str, Any]:
    provider.force_flush()
    return {"spans_ended": counter.ended, "spans_exported": counter.count,
            "spans_dropped": counter.ended - counter.count,
            "span_names_sample": dict(sorted(counter.names.items())[:6])}


class _LogTimes(logging.Handler):
    """Remembers when a logger spoke (and asyncio debug's 'took X seconds' durations)."""

    TOOK = re.compile(r"took (\d+\.\d+) seconds")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []
        self.reports: list[dict[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.times.append(record.created)
        m = self.TOOK.search(record.getMessage())
        if m:
            self.reports.append({"time": record.created, "duration_s": float(m.group(1))})


def _capture(logger_name: str) -> _LogTimes:
    handler = _LogTimes()
    log = logging.getLogger(logger_name)
    log.addHandler(handler)
    log.setLevel(logging.WARNING)  # the effective level an unconfigured application has
    log.propagate = False  # keep the benchmark's stderr quiet
    return handler


def _taskwatch(name: str, kind: str, params: dict[str, Any], versions: dict[str, str]) -> Setup:
    otel = name.startswith("taskwatch-spans-")
    pipeline = _otel_pipeline(versions) if otel else None
    taskwatch = _require("taskwatch")
    versions["taskwatch"] = str(getattr(taskwatch, "__version__", _version("taskwatch")))
    kwargs: dict[str, Any] = {}
    if name == "taskwatch-nowatchdog":
        kwargs["watchdog"] = False
    if name == "taskwatch-python":  # the pure-Python hot path: what the C accelerator saves
        kwargs["speedups"] = False
    if name == "taskwatch-recorder":  # the flight recorder's ring on (dumps only on 1 s blocks)
        import tempfile

        kwargs["flight_recorder"] = tempfile.mkdtemp(prefix="taskwatch-bench-")
    if name == "taskwatch-cpu":  # CPU sampling every 1 ms (Python 3.13+, the accelerator)
        kwargs["cpu_sampling"] = 0.001
    if name == "taskwatch-cpu10":  # ... every 10 ms, the interval for always-on use
        kwargs["cpu_sampling"] = 0.01
    if otel:
        kwargs.update(otel=True, spans=name.removeprefix("taskwatch-spans-"))
    if "block_threshold" in params:
        kwargs["block_threshold"] = float(params["block_threshold"])
    logs = _capture("taskwatch")
    taskwatch.install(**kwargs)  # before the loop exists, as an application would at startup
    box = _LoopBox(_base_loop(kind, versions))
    state: dict[str, Any] = {}

    def proof(out: Outcome) -> Proof:
        report = taskwatch.report()
        state["report"] = report
        created = int(report.get("stats", {}).get("tasks_created", 0))
        ev: dict[str, Any] = {"install": kwargs, "tasks_created": created,
                              "workload_tasks": out.tasks,
                              "findings": len(report.get("findings", []))}
        ok = created >= out.tasks
        why = "report()['stats']['tasks_created'] >= tasks the workload made"
        if "flight_recorder" in kwargs:
            stats = report.get("stats", {})
            ev["timeline_recorder"] = "timeline_events" in stats
            ev["history_kept"] = int(stats.get("tasks_finished", 0)) - int(stats.get("dropped_history", 0))
            ok = ok and "timeline_events" in stats and ev["history_kept"] >= min(out.tasks, 50_000)
            why += "; the timeline recorder is on and its history ring kept min(tasks, 50,000)"
        if "cpu_sampling" in kwargs:
            cpu = report.get("cpu", {})
            ev["cpu_samples"] = cpu.get("samples")
            ok = ok and bool(cpu.get("sampling")) and (cpu.get("samples") or 0) > 0
            why += "; the CPU sampler ran and took samples"
        if pipeline:
            ev.update(_spans(*pipeline))
            seen = ev["spans_ended"]
            if kwargs["spans"] == "all":
                ok = ok and seen >= out.spans_expected
                why += "; spans ended >= tasks that ran"
            elif out.failed_expected:
                ok = ok and seen > 0
                why += "; some spans for the failed/cancelled tasks"
        return _proof(ok, why, **ev)

    def block_reports() -> tuple[list[dict[str, float]], list[float]]:
        report = state.get("report") or taskwatch.report()
        found = [{"time": float(f["time"]), "duration_s": float(f["duration_s"])}
                 for f in report.get("findings", []) if f.get("kind") == "blocked-loop"]
        return found, logs.times

    def teardown() -> None:
        taskwatch.uninstall()
        if pipeline:
            pipeline[0].shutdown()

    detects = name in DETECTORS
    return Setup(box, proof, teardown, block_reports if detects else None, versions)


def _debug(kind: str, params: dict[str, Any], versions: dict[str, str]) -> Setup:
    threshold = float(params.get("block_threshold", 0.1))
    logs = _capture("asyncio")

    def on_loop(loop: asyncio.AbstractEventLoop) -> None:
        loop.set_debug(True)
        loop.slow_callback_duration = threshold

    box = _LoopBox(_base_loop(kind, versions), on_loop)

    def proof(out: Outcome) -> Proof:
        loop, task = box.loop, out.sample_task
        tb = getattr(task, "_source_traceback", None)
        ok = bool(loop and loop.get_debug()) and bool(tb)
        return _proof(ok, "loop.get_debug() and a workload task has a _source_traceback",
                      source_traceback_frames=len(tb or ()), log_records=len(logs.times))

    return Setup(box, proof, block_reports=lambda: (logs.reports, logs.times), versions=versions)


def _aiomonitor(kind: str, versions: dict[str, str]) -> Setup:
    aiomonitor = _require("aiomonitor")
    from aiomonitor.task import TracedTask

    versions["aiomonitor"] = _version("aiomonitor")
    logging.getLogger("aiomonitor").setLevel(logging.WARNING)
    holder: dict[str, Any] = {}

    def on_loop(loop: asyncio.AbstractEventLoop) -> None:
        # Ephemeral loopback ports so parallel or back-to-back runs never collide.
        holder["m"] = aiomonitor.start_monitor(loop, hook_task_factory=True, host="127.0.0.1",
                                               port=0, webui_port=0, console_port=0,
                                               console_enabled=False)

    box = _LoopBox(_base_loop(kind, versions), on_loop)

    def proof(out: Outcome) -> Proof:
        m, loop = holder["m"], box.loop
        hooked = loop is not None and loop.get_task_factory() == m._create_task
        traced = isinstance(out.sample_task, TracedTask)
        try:  # every terminated TracedTask is put on this janus queue; nothing calls task_done
            terminated = m._termination_info_queue._unfinished_tasks
        except AttributeError:
            terminated = -1
        ok = hooked and traced and (terminated < 0 or terminated >= out.tasks)
        return _proof(ok, "factory is Monitor._create_task, tasks are TracedTask, "
                      "terminations queued >= tasks", factory_installed=hooked,
                      sample_is_traced_task=traced, terminations_queued=terminated)

    def teardown() -> None:
        if "m" in holder:
            holder["m"].close()

    return Setup(box, proof, teardown, versions=versions)


def _otel_asyncio(kind: str, versions: dict[str, str]) -> Setup:
    os.environ["OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE"] = ",".join(TRACED_COROUTINES)
    pipeline = _otel_pipeline(versions)
    mod = _require("opentelemetry.instrumentation.asyncio")
    versions["opentelemetry-instrumentation-asyncio"] = _version(
        "opentelemetry-instrumentation-asyncio")
    instrumentor = mod.AsyncioInstrumentor()
    instrumentor.instrument()
    box = _LoopBox(_base_loop(kind, versions))

    def proof(out: Outcome) -> Proof:
        ev = _spans(*pipeline)
        return _proof(ev["spans_ended"] >= out.spans_expected,
                      "spans ended >= benchmark coroutines that ran",
                      spans_expected=out.spans_expected, **ev)

    def teardown() -> None:
        instrumentor.uninstrument()
        pipeline[0].shutdown()

    return Setup(box, proof, teardown, versions=versions)


def _sdk_floor(kind: str, versions: dict[str, str], task_attributes: bool = False) -> Setup:
    """Not an instrumentation but a lower bound for every one: what the OpenTelemetry SDK itself
    costs to export one span per task, with no hook, context, lineage or finding at all.

    Churn's trivial coroutine is swapped for one that does only the SDK's share of a task span,
    through the public API as taskwatch does it: ``Tracer.start_span`` (sampler, ids, the
    processors' ``on_start``), the three ``code.*`` attributes, ``end`` (the processors'
    ``on_end``: the same counting pipeline as the other OTel contenders). Its extra cost is the
    part of any per-task span exporter's cost that no tool can save.

    ``task_attributes`` (otel-sdk-floor-11): the same, with the 11 attributes a taskwatch task span
    carries on churn (code.*, taskwatch.creation.*, the task's id, name and outcome, its parent's
    id and coroutine), values of the same types: the SDK's share of a taskwatch span.
    """
    from . import _workloads

    provider, counter = _otel_pipeline(versions)
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    tracer = provider.get_tracer("benchmarks.otel-sdk-floor")
    start_span, root, kind_internal = tracer.start_span, Context(), SpanKind.INTERNAL
    code = _workloads.trivial.__code__
    attributes = {"code.function.name": code.co_qualname, "code.file.path": code.co_filename,
                  "code.line.number": code.co_firstlineno}
    original = _workloads.trivial
    ids = itertools.count(1)

    async def trivial() -> None:
        span = start_span(code.co_qualname, context=root, kind=kind_internal)
        span.set_attributes(attributes)
        span.end()

    if task_attributes:
        attributes.update({"taskwatch.creation.file.path": code.co_filename,
                           "taskwatch.creation.line.number": code.co_firstlineno + 7,
                           "taskwatch.creation.function.name": "benchmarks._workloads._churn",
                           "taskwatch.parent_task.coroutine": "benchmarks._worker.main"})

        async def trivial() -> None:  # noqa: F811
            span = start_span(code.co_qualname, context=root, kind=kind_internal)
            task_id = next(ids)
            attrs = attributes.copy()
            attrs["taskwatch.task.id"] = task_id
            attrs["taskwatch.task.name"] = f"Task-{task_id}"
            attrs["taskwatch.task.outcome"] = "finished"
            attrs["taskwatch.parent_task.id"] = 1
            span.set_attributes(attrs)
            span.end()

    _workloads.trivial = trivial  # looked up by _churn at call time
    box = _LoopBox(_base_loop(kind, versions))

    def proof(out: Outcome) -> Proof:
        ev = _spans(provider, counter)
        return _proof(ev["spans_ended"] >= out.tasks, "spans ended >= tasks", **ev)

    def teardown() -> None:
        _workloads.trivial = original
        provider.shutdown()

    return Setup(box, proof, teardown, versions=versions)


def _sdk_idle(kind: str, versions: dict[str, str]) -> Setup:
    """Plain uvloop in a process that set up the same OpenTelemetry SDK pipeline as the OTel
    contenders (provider, batch processor and its worker thread) and instruments nothing: what a
    service that is already traced pays before any instrumentation runs."""
    provider, counter = _otel_pipeline(versions)
    box = _LoopBox(_base_loop(kind, versions))

    def proof(out: Outcome) -> Proof:
        from opentelemetry import trace

        ok = trace.get_tracer_provider() is provider and box.loop is not None
        return _proof(ok, "SDK provider set globally, plain loop", **_spans(provider, counter))

    return Setup(box, proof, provider.shutdown, versions=versions)


def setup(name: str, loop_kind: str, params: dict[str, Any]) -> Setup:
    """Switch contender ``name`` on in this (fresh) process; its loop is built on ``loop_kind``."""
    versions: dict[str, str] = {}
    if name == "plain-uvloop":
        return _plain("uvloop", versions)
    if name == "plain-asyncio":
        return _plain("asyncio", versions)
    if name.startswith("taskwatch"):
        return _taskwatch(name, loop_kind, params, versions)
    if name == "debug-mode":
        return _debug(loop_kind, params, versions)
    if name == "aiomonitor":
        return _aiomonitor(loop_kind, versions)
    if name == "otel-asyncio":
        return _otel_asyncio(loop_kind, versions)
    if name == "otel-sdk-floor":
        return _sdk_floor(loop_kind, versions)
    if name == "otel-sdk-floor-11":
        return _sdk_floor(loop_kind, versions, task_attributes=True)
    if name == "otel-sdk-idle":
        return _sdk_idle(loop_kind, versions)
    raise ValueError(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}")
