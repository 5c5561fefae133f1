"""Task spans: one OpenTelemetry span per exported task, nested where the task was created.

A task gets its span in one of two ways:

* **eagerly**, in the task factory (``spans="all"``, or a recording span is current where the task is
  created): the span starts at creation and is made current in the context taskwatch made for the
  task, so the spans the program opens inside the task nest under it;
* **retroactively**, when a task that had no span ends and turned out interesting (failed, cancelled,
  ran longer than ``span_threshold``, had a finding, or has children waiting for its span): the
  span is built with the task's own start and end times.

Not interesting on their own (``spans="interesting"``): a library's own task that the library
cancelled itself (aiohttp's connection task when the connection closes), and the loop's main task
(the one ``asyncio.run`` runs), unless it failed or had a finding.

No holes, and nothing exported before its parent can be: the parent of an exported task span is the
user's span that was current at creation, or the parent task's span. A parent that already ended
is exported then (rebuilt from its record); a parent still running without a span gets none out of
nothing: the child (or a block it caused) waits for it and is exported right after it, or as a root
after ``_HOLD_S``. The loop's main task and asyncio's own tasks are nobody's parent span: a child of
the main task is a root (``taskwatch.parent_task.*`` still name it).

``TaskRecord.span`` holds, in turn: the parent task's record (so a task that ends interesting can find
its parent cheaply; set by the factory hook in ``interesting`` mode), a :class:`TaskSpan` while the
task's span is live, the span's ``SpanContext`` once it was exported (children and late findings
still find it), or None. Span objects are dropped when their task ends.

Everything goes through OpenTelemetry's API: ``Tracer.start_span`` (with the task's own start time),
``set_attributes``, ``add_event``, ``set_status``, ``end`` (with its end time). The provider's sampler,
id generator, resource, span limits and processors do their own work. A live task span is the API
span itself, current in the task's context: what the program sets on it is recorded by the SDK.
"""

from __future__ import annotations

import asyncio
import collections
import linecache
import os
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from .._core import _sites
from .._core._guard import internal_error
from .._core._flags import RELEASED, REPORTED
from .._core._record import CANCELLED, FAILED, FINISHED, PENDING, TaskRecord, to_wall
from .._version import VERSION

if TYPE_CHECKING:
    from .._core._findings import Finding
    from .._core._state import State

SCOPE = "taskwatch"
BLOCK_SPAN = "taskwatch blocked-loop"
_FLAGGED = REPORTED  # TaskRecord.flags bits meaning "a finding was raised for this task"
_UNSET = Status(StatusCode.UNSET)
_NO_OUTCOME: dict[str, str] = {}
_KIND = SpanKind.INTERNAL
_MAX_EVENTS = 64  # events kept per span (user's + findings); more are counted as dropped
_MAX_LIVE = 1 << 16  # live task spans reachable by id (for findings); oldest forgotten beyond
_MAX_ENDED = 1 << 13  # ended task spans reachable by id (late findings, outliving children)
_MAX_PENDING = 4096  # running tasks without a span that have findings waiting for their end
_MAX_CACHE = 20_000
_MAX_ROOT_FINDING_SPANS = 20  # per (kind, site) for findings without a task (never-awaited)
_PARENT_DEPTH = 64
# Seconds an ended task (or a loop block) waits for its parent task, still running without a span,
# to end and be exported first; then it goes out as a root of its own.
_HOLD_S = 5.0
# The done callbacks run_until_complete puts on the future it runs (asyncio's, uvloop's).
_ROOT = "root"  # _context_for_id: the loop's main task, which parents nothing
_RUN_CALLBACKS = frozenset({"_run_until_complete_cb", "run_until_complete.<locals>.done_cb"})
# TaskRecord.span of a task whose eager span the sampler dropped: never exported later either.
SAMPLED_OUT = "sampled-out"


def _no_meter_provider() -> bool:
    """True while no MeterProvider is set globally: the API's proxy instruments record nothing
    until one is (then they do, with no new instrument needed)."""
    from opentelemetry import metrics as metrics_api

    from ._sdk import api_meter_provider

    return api_meter_provider(metrics_api.get_meter_provider())


def wall_ns(monotonic_time: float) -> int:
    """A record's monotonic timestamp as OpenTelemetry's epoch nanoseconds (the SDK stamps its own
    spans with time.time_ns(): the offset is taken now, see ``to_wall``)."""
    return int(to_wall(monotonic_time) * 1e9)


def epoch_ns(seconds: float) -> int:
    return int(seconds * 1e9)


class TaskSpan:
    """taskwatch's side of one running task's span: the API span (``real``, current in the task's
    context, so what the program sets on ``trace.get_current_span()`` goes straight to it) and what
    taskwatch needs to end it with the task and to parent other spans to it."""

    __slots__ = ("real", "_ctx", "_parent", "_start", "_name", "_ended", "attached", "creator")

    def __init__(self, real: Any, parent: SpanContext | None, start: int, name: str) -> None:
        self.real = real
        self._ctx: SpanContext = real.get_span_context()
        self._parent = parent
        self._start = start
        self._name = name
        self._ended = False
        self.attached = False  # current in the task's context
        self.creator: Any = None  # the span that was current where the task was created

    def __repr__(self) -> str:
        return f"<taskwatch TaskSpan {self._name!r} {self._ctx.span_id:016x}>"


# ---------------------------------------------------------------------------------------------
# The tracer: spans through OpenTelemetry's API only


