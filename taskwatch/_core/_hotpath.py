"""The per-task hot path: task factory, direct create_task and done callback, as closures.

Every task pays for this code, so it is written for the interpreter rather than for elegance:
closures over local names instead of attribute lookups, one Python call for the record, the frame
walk inlined, code objects looked up by ``id()`` (hashing a code object hashes its bytecode), and
nothing formatted. Rare paths (cancels, failures, findings) call back into the Probe.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import contextvars
import sys
import time
from collections.abc import Callable
from typing import Any

from . import _sites
from ._accel import speedups
from ._guard import internal_error
from ._flags import FOREIGN, PRECISE, RELEASED
from ._record import CANCELLED, FAILED, FINISHED, PENDING, TaskRecord
from ._task import _base_done
from ._task import task_class as _task_class

# The record of the task whose context is current: gives the parent of tasks created from plain
# callbacks (call_soon, protocol callbacks), where no task is running.
LINEAGE: contextvars.ContextVar[TaskRecord | None] = contextvars.ContextVar("taskwatch_task")


def _no_lineage(default: None) -> None:
    """LINEAGE.get when the lineage is off (``lineage=False``): no task's context carries it."""
    return default

# Coroutine wrappers of other libraries (uvloop.run, OpenTelemetry's asyncio instrumentation):
# id(code) -> (code, name of the local holding the user's coroutine), so names stay the user's.
WRAPPERS: dict[int, tuple[Any, str]] = {}


_EAGER_FACTORY = getattr(asyncio, "eager_task_factory", None)
_RUNNER_RUN = asyncio.runners.Runner.run.__code__
# 3.11-3.13 keep the running task per loop in this dict. 3.14 keeps C Tasks on the thread state
# (asyncio.current_task), and only asyncio's pure-Python Task still enters this dict, where
# current_task() does not look.
if sys.version_info < (3, 14):
    _current = asyncio.tasks._current_tasks.get
    _current_py = None
else:
    _current = asyncio.current_task
    _current_py = asyncio.tasks._current_tasks.get


def unwrap(coro: Any, code: Any) -> Any:
    """The user's coroutine code behind a known wrapper coroutine (its unstarted frame's local)."""
    entry = WRAPPERS.get(id(code))
    if entry is None or entry[0] is not code:
        return code
    try:
        inner = coro.cr_frame.f_locals.get(entry[1])
        return getattr(inner, "cr_code", None) or code
    except Exception:
        return code


def name_of(task: Any) -> str | None:
    """``task.get_name()`` for a task or future of any kind, None for one that has no name."""
    try:
        name = task.get_name()
        return name if name is None or name.__class__ is str else str(name)
    except Exception:
        return None


def outcome(task: Any) -> tuple[Any, bool, BaseException | None]:
    """(name, cancelled, exception) of a done task of any kind (a Task subclass, asyncio's
    pure-Python Task, a Future subclass, a duck-typed future), read the way ``close`` reads
    taskwatch's own tasks and without raising: what the object lacks reads as no name, not
    cancelled, no exception. Never calls ``exception()`` or ``result()`` (they would mark an error
    as retrieved, silencing asyncio's report of it)."""
    name = name_of(task)
    try:
        cancelled = bool(task.cancelled())
    except Exception:
        cancelled = False
    try:
        exc = task._exception
    except Exception:
        exc = None
    if not isinstance(exc, BaseException):
        exc = None
    return name, cancelled, exc


def is_done(task: Any) -> bool:
    """``task.done()`` for any kind of future, False when it cannot tell."""
    try:
        return bool(task.done())
    except Exception:
        return False