class _Tracer:
    """taskwatch's tracer on one TracerProvider. Spans are started with explicit start times under
    an explicit parent (a Context: the sampler sees what it would see for any span), filled with the
    API's setters and ended with explicit end times."""

    def __init__(self, provider: Any, tracer: Any) -> None:
        self.provider = provider
        self.tracer = tracer

    def start(self, name: str, parent: SpanContext | None, ctx: Any, start: int) -> Any:
        """A started API span under ``ctx`` (a Context), else under ``parent`` (None: a new
        trace); None when the sampler dropped it."""
        if ctx is None:
            ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else Context()
        real = self.tracer.start_span(name, context=ctx, kind=_KIND, start_time=start)
        if not real.is_recording():
            return None
        return real

    @staticmethod
    def end(real: Any, attrs: dict[str, Any], events: Any, status: Status | None, end: int) -> None:
        if not real.is_recording():
            return  # the program ended it itself: the SDK exported it then, as for any span
        real.set_attributes(attrs)
        for name, attributes, timestamp in events:
            real.add_event(name, attributes, timestamp)
        if status is not None and status.status_code is not StatusCode.UNSET:
            real.set_status(status)
        real.end(end_time=end)


def make_tracer(provider: Any) -> _Tracer | None:
    """taskwatch's tracer on a TracerProvider, or None when it records nothing."""
    tracer = provider.get_tracer(SCOPE, VERSION)
    if isinstance(tracer, trace.NoOpTracer):
        return None
    return _Tracer(provider, tracer)


# ---------------------------------------------------------------------------------------------


class TaskSpans:
    """Turns the records of one installed State into spans; the probe hooks and finding listener."""

    def __init__(self, state: State, providers: Any, metrics: Any) -> None:
        options = state.options
        self.state = state
        self.all = options.spans == "all"
        self.none = options.spans == "none"
        self.threshold = options.span_threshold
        self.providers = providers  # .tracer() -> (TracerProvider or None, final), .generation
        self.metrics: Any = None
        # What the C hot path reads (see c_gate): the duration histogram's record(), or None
        # while durations go nowhere (no MeterProvider set yet: taskwatch's thread looks for one
        # once a second, see set_metrics); the histogram's attributes by outcome.
        self.gate_state: list[Any] = [None, {}]
        self.closed = False
        self.outcomes: dict[str, dict[str, str]] = {}
        self.set_metrics(metrics)
        self.bound: Any = False
        self.backend: Any = None
        self.final = -1  # the providers' generation when the bound provider cannot change any more
        self.live: collections.OrderedDict[int, TaskRecord] = collections.OrderedDict()
        self.ended: collections.OrderedDict[int, SpanContext] = collections.OrderedDict()
        self.pending: dict[int, list[tuple[str, Any, int]]] = {}
        # blocked-loop findings of a task that was done but not yet through its done callback
        # (uvloop runs the heartbeat first): their spans wait for the task's own
        # children that ended while their parent task ran without a span: their spans wait for
        # the parent's (see _hold), in the same lists, keyed by the parent's id
        self.deferred: dict[int, list[Any]] = {}
        self.held: collections.deque[tuple[float, int, Any, Any]] = collections.deque()
        self.held_count = 0
        self.expiry_armed = False
        self.mains: dict[int, bool] = {}  # task id -> is its loop's main task (see _is_main)
        self.root_findings: dict[tuple[str, Any], int] = {}
        self.exported = 0
        self.dropped_events = 0
        self.names: dict[int, tuple[Any, str, dict[str, Any]]] = {}
        # id(API span) -> its TaskSpan, for the live task spans: tells taskwatch's spans from the
        # program's when one is current (the API has no other public way to tell)
        self.owned: dict[int, TaskSpan] = {}
        self.sites: dict[tuple[int, int], tuple[Any, tuple[str, int, str] | None]] = {}
        self.bases: dict[tuple[int, int, int], tuple[Any, Any, dict[str, Any]]] = {}
        set_base_dir()

    def set_metrics(self, metrics: Any) -> None:
        self.metrics = metrics
        state = self.gate_state
        state[0] = None
        if metrics is None:
            return
        self.outcomes = state[1] = metrics.outcomes
        if not (metrics.on_api_provider and _no_meter_provider()):
            state[0] = metrics.record_duration
            return
        # No MeterProvider yet: recording would do nothing, and the hot path skips it. taskwatch's
        # thread looks for one once a second (a provider set later loses at most a second).
        me = weakref.ref(self)

        def look() -> float | None:
            spans = me()
            if spans is None or spans.closed or spans.metrics is not metrics:
                return None
            try:
                if _no_meter_provider():
                    return time.monotonic() + 1.0
                spans.gate_state[0] = metrics.record_duration
            except BaseException:
                internal_error("OpenTelemetry metrics")
            return None

        self.state.ticker.at(time.monotonic() + 1.0, look)

    @property
    def record_duration(self) -> Any:
        """The task duration histogram's record(), or None when durations go nowhere."""
        return self.gate_state[0]

    # -- provider ---------------------------------------------------------------------------------
    def get_backend(self) -> Any:
        providers = self.providers
        if self.final == providers.generation:
            return self.backend
        provider, final = providers.tracer()
        if provider is not self.bound:
            self._bind(provider)
        self.final = providers.generation if final else -1
        return self.backend

    def _bind(self, provider: Any) -> Any:
        backend = None
        if provider is not None:
            try:
                backend = make_tracer(provider)
            except BaseException:
                internal_error("OpenTelemetry tracer provider")
        self.bound = provider
        self.backend = backend
        return backend

    # -- hot path: task factory -------------------------------------------------------------------
    def on_create_interesting(self, rec: TaskRecord, context: Any) -> None:
        """``spans="interesting"``: a span now only if a recording span is current; else
        remember the parent."""
        ctx = otel_context.get_current()
        span = trace.get_current_span(ctx)
        if span is INVALID_SPAN or not span.is_recording():
            rec.span = rec.parent
            return
        self._start_eager(rec, context, ctx, span)

    def c_gate(self) -> tuple[Any, ...] | None:
        """For the C hot path (spans="interesting"): what on_create_interesting and on_end test,
        so a task created under no span that ends quickly and cleanly costs no Python call:

        (this object, ``trace.get_current_span``, ``trace.INVALID_SPAN``, TaskSpan, SAMPLED_OUT,
        span_threshold, the record flags that mean a finding, pending, deferred, gate_state).

        At creation C calls ``get_current_span()``: INVALID_SPAN (none current) means no span,
        anything else calls ``on_create``. At the end it skips
        ``on_end`` for a task without a TaskSpan that finished within the threshold, with no
        finding and nothing in ``pending``/``deferred`` for it, while durations go nowhere."""
        if self.all or self.none:
            return None
        return (self, trace.get_current_span, INVALID_SPAN, TaskSpan, SAMPLED_OUT,
                float(self.threshold), _FLAGGED, self.pending, self.deferred, self.gate_state)

    def on_create_all(self, rec: TaskRecord, context: Any) -> None:
        if _loop_own(rec):
            rec.span = rec.parent  # the loop's own housekeeping (shutdown_asyncgens...): no span
            return
        ctx = otel_context.get_current()
        self._start_eager(rec, context, ctx, trace.get_current_span(ctx))

    def _start_eager(self, rec: TaskRecord, context: Any, ctx: Any, current: Any) -> None:
        """The task's span, started now (its creation time) under the span current where it was
        created, and made current in the task's own context."""
        backend = self.get_backend()
        if backend is None:
            rec.span = rec.parent
            return
        parent = None
        if current is not INVALID_SPAN:
            parent = current.get_span_context()
            if not parent.is_valid:
                parent = None
        start_ctx = ctx
        owner = rec.parent
        if owner is not None and owner.__class__ is TaskRecord:
            # The parent task's span could not be made current (its context was the caller's, as
            # for asyncio.run's main task): while nothing else was opened since, it is the parent.
            try:
                theirs = owner.span
            except AttributeError:
                theirs = None
            if (theirs.__class__ is TaskSpan and not theirs.attached and theirs.creator is current
                    and not theirs._ended):
                parent = theirs._ctx
                start_ctx = trace.set_span_in_context(theirs.real, ctx)
        code = rec.coro
        entry = self.names.get(id(code))
        name = entry[1] if entry is not None and entry[0] is code else self._name(code)
        start = wall_ns(rec.created)
        real = backend.start(name, parent, start_ctx, start)
        if real is None:
            rec.span = SAMPLED_OUT
            return
        span = TaskSpan(real, parent, start, name)
        span.creator = current
        rec.span = span
        self.owned[id(real)] = span
        live = self.live
        live[rec.id] = rec
        if len(live) > _MAX_LIVE:
            live.popitem(last=False)
        if context is not None:
            context.run(otel_context.attach, trace.set_span_in_context(real, ctx))
            span.attached = True

    def owner_of(self, span: Any) -> TaskSpan | None:
        """The live TaskSpan whose API span ``span`` is (None: not one of taskwatch's)."""
        mine = self.owned.get(id(span))
        return mine if mine is not None and mine.real is span else None

    # -- hot path: done callback ------------------------------------------------------------------
    def on_end(self, rec: TaskRecord, task: Any) -> None:
        try:
            duration = rec.ended - rec.created
            record = self.record_duration  # the task duration histogram's record(), or None
            if record is not None:
                record(duration, self.outcomes.get(rec.state) or _NO_OUTCOME)
            try:
                span = rec.span
            except AttributeError:  # created before OpenTelemetry was enabled
                span = rec.parent
            if span.__class__ is TaskSpan:
                self._finish(rec, span, wall_ns(rec.ended))
                if self.deferred:
                    self._flush(rec.id, span._ctx)
                return
            if span is SAMPLED_OUT:
                return
            if self.none:
                rec.span = None
                return
            awaited = ((self.pending and rec.id in self.pending)
                       or (self.deferred and rec.id in self.deferred))
            if (rec.state is FINISHED and duration < self.threshold and not rec.flags & _FLAGGED
                    and not awaited and (not self.all or (_loop_own(rec)))):
                rec.span = None
                return
            if (not self.all and rec.state is not FAILED and not rec.flags & _FLAGGED
                    and not awaited and self._not_interesting(rec, task)):
                rec.span = None
                return
            rec.span = None
            self._export_ended(rec, span if span.__class__ is TaskRecord else rec.parent, 0)
            if self.held:
                self._expire_held()
        except BaseException:
            internal_error("OpenTelemetry task end")

    def _not_interesting(self, rec: TaskRecord, task: Any) -> bool:
        """spans="interesting", for a task that ran long or was cancelled, with no failure, no
        finding and nothing waiting for its span: True when that alone does not make it worth a
        span. A library's own task that the library cancelled on its own close path (aiohttp's
        connection handler when the connection closes: no line of the program involved) ended
        as the library meant it to, and its length is the connection's. A loop's main task (the
        one ``asyncio.run`` or ``run_until_complete`` runs) lasts as long as the program: as a
        trace of its own it would be one span the length of the process."""
        if rec.state is CANCELLED and _library_cancelled(rec):
            return True
        return rec.parent is None and self._is_main(rec, task)

    # -- building spans ---------------------------------------------------------------------------
    def _export_ended(self, rec: TaskRecord, parent: Any, depth: int) -> Any:
        """Export an ended task that has no span yet, with its own start and end times; or, when
        its parent task is still running without a span, hold it until that parent ends: then
        ``rec`` itself is returned (what waits for its span waits for it, see _parent_context)."""
        backend = self.get_backend()
        if backend is None:
            return None
        pctx = self._parent_context(parent, depth + 1)
        if pctx.__class__ is TaskRecord:  # a parent still running without a span, or held
            if self._hold(pctx, rec):
                return rec
            pctx = None
        return self._build(rec, pctx)

    def _build(self, rec: TaskRecord, pctx: SpanContext | None) -> SpanContext | None:
        """The span of an ended task under ``pctx``; then what waited for it (held children,
        blocks) under it."""
        backend = self.get_backend()
        if backend is None:
            return None
        name = self._name(rec.coro)
        start = wall_ns(rec.created)
        real = backend.start(name, pctx, None, start)
        ctx = None
        if real is not None:
            span = TaskSpan(real, pctx, start, name)
            self._finish(rec, span, wall_ns(rec.ended))
            ctx = span._ctx
        if self.deferred:
            self._flush(rec.id, ctx)
        return ctx

    def _flush(self, task_id: int, ctx: SpanContext | None) -> None:
        """The task's span was just exported (``ctx``; None: it has none): export what waited for
        it under it: its children that ended while it ran, the loop blocks it caused."""
        waiting = self.deferred.pop(task_id, None)
        if not waiting:
            return
        for item in waiting:
            self._export_held(item, ctx)

    def _export_held(self, item: Any, ctx: SpanContext | None) -> None:
        """Export what waited for a parent: under ``ctx``, or as a root (None)."""
        if item.__class__ is TaskRecord:
            self.held_count -= 1
            self._build(item, ctx)
        elif item.__class__ is _FindingSpan:
            self._finding_span(item.finding, ctx)
        else:
            self._block_span(item, ctx)

    def _hold(self, parent: TaskRecord, item: Any) -> bool:
        """Keep ``item`` (an ended child's record, or a blocked-loop finding) until the running
        ``parent`` ends: a span is never exported before its parent can be. At the latest after
        ``_HOLD_S`` it goes out without that parent (a root), so a long-lived parent does not
        keep what it made out of sight. False when the bounds are reached (export it now)."""
        deferred = self.deferred
        if self.held_count >= _MAX_PENDING or (parent.id not in deferred
                                                and len(deferred) >= _MAX_PENDING):
            return False
        loop = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop's thread (a finding from taskwatch's thread)
            found = self._find_live(parent.id)
            loop = found[1].get_loop() if found is not None else None
        deferred.setdefault(parent.id, []).append(item)
        if item.__class__ is TaskRecord:
            self.held_count += 1
        self.held.append((time.monotonic() + _HOLD_S, parent.id, item,
                          weakref.ref(loop) if loop is not None else None))
        self._arm_expiry()
        return True

    def _arm_expiry(self) -> None:
        """One ticker job at a time: at the first hold's deadline, ask that hold's loop to
        release what waited too long (built on the loop's thread, like every span)."""
        if self.expiry_armed or not self.held:
            return
        self.expiry_armed = True
        spans = weakref.ref(self)

        def job() -> float | None:
            me = spans()
            if me is None or me.closed:
                return None
            me.expiry_armed = False
            if not me.held:
                return None
            due, _, _, loop_ref = me.held[0]
            if due > time.monotonic():
                me.expiry_armed = True
                return due
            loop = loop_ref() if loop_ref is not None else None
            try:
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(me._expire_held)
                    return None
            except RuntimeError:  # closed meanwhile
                pass
            me.expiry_armed = True
            return time.monotonic() + _HOLD_S  # no loop to run it: close() releases it
        self.state.ticker.at(self.held[0][0], job)

    def _expire_held(self) -> None:
        """Release, as roots, what waited longer than ``_HOLD_S`` for a parent still running."""
        try:
            held, now = self.held, time.monotonic()
            while held and held[0][0] <= now:
                _, parent_id, item, _ = held.popleft()
                self._release(parent_id, item)
            self._arm_expiry()
        except BaseException:
            internal_error("OpenTelemetry held spans")

    def _release(self, parent_id: int, item: Any) -> None:
        waiting = self.deferred.get(parent_id)
        if not waiting:
            return
        for i, other in enumerate(waiting):
            if other is item:
                del waiting[i]
                break
        else:
            return  # its parent ended and exported it meanwhile
        if not waiting:
            del self.deferred[parent_id]
        self._export_held(item, None)

    def _parent_context(self, parent: Any, depth: int) -> Any:
        """The SpanContext of a parent task (a live record or an ended one's tuple), exporting it
        if it ended and has none yet; a record when the parent's span cannot be exported yet (the
        parent is still running without a span, or waits itself for its own parent): the child
        waits for that record's span (see _hold); None for a root. The loop's main task and asyncio's
        own tasks (accepting a connection) are no parents: the child parents to what is above them
        (the main task: nothing)."""
        if parent is None or depth > _PARENT_DEPTH:
            return None
        if parent.__class__ is TaskRecord:
            try:
                theirs = parent.span
            except AttributeError:
                theirs = None
            if theirs.__class__ is TaskSpan:
                return theirs._ctx
            if theirs.__class__ is SpanContext:
                return theirs
            if theirs is SAMPLED_OUT:
                return None
            above = theirs if theirs.__class__ is TaskRecord else parent.parent
            if parent.internal:
                return self._parent_context(above, depth + 1)
            if parent.parent is None and self._is_main(parent, None):
                return None
            if parent.state is PENDING:
                return parent
            if parent.ended:
                parent.span = None
                return self._export_ended(parent, above, depth)
            return None
        found = self._context_for_id(parent[0], depth, wait=True)
        return None if found is _ROOT else found

    def _context_for_id(self, task_id: int, depth: int, wait: bool) -> Any:
        """A task's SpanContext by id (exporting it if it ended without one); with ``wait``, a
        running task without a span gives its record (see _parent_context), the loop's main task
        ``_ROOT`` (it parents nothing); else None."""
        ctx = self.ended.get(task_id)
        if ctx is not None:
            return ctx
        rec = self.live.get(task_id)
        if rec is not None:
            theirs = getattr(rec, "span", None)
            if theirs.__class__ is TaskSpan:
                return theirs._ctx
        rec = self._find_ended(task_id)
        if rec is not None:
            theirs = getattr(rec, "span", None)
            if theirs.__class__ is SpanContext:
                return theirs
            if theirs.__class__ is TaskSpan:
                return theirs._ctx
            if theirs is SAMPLED_OUT:
                return None
            if wait:  # asked for as a parent
                if self.mains.get(rec.id):
                    return _ROOT
                if rec.internal:
                    return self._parent_context(rec.parent, depth + 1)
            rec.span = None
            return self._export_ended(rec, rec.parent, depth)
        if wait:
            found = self._find_live(task_id)
            if found is not None:
                rec, task = found
                theirs = getattr(rec, "span", None)
                if theirs.__class__ is TaskSpan:
                    return theirs._ctx
                if theirs is SAMPLED_OUT:
                    return None
                if rec.internal:
                    return self._parent_context(
                        theirs if theirs.__class__ is TaskRecord else rec.parent, depth + 1)
                if rec.parent is None and self._is_main(rec, task):
                    return _ROOT
                return rec
        return None

    def _is_main(self, rec: TaskRecord, task: Any) -> bool:
        """Whether a task without a parent task is its loop's main task: the one
        ``run_until_complete`` (``asyncio.run``, ``uvloop.run``, ``Runner.run``) runs: on its loop's
        thread, that function's frame holds it; elsewhere, it has that function's done callback.
        On the loop's thread the loop's tasks are not scanned: ``all_tasks()`` sees tasks done,
        which ends their spans then, not when the program looks."""
        mains = self.mains
        known = mains.get(rec.id)
        if known is not None:
            return known
        main = _run_by_loop(rec, task)
        if not main:
            if task is None and rec.state is PENDING:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:  # not on a loop's thread (a finding): find the task
                    found = self._find_live(rec.id)
                    task = found[1] if found is not None and found[0] is rec else None
            if task is None or task.done():
                return False  # not known here: ask again later
            main = any(getattr(cb, "__qualname__", None) in _RUN_CALLBACKS
                       for cb, _ in getattr(task, "_callbacks", None) or ())
        if len(mains) >= _MAX_CACHE:
            mains.clear()
        mains[rec.id] = main
        return main

    def _find_ended(self, task_id: int) -> TaskRecord | None:
        state = self.state
        for probe in state.live_probes():
            for rec in reversed(list(probe.history)):
                if rec.id == task_id:
                    return rec
        with state.lock:
            retired = list(state.retired_history)
        for rec in reversed(retired):
            if rec.id == task_id:
                return rec
        return None

    def _find_live(self, task_id: int) -> tuple[TaskRecord, Any] | None:
        found = self.state.find_live(task_id)
        if found is None or found[0].state is not PENDING:
            return None
        return found

    def _finish(self, rec: TaskRecord, span: TaskSpan, end: int, outcome: str | None = None) -> None:
        """End the task's span with everything known about the task; forget the span object."""
        if span._ended:
            return
        span._ended = True
        self.owned.pop(id(span.real), None)
        attrs = self._task_attributes(rec, outcome)
        events: Any = ()  # most tasks: none, and no list is made
        if rec.cancels:
            events = [*map(self._cancel_event, rec.cancels)]
        status = None
        if rec.state is FAILED:
            attrs["error.type"] = rec.exc_type
            status = Status(StatusCode.ERROR, rec.exc_message or rec.exc_type)
            events = [*events, ("exception", _exception_event(rec), end)]
        if self.pending:
            waiting = self.pending.pop(rec.id, None)
            if waiting:
                events = [*events, *waiting]
        if len(events) > 1:
            events = sorted(events, key=_event_time)
        rec.span = span._ctx
        self.live.pop(rec.id, None)
        if rec.state is not FINISHED or rec.flags & _FLAGGED or rec.live_children:
            # late findings (a lost exception found at collection) and children that outlive
            # the task find its span by id, even after its record left the history ring
            ended = self.ended
            ended[rec.id] = span._ctx
            if len(ended) > _MAX_ENDED:
                ended.popitem(last=False)
        _Tracer.end(span.real, attrs, events, status, end)
        self.exported += 1

    def _name(self, code: Any) -> str:
        return self._code(code)[1]

    def _code(self, code: Any) -> tuple[Any, str, dict[str, Any]]:
        entry = self.names.get(id(code))
        if entry is None or entry[0] is not code:
            name = _sites.qualified_name(code)
            attrs: dict[str, Any] = {"code.function.name": name}
            if code is not None:
                attrs["code.file.path"] = file_path(code.co_filename)
                attrs["code.line.number"] = code.co_firstlineno
            entry = (code, name, attrs)
            if len(self.names) >= _MAX_CACHE:
                self.names.clear()
            self.names[id(code)] = entry
        return entry

    def _frame(self, stack: tuple[Any, ...] | None) -> tuple[str, int, str] | None:
        """The innermost frame of a captured stack as (file, line, module.function), cached: a
        creation site or a cancel() site is resolved once, not once per span."""
        if not stack:
            return None
        key = (id(stack[0]), stack[1])
        entry = self.sites.get(key)
        if entry is None or entry[0] is not stack[0]:
            frame = _sites.site(stack)
            where = None if frame is None else (file_path(frame.file), frame.line,
                                                _function_name(frame))
            entry = (stack[0], where)
            if len(self.sites) >= _MAX_CACHE:
                self.sites.clear()
            self.sites[key] = entry
        return entry[1]

    def _site(self, stack: tuple[Any, ...] | None) -> dict[str, Any] | None:
        where = self._frame(stack)
        if where is None:
            return None
        return {"taskwatch.creation.file.path": where[0],
                "taskwatch.creation.line.number": where[1],
                "taskwatch.creation.function.name": where[2]}

    def _cancel_event(self, req: Any) -> tuple[str, Any, int]:
        """A cancel() request as a span event: where, by which task, with which message."""
        attrs: dict[str, Any] = {}
        where = self._frame(req.stack)
        if where is not None:
            attrs["taskwatch.cancel.file.path"] = where[0]
            attrs["taskwatch.cancel.line.number"] = where[1]
            attrs["taskwatch.cancel.function.name"] = where[2]
        by = req._by  # the canceller's cheap key, or its brief once something formatted it
        if by is not None:
            if by.__class__ is tuple:
                pid, name, coro = by[0], by[1], self._name(by[2])
            else:
                pid, name, coro = by["id"], by.get("name"), by.get("coro")
            attrs["taskwatch.cancel.by_task.id"] = pid
            if name:
                attrs["taskwatch.cancel.by_task.name"] = name
            if coro:
                attrs["taskwatch.cancel.by_task.coroutine"] = coro
        if req.message is not None:
            attrs["taskwatch.cancel.message"] = req.message
        if req.via is not None:
            attrs["taskwatch.cancel.via_task.id"] = req.via
        return ("taskwatch.cancel", attrs, wall_ns(req.at))

    def _task_attributes(self, rec: TaskRecord, outcome: str | None = None) -> dict[str, Any]:
        code = rec.coro
        stack = rec.stack
        where = stack[0] if stack else None
        key = (id(code), id(where), stack[1] if stack else -1)
        entry = self.bases.get(key)
        if entry is None or entry[0] is not code or entry[1] is not where:
            base = dict(self._code(code)[2])
            site = self._site(stack)
            if site:
                base.update(site)
            entry = (code, where, base)
            if len(self.bases) >= _MAX_CACHE:
                self.bases.clear()
            self.bases[key] = entry
        attrs = entry[2].copy()
        attrs["taskwatch.task.id"] = rec.id
        if rec.name is not None:
            attrs["taskwatch.task.name"] = rec.name
        attrs["taskwatch.task.outcome"] = outcome or rec.state
        parent = rec.parent
        if parent is not None:
            if parent.__class__ is TaskRecord:
                pid, pcoro = parent.id, parent.coro
            else:
                pid, pcoro = parent[0], parent[2]
            # No parent name: a record learns it only when its task ends, so it would be on the
            # children that end after their parent and not on the others (as in the C span end).
            attrs["taskwatch.parent_task.id"] = pid
            attrs["taskwatch.parent_task.coroutine"] = self._name(pcoro)
        if rec.internal:
            attrs["taskwatch.task.internal"] = True
        if rec.flags & RELEASED:  # seen done only when freed: the end is an upper bound
            attrs["taskwatch.task.closed"] = "released"
        return attrs

    def emit(self, name: str, parent: SpanContext | None, start: int, end: int,
             attrs: dict[str, Any], status: Status | None = None,
             events: list[tuple[str, Any, int]] | None = None) -> SpanContext | None:
        """A complete span (a loop block, a finding): start, end and everything known."""
        backend = self.get_backend()
        if backend is None:
            return None
        real = backend.start(name, parent, None, start)
        if real is None:
            return None
        _Tracer.end(real, attrs, events or (), status, max(end, start))
        self.exported += 1
        return real.get_span_context()  # type: ignore[no-any-return]

    # -- cancellations ----------------------------------------------------------------------------
    def on_cancel(self, task: Any, rec: TaskRecord) -> None:
        """``task.cancel()`` was just recorded (``rec.cancels[-1]``). When the task has no live span
        of taskwatch's (spans="interesting" and nothing made one yet: a task whose cancel a
        ``timeout()`` withdraws then ends normally and is never exported), the span the program
        or its instrumentation made current inside the task (a request's span) gets the
        ``taskwatch.cancel`` event now, while it still records: the request's trace shows what
        cut it short. Needs ``Task.get_context()`` (3.12+)."""
        if self.none or self.closed or not rec.cancels:
            return
        own = getattr(rec, "span", None)
        if own.__class__ is TaskSpan and not own._ended:
            return  # its own span carries the event when the task ends
        get_context = getattr(task, "get_context", None)
        if get_context is None:
            return
        try:
            span = get_context().run(trace.get_current_span)
        except RuntimeError:  # the task cancels itself: its context is the current one
            span = trace.get_current_span()
        if not span.is_recording() or self.owner_of(span) is not None:
            return  # none, or another task's span of taskwatch's (it records its own cancels)
        name, attrs, at = self._cancel_event(rec.cancels[-1])
        attrs["taskwatch.task.id"] = rec.id
        task_name = task.get_name()
        if task_name:
            attrs["taskwatch.task.name"] = str(task_name)
        if rec.coro is not None:
            attrs["taskwatch.task.coroutine"] = self._name(rec.coro)
        span.add_event(name, attrs, at)

    # -- findings ---------------------------------------------------------------------------------
    def on_finding(self, finding: Finding) -> None:
        try:
            if self.closed:
                return
            metrics = self.metrics
            if metrics is not None:
                metrics.finding(finding)
            if self.none:
                return
            task = finding.task
            task_id = task.get("id") if task else None
            if finding.kind == "blocked-loop":
                self._blocked_loop(finding, task_id)
            elif task_id is None:
                self._root_finding(finding)
            else:
                self._task_finding(finding, task_id)
        except BaseException:
            internal_error("OpenTelemetry finding")

    def _task_finding(self, finding: Finding, task_id: int) -> None:
        event = _finding_event(finding)
        rec = self.live.get(task_id)
        span = getattr(rec, "span", None) if rec is not None else None
        if span.__class__ is TaskSpan and not span._ended:
            span.real.add_event(*event)
            if finding.kind == "destroyed-pending":  # the task will never end: end its span now
                self._finish(rec, span, epoch_ns(finding.time), outcome="destroyed")
            return
        ctx = self._context_for_id(task_id, 0, wait=False)
        if ctx.__class__ is TaskRecord:  # its span waits for its parent's: the event goes on it
            ctx = None
        elif ctx is not None:  # the task's span has ended: a short child span
            self._finding_span(finding, ctx)
            return
        if finding.kind == "destroyed-pending":
            parent = (finding.task or {}).get("parent") or {}
            pctx = self._context_for_id(parent["id"], 0, wait=True) if parent.get("id") else None
            if pctx is _ROOT:
                pctx = None
            elif pctx.__class__ is TaskRecord:  # its parent runs on: wait for it
                if self._hold(pctx, _FindingSpan(finding)):
                    return
                pctx = None
            self._finding_span(finding, pctx)
            return
        pending = self.pending
        waiting = pending.get(task_id)
        if waiting is None:
            if len(pending) >= _MAX_PENDING:
                self.dropped_events += 1
                return
            waiting = pending[task_id] = []
        if len(waiting) < _MAX_EVENTS:
            waiting.append(event)
        else:
            self.dropped_events += 1

    def _finding_span(self, finding: Finding, parent: SpanContext | None) -> None:
        at = epoch_ns(finding.time)
        attrs = _finding_attributes(finding)
        _add_task_attributes(attrs, finding.task, "code.function.name")
        status = Status(StatusCode.ERROR, finding.kind) if finding.severity == "error" else _UNSET
        self.emit(f"taskwatch {finding.kind}", parent, at, at, attrs, status)

    def _root_finding(self, finding: Finding) -> None:
        key = (finding.kind, finding.site)
        seen = self.root_findings.get(key, 0)
        if seen >= _MAX_ROOT_FINDING_SPANS:
            return
        if len(self.root_findings) >= _MAX_CACHE:
            self.root_findings.clear()
        self.root_findings[key] = seen + 1
        self._finding_span(finding, None)

    def _blocked_loop(self, finding: Finding, task_id: int | None,
                      parent: SpanContext | None = None) -> None:
        data = finding.data
        started = data.get("started_at")
        ended = data.get("ended_at")
        if started is None or ended is None:
            return
        if parent is None and task_id is not None:
            parent = self._context_for_id(task_id, 0, wait=True)
            if parent is _ROOT:  # the loop's main task: the block is a root of its own
                self._block_span(finding, None)
                return
            if parent.__class__ is TaskRecord:  # still running, without a span: wait for it
                if self._hold(parent, finding):
                    return
                parent = None
            if parent is None:  # the search may have seen the task done, and closed it
                parent = self.ended.get(task_id)
            if parent is None and (finding.task or {}).get("state") == "pending":
                # done, but its done callback has not run yet: the span waits for the task's
                deferred = self.deferred
                if task_id in deferred or len(deferred) < _MAX_PENDING:
                    deferred.setdefault(task_id, []).append(finding)
                    return
        self._block_span(finding, parent)

    def _block_span(self, finding: Finding, parent: SpanContext | None) -> None:
        data = finding.data
        started = data.get("started_at")
        ended = data.get("ended_at")
        if started is None or ended is None:
            return
        attrs = _finding_attributes(finding)
        attrs["taskwatch.block.duration"] = float(data.get("duration_s") or 0.0)
        attrs["taskwatch.block.cpu_time"] = float(data.get("cpu_s") or 0.0)
        attrs["taskwatch.block.samples"] = int(data.get("samples") or 0)
        top = [f"{_frame_text(item['frame'])} ({item['share']:.0%})"
               for item in data.get("top_frames") or () if item.get("frame")]
        if top:
            attrs["taskwatch.block.top_frames"] = tuple(top)
        _add_frame_attributes(attrs, "code", data.get("blocked_at"))
        stack = data.get("stack")
        if stack:
            attrs["code.stacktrace"] = "".join(
                f'  File "{file_path(f["file"])}", line {f["line"]}, in {f["function"]}\n'
                for f in stack)
        _add_task_attributes(attrs, finding.task, "taskwatch.task.coroutine")
        self.emit(BLOCK_SPAN, parent, epoch_ns(started), epoch_ns(ended), attrs)

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Uninstall: export the spans of tasks still running (so no exported child lacks its
        parent), then stop."""
        if self.closed:
            return
        now = time.time_ns()
        for rec in list(self.live.values()):
            span = getattr(rec, "span", None)
            if span.__class__ is TaskSpan and not span._ended:
                try:
                    self._finish(rec, span, now, outcome="pending")
                except BaseException:
                    internal_error("OpenTelemetry close")
        held = self.held
        while held:  # what still waits for a running parent goes out as roots
            _, parent_id, item, _ = held.popleft()
            try:
                self._release(parent_id, item)
            except BaseException:
                internal_error("OpenTelemetry close")
        self.live.clear()
        self.owned.clear()
        self.pending.clear()
        self.deferred.clear()
        self.closed = True

    def stats(self, out: dict[str, Any]) -> None:
        out["spans_exported"] = self.exported
        out["span_events_dropped"] = self.dropped_events


def _add_frame_attributes(attrs: dict[str, Any], prefix: str, frame: dict[str, Any] | None) -> None:
    """A report FRAME as ``{prefix}.file.path`` (absolute, normalized), ``.line.number``,
    ``.function.name`` (qualified: ``module.qualname``, as for the task's coroutine)."""
    if frame:
        attrs[f"{prefix}.file.path"] = file_path(frame["file"])
        attrs[f"{prefix}.line.number"] = frame["line"]
        attrs[f"{prefix}.function.name"] = _qualified(frame["file"], frame["function"])


def _add_task_attributes(attrs: dict[str, Any], task: dict[str, Any] | None, coro_key: str) -> None:
    """The finding's task (id, name, coroutine under ``coro_key``) on a finding or block span."""
    if not task:
        return
    attrs["taskwatch.task.id"] = task["id"]
    if task.get("name"):
        attrs["taskwatch.task.name"] = task["name"]
    if task.get("coro"):
        attrs[coro_key] = task["coro"]


def _loop_own(rec: TaskRecord) -> bool:
    """A task the event loop or asyncio made for itself (no user frame, asyncio's coroutine)."""
    code = rec.coro
    if code is None:
        return False
    return _sites.is_internal(code)


def _event_time(event: tuple[str, Any, int]) -> int:
    return event[2]


def _function_name(frame: _sites.Frame) -> str:
    return _qualified(frame.file, frame.function)


def _qualified(file: str, function: str) -> str:
    """``module.qualname`` of a frame's function (a FRAME's function is its code's qualname)."""
    return f"{_sites.module_of(file)}.{function}"


_paths: dict[str, str] = {}
_base_dir: list[str] = []  # the working directory when OpenTelemetry export was switched on


def set_base_dir() -> None:
    """Remember the working directory (at install): relative source paths are taken from it."""
    try:
        base = os.getcwd()
    except OSError:
        return
    if _base_dir != [base]:
        _base_dir[:] = [base]
        _paths.clear()


def file_path(path: str) -> str:
    """A source file's path in one form whatever the working directory: absolute and normalized
    (``/srv/app/jobs.py``, never ``../app/jobs.py`` or ``/srv/tests/../app/jobs.py``). A relative
    one (code compiled under a relative name) is taken from the working directory of the moment
    export was switched on, not of the moment it is exported; names in angle brackets
    (``<frozen runpy>``) are left as they are."""
    found = _paths.get(path)
    if found is None:
        found = path
        if path and not path.startswith("<"):
            try:
                if not os.path.isabs(path):
                    path_base = _base_dir[0] if _base_dir else os.getcwd()
                    found = os.path.join(path_base, path)
                found = os.path.normpath(found)
            except (OSError, ValueError):  # no working directory any more
                found = os.path.normpath(path)
        if len(_paths) >= _MAX_CACHE:
            _paths.clear()
        _paths[path] = found
    return found


def _frame_text(frame: dict[str, Any]) -> str:
    return f"{file_path(frame['file'])}:{frame['line']} in {frame['function']}"


def _exception_event(rec: TaskRecord) -> dict[str, Any]:
    lines = ["Traceback (most recent call last):\n"]
    for frame in _sites.resolve(rec.exc_stack):
        lines.append(f'  File "{file_path(frame.file)}", line {frame.line}, in {frame.function}\n')
        source = linecache.getline(frame.file, frame.line).strip()
        if source:
            lines.append(f"    {source}\n")
    lines.append(f"{rec.exc_type}: {rec.exc_message}\n" if rec.exc_message else f"{rec.exc_type}\n")
    return {"exception.type": rec.exc_type, "exception.message": rec.exc_message,
            "exception.stacktrace": "".join(lines)}


def _finding_attributes(finding: Finding) -> dict[str, Any]:
    attrs: dict[str, Any] = {"taskwatch.finding.kind": finding.kind,
                             "taskwatch.finding.severity": finding.severity,
                             "taskwatch.finding.message": finding.message}
    data = finding.data
    exc = data.get("exception")
    if exc:
        attrs["exception.type"] = exc.get("type") or ""
        attrs["exception.message"] = exc.get("message") or ""
    cancel = data.get("cancel")
    if cancel:
        _add_frame_attributes(attrs, "taskwatch.cancel", cancel.get("requested_at"))
        by = cancel.get("by_task")
        if by:
            attrs["taskwatch.cancel.by_task.id"] = by["id"]
            if by.get("name"):
                attrs["taskwatch.cancel.by_task.name"] = by["name"]
        if cancel.get("message") is not None:
            attrs["taskwatch.cancel.message"] = str(cancel["message"])
    parent = data.get("parent")
    if parent:
        attrs["taskwatch.parent_task.id"] = parent["id"]
    coroutine = data.get("coroutine")
    if coroutine:
        attrs["code.function.name"] = coroutine.get("name") or ""
        where = coroutine.get("created_at")
        if where:
            attrs["taskwatch.creation.file.path"] = file_path(where["file"])
            attrs["taskwatch.creation.line.number"] = where["line"]
    for key in ("age_s", "waited_s"):
        if data.get(key) is not None:
            attrs[f"taskwatch.finding.{key}"] = float(data[key])
    return attrs


def _finding_event(finding: Finding) -> tuple[str, Any, int]:
    return ("taskwatch.finding", _finding_attributes(finding), epoch_ns(finding.time))

class _FindingSpan:
    """A finding whose span waits for a running parent task (see TaskSpans._hold)."""

    __slots__ = ("finding",)

    def __init__(self, finding: Finding) -> None:
        self.finding = finding


_main_codes: list[Any] = []


def _run_codes() -> Any:
    """Code objects of the functions that run a loop's main task and hold it in a local named
    ``task`` or ``future``: ``Runner.run``, ``run_until_complete`` (asyncio's, under any wrapper)
    and taskwatch's own hooks around the loop's run methods (uvloop's is compiled)."""
    if not _main_codes:
        import asyncio.base_events
        import asyncio.runners

        codes = set()
        for func in (asyncio.runners.Runner.run, asyncio.base_events.BaseEventLoop.run_until_complete):
            while func is not None:
                code = getattr(func, "__code__", None)
                if code is not None:
                    codes.add(code)
                func = getattr(func, "__wrapped__", None)
        _main_codes.append(frozenset(codes))
    from .._core import _hooks

    return _main_codes[0], _hooks.RUN_CODES


def _run_by_loop(rec: TaskRecord, task: Any) -> bool:
    """Whether the task of ``rec`` is the one a loop-running function up this thread's stack
    runs as its loop's main task: a frame of ``Runner.run`` / ``run_until_complete`` holds it (or,
    for uvloop's compiled ``run_until_complete`` given a coroutine, that coroutine)."""
    coro = None
    if task is not None:
        try:
            coro = task.get_coro()
        except Exception:
            coro = None
    own, hooks = _run_codes()
    frame = sys._getframe(1)
    for _ in range(128):
        if frame is None:
            break
        code = frame.f_code
        if code in own or code in hooks:
            local = frame.f_locals
            for name in ("task", "future"):
                value = local.get(name)
                if value is None:
                    continue
                if (value is task or (coro is not None and value is coro)
                        or getattr(value, "_tw_rec", None) is rec
                        or (getattr(value, "cr_code", None) is rec.coro is not None
                            and getattr(value, "cr_frame", 1) is not None)):
                    return True
        frame = frame.f_back
    return False


def _library_cancelled(rec: TaskRecord) -> bool:
    """A library's own task (its coroutine is library code, and library code or the loop
    created it) that the library cancelled itself: every ``cancel()`` of it came from library
    code, or none did and it ended cancelled because a future of the library's it awaited was
    (aiohttp's connection handler when its connection closes). No line of the program is
    involved (as for taskwatch's findings, see ``_probe._library_affair``)."""
    stack = rec.stack
    cancels = [req.stack[0] for req in rec.cancels or () if req.stack]
    return _sites.library_affair(rec.coro, stack[0] if stack else None, *cancels)