def build(probe: Any) -> tuple[Callable[..., Any], Callable[..., Any], Callable[[Any], None],
                                  Callable[[Any], None], Callable[[], dict[str, int]],
                                  Callable[[Callable[[TaskRecord], None]], None]]:
    """Make (factory, create_task, on_done, on_release, stats, retarget) for one probe (a
    ``_probe.Probe``: the hot path sits under it and calls back into it on rare paths)."""
    depth = probe.depth
    history = probe.history
    append = history.append
    maxlen = history.maxlen or 0
    done_ctx = probe.done_ctx
    internal = _sites._internal
    boundary = _sites._boundary
    classify = _sites.is_internal
    made_by_library = _sites.made_by_library
    capture_at_boundary = _sites.capture_at_boundary
    monotonic = time.monotonic
    getframe = sys._getframe
    copy_context = contextvars.copy_context
    lineage = probe.options.lineage  # off: no context of ours per task, parents only from tasks
    lineage_get = LINEAGE.get if lineage else _no_lineage
    lineage_set = LINEAGE.set
    current = _current
    current_py = _current_py
    wrappers = WRAPPERS
    use_c = speedups is not None and probe.options.speedups
    task_class = _task_class(use_c)
    record_class = TaskRecord
    created = finished = failed = cancelled = dropped = 0
    late: Callable[[TaskRecord], None] | None = None  # where records go once the loop retired
    precise = probe.precise  # every task gets a done callback (spans need exact ends)

    def record(loop: Any, coro: Any, frame: Any) -> TaskRecord | None:
        """Site, coroutine, parent and time, taken before the task exists (eager tasks may finish
        inside their constructor)."""
        nonlocal created
        try:
            cur = current(loop)
            if cur is None and current_py is not None:
                cur = current_py(loop)
            if cur is not None:
                if cur.__class__ is task_class:
                    try:
                        parent = cur._tw_rec
                    except AttributeError:  # its slot is not set yet
                        parent = None
                else:  # not watched, or a foreign kind of task: no AttributeError to raise
                    try:
                        parent = getattr(cur, "_tw_rec", None)
                    except Exception:
                        parent = None
                if parent.__class__ is not record_class:
                    # Ours, still in its constructor (an eager first step): its own context
                    # names it. Another kind of task without a record (a framework's
                    # asyncio.Task(), as aiohttp's per request): a parent taskwatch does not
                    # know, and its context's lineage names whoever created *it*.
                    parent = lineage_get(None) if cur.__class__ is task_class else None
                elif not parent.flags & PRECISE:
                    # A parent's end must be seen when it happens (orphaned children).
                    parent.flags |= PRECISE
                    if cur.__class__ is task_class:
                        cur.add_done_callback(on_done, context=done_ctx)
                    else:
                        watch_done(cur)
            else:
                parent = lineage_get(None)
            try:
                code = coro.cr_code
            except AttributeError:
                code = getattr(coro, "gi_code", None)
            if wrappers and id(code) in wrappers:
                code = unwrap(coro, code)
            # The user's stack: skip asyncio/taskwatch frames to the first user frame (stopping at
            # the loop's own frames: then a callback created the task), then keep contiguous user
            # frames outward. The common single-frame case allocates one small tuple.
            stack = None
            start = frame
            while frame is not None:
                fcode = frame.f_code
                entry = internal.get(id(fcode))
                if not (entry[1] if entry is not None and entry[0] is fcode else classify(fcode)):
                    site_code, site_lasti = fcode, frame.f_lasti
                    frame = frame.f_back if depth > 1 else None
                    if frame is not None:
                        fcode = frame.f_code
                        entry = internal.get(id(fcode))
                        if entry[1] if entry is not None and entry[0] is fcode else classify(fcode):
                            frame = None
                    if frame is None:
                        stack = (site_code, site_lasti)
                        break
                    out = [site_code, site_lasti, fcode, frame.f_lasti]
                    left = depth - 2
                    frame = frame.f_back
                    while left and frame is not None:
                        fcode = frame.f_code
                        entry = internal.get(id(fcode))
                        if entry[1] if entry is not None and entry[0] is fcode else classify(fcode):
                            break
                        out.append(fcode)
                        out.append(frame.f_lasti)
                        left -= 1
                        frame = frame.f_back
                    stack = tuple(out)
                    break
                if id(fcode) in boundary:  # a loop frame: the main task, or a callback's task
                    stack = capture_at_boundary(start, depth)
                    break
                frame = frame.f_back
            rec = record_class(stack, code, parent, monotonic())
            if code is not None:
                entry = internal.get(id(code))
                if (entry[1] if entry is not None and entry[0] is code else classify(code)) \
                        and made_by_library(start):
                    rec.internal = True  # asyncio's own tasks (shutdown_asyncgens, staggered...)
            if parent is not None:
                parent.live_children += 1
            created += 1
            return rec
        except BaseException:
            internal_error("task factory (record)")
            return None

    def own_context(rec: TaskRecord, context: Any, frame: Any) -> Any:
        """A fresh copy carrying the lineage; a caller's context is never modified, except the
        Runner's private one for its main task (callbacks of the main task then know it)."""
        if context is None:
            if not lineage and probe._on_create is None:
                return None  # the Task copies the context itself, as without taskwatch
            context = copy_context()
            if lineage:
                context.run(lineage_set, rec)
            if probe._on_create is not None:
                probe.call_on_create(rec, context)
            return context
        if lineage and frame is not None and frame.f_code is _RUNNER_RUN:
            try:
                context.run(lineage_set, rec)
                if probe._on_create is not None:
                    probe.call_on_create(rec, context)
                return context
            except RuntimeError:  # entered elsewhere: leave it alone
                pass
        if probe._on_create is not None:
            probe.call_on_create(rec, None)
        return context

    def undo(rec: TaskRecord | None) -> None:
        if rec is not None and rec.parent.__class__ is record_class:
            rec.parent.live_children -= 1

    def watch_done(task: Any) -> bool:
        """Add taskwatch's done callback to a task or future of any kind; False when it takes
        none (then its record closes with nothing: it stays pending)."""
        try:
            task.add_done_callback(on_done, context=done_ctx)
        except TypeError:  # a future-like object whose add_done_callback takes no context
            try:
                task.add_done_callback(on_done)
            except Exception:
                return False
        except AttributeError:
            return False
        return True

    def needs_done_callback(rec: TaskRecord) -> bool:
        """With the span gate (spans="interesting") only a task that got its span at creation
        needs a done callback; any other is closed when first seen done (see on_release)."""
        gate = probe._gate
        return gate is None or getattr(rec, "span", None).__class__ is gate[3]

    def attach(task: Any, rec: TaskRecord) -> None:
        try:
            if task.__class__ is task_class:
                task._tw_rec = rec
                task._tw_probe_release = on_release
                if precise and needs_done_callback(rec):
                    rec.flags |= PRECISE
                    task.add_done_callback(on_done, context=done_ctx)
                tb = task._source_traceback
            else:
                # Another factory's object: a Task subclass, asyncio's pure-Python Task, a Future
                # or a duck-typed future. Only its generic methods are used, with fallbacks.
                try:
                    task._tw_rec = rec
                except Exception:  # no room for the record: not watched
                    undo(rec)
                    return
                rec.flags |= FOREIGN
                # no __del__ of ours on it: only a done callback sees its end
                if watch_done(task):
                    rec.flags |= PRECISE
                try:
                    tb = task._source_traceback
                except Exception:
                    tb = None
                if not isinstance(tb, list):
                    return
            if tb:  # debug mode: drop taskwatch's frames, as the loop drops its own
                probe.trim_source_traceback(tb)
        except BaseException:
            internal_error("task factory (attach)")

    def create_task(loop: Any, coro: Any, name: Any, context: Any, frame: Any) -> Any:
        """Direct path for asyncio loops whose program set no factory: the task is built exactly
        as the loop builds it without one (the name goes to the constructor, so unnamed tasks get
        the same 'Task-N' numbers as without taskwatch)."""
        rec = record(loop, coro, frame)
        if rec is None:
            return task_class(coro, loop=loop, name=name, context=context)
        if context is None and probe._on_create is None:  # the common case, inlined
            if lineage:
                context = copy_context()
                context.run(lineage_set, rec)
        else:
            context = own_context(rec, context, frame)
        try:
            task = task_class(coro, loop=loop, name=name, context=context)
        except BaseException:
            undo(rec)
            raise
        if precise:
            attach(task, rec)
        else:
            task._tw_rec = rec
            task._tw_probe_release = on_release
            if task._source_traceback:
                probe.trim_source_traceback(task._source_traceback)
        return task

    def factory(loop: Any, coro: Any, context: Any = None, **kw: Any) -> Any:
        """The task factory installed on the loop: record, build (or delegate), watch."""
        frame = getframe(1)
        rec = record(loop, coro, frame)
        if kw and kw.get("eager_start", 0) is None:
            del kw["eager_start"]  # uvloop 0.23 on 3.13+ passes None for "not set"
        inner = probe._inner  # plain attributes: the properties are for writers
        try:
            if inner is None or inner is _EAGER_FACTORY:
                if rec is None:
                    pass
                elif context is None and probe._on_create is None:  # the common case, inlined
                    if lineage:
                        context = copy_context()
                        context.run(lineage_set, rec)
                else:
                    context = own_context(rec, context, frame)
                if inner is not None and "eager_start" not in kw:
                    kw["eager_start"] = True
                task = task_class(coro, loop=loop, context=context, **kw)
            else:
                if probe._on_create is not None and rec is not None:
                    probe.call_on_create(rec, None)
                if context is None:
                    task = inner(loop, coro, **kw)
                else:
                    task = inner(loop, coro, context=context, **kw)
        except BaseException:
            undo(rec)
            raise
        if rec is None:
            return task
        if precise or task.__class__ is not task_class:
            attach(task, rec)
        else:  # the common case, inlined
            task._tw_rec = rec
            task._tw_probe_release = on_release
            if task._source_traceback:
                probe.trim_source_traceback(task._source_traceback)
        return task

    def close(task: Any, rec: TaskRecord) -> None:
        """Close a record: outcome, counters, history; rare cases go to the probe."""
        nonlocal finished, failed, cancelled, dropped
        if task.__class__ is task_class:
            rec.name = task.get_name()
            is_cancelled = task.cancelled()
            exc = None if is_cancelled else task._exception
        else:  # another factory's object
            rec.name, is_cancelled, exc = outcome(task)
        if is_cancelled:
            rec.state = CANCELLED
            cancelled += 1
        else:
            if exc is None:
                rec.state = FINISHED
            else:
                rec.state = FAILED
                failed += 1
                probe.on_failed(task, rec, exc)
        if rec.cancels is not None:  # slow-cancel, swallowed-cancel
            probe.cancel_settled(task, rec)
        finished += 1
        parent = rec.parent
        if parent is not None and parent.__class__ is record_class:
            parent.live_children -= 1
            if parent.ended:  # keep no chain of ended records: a brief copy will do
                rec.parent = (parent.id, parent.name, parent.coro, parent.stack)
        if rec.live_children and not rec.internal:
            probe.schedule_orphan_check(rec)
        if late is not None:
            late(rec)
        else:
            if len(history) == maxlen:
                dropped += 1
            append(rec)
        if probe._on_end is not None:
            probe._on_end(rec, task)

    def on_done(task: Any) -> None:
        """Done callback of tasks whose end matters when it happens (cancelled, parents, spans)."""
        try:
            rec = task._tw_rec
        except Exception:  # an object of another kind that lost (or never had) its record
            return
        try:
            if rec.__class__ is record_class and not rec.ended:
                rec.ended = monotonic()
                close(task, rec)
        except BaseException:
            internal_error("task done callback")

    def on_release(task: Any, seen: bool = False) -> None:
        """From Task.__del__: the task object is being freed. Tasks without a done callback are
        closed here, which costs a fifth of a done callback; their end time is the release time.
        ``seen``: from done(), result() or exception(), when spans need ends; the task is closed
        if it is done (the first moment taskwatch sees it done)."""
        if seen and not precise:
            return
        try:
            rec = task._tw_rec
            if not rec.ended and (_base_done(task) if task.__class__ is task_class
                                  else is_done(task)):
                rec.ended = monotonic()
                if not seen:
                    rec.flags |= RELEASED
                close(task, rec)
        except BaseException:
            internal_error("task seen done" if seen else "task release")

    def stats() -> dict[str, int]:
        return {"tasks_created": created, "tasks_finished": finished, "tasks_failed": failed,
                "tasks_cancelled": cancelled, "dropped_history": dropped if maxlen else 0}

    def retarget(hook: Callable[[TaskRecord], None]) -> None:
        """After the loop retired: records closed later go to ``hook`` (the state's history)."""
        nonlocal late
        late = hook

    if not use_c or speedups is None:
        return factory, create_task, on_done, on_release, stats, retarget
    # The C recorder takes the common case (no factory of the program's, no context passed in) and
    # hands every other call to the Python closures above, which then use its record() and close()
    # so counters and decisions stay in one place.
    recorder = speedups.Recorder(
        probe=probe, py_factory=factory, py_create_task=create_task, outcome=outcome,
        watch_done=watch_done,
        at_boundary=capture_at_boundary, wrappers=WRAPPERS, unwrap=unwrap,
        current=asyncio.tasks._current_tasks,
        current_task=asyncio.current_task if sys.version_info >= (3, 14) else None,
        lineage=LINEAGE if lineage else None, task_type=task_class,
        record_type=TaskRecord, history=history, done_ctx=done_ctx,
        states=(PENDING, FINISHED, FAILED, CANCELLED), depth=depth, precise=precise)
    # Rebinding the names rebinds them for the closures above too (they read these cells).
    record = recorder.record  # noqa: F811
    close = recorder.close  # noqa: F811
    on_release = recorder  # the C Task's finalizer closes through the recorder directly
    on_done = recorder.on_done  # noqa: F811  # the same done callback in C, for the Python paths too
    return recorder, recorder.create_task, on_done, on_release, recorder.stats, recorder.retarget
