"""Probe: taskwatch's presence on one event loop.

A probe owns the loop's task factory (chained in front of whatever factory the program sets), the
per-task done callback, and the loop-level detectors. It touches only its own loop's tasks from the
loop's thread, so the hot path needs no locks.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import collections
import contextvars
import sys
import sysconfig
import time
import weakref
from typing import Any

from . import _findings, _handlers, _hotpath, _sites, _stacks, _task
from ._guard import internal_error
from ._hotpath import LINEAGE, WRAPPERS
from ._flags import (FOREIGN, PRECISE, REPORTED_LEAK, REPORTED_LOST, REPORTED_ORPHAN, REPORTED_SLOW,
                     REPORTED_SWALLOWED)
from ._record import CANCELLED, FAILED, FINISHED, PENDING, CancelRequest, TaskRecord, exception_brief

_monotonic = time.monotonic
_current_task = asyncio.current_task
_get_running_loop = asyncio._get_running_loop
# The runner's shutdown: it cancels the tasks still pending when the main coroutine has ended.
_RUNNER_SHUTDOWN = asyncio.runners._cancel_all_tasks.__code__
__all__ = ["Probe", "LINEAGE", "WRAPPERS", "FOREIGN", "is_awaited", "adopt"]

_EARLY = 0.002  # a slow-cancel deadline this close counts as reached (timers fire a little early)
_MAX_WAITING_FOR = 10  # tasks a slow-cancel finding names as what it waits for


class _Synced:
    """A probe attribute the C recorder keeps a copy of: setting it re-syncs the recorder."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, probe: Any, owner: type | None = None) -> Any:
        return self if probe is None else getattr(probe, self.attr)

    def __set__(self, probe: Any, value: Any) -> None:
        setattr(probe, self.attr, value)
        probe._sync()


class Probe:
    """taskwatch's state for one loop: factory, done callback, detectors, history."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: Any, inner: Any) -> None:
        """``state``: the installed ``_state.State`` (which makes the probes of its loops)."""
        self.loop_ref = weakref.ref(loop)
        self.state = state
        self.options = state.options
        self.factory: Any = None
        self._inner = inner
        self._on_create: Any = None
        self._on_end: Any = None
        self._gate: Any = None
        self.depth = state.options.stack_depth
        self.done_ctx = contextvars.Context()  # done callbacks run here: no context copy per task
        self.history: collections.deque[TaskRecord] = collections.deque(maxlen=state.options.history_size)
        # cancelled tasks not ended yet, in cancel order (slow-cancel); only the loop thread edits
        self._cancelling: dict[TaskRecord, tuple[Any, CancelRequest]] = {}
        self._slow_armed = False  # a slow-cancel job is on taskwatch's thread
        # (outer record id, weak ref to the awaited task's record, outer request) between an
        # awaiting task's cancel() and the awaited task's, which asyncio calls from inside it
        self._forward: tuple[int, Any, CancelRequest] | None = None
        self.loop_kind = type(loop).__module__.split(".")[0]
        self.watchdog: Any = None
        self.run_thread: int | None = None  # the thread running the loop, while it runs
        self.closed = False
        # OpenTelemetry sets this before loops attach: spans need each task's exact end.
        self.precise = bool(getattr(state, "precise_ends", False))
        (self.factory, self.create_task, self.on_done, self.on_release,
         self._stats, self.retarget) = _hotpath.build(self)
        self.factory.probe = self  # lets the loop hook find us
        self.set_task_hooks(*state.instruments.task_hooks())

    # The C hot path copies these; setting one tells it (see _Synced).
    inner = _Synced()  # the program's own task factory, called behind ours
    # The instruments' per-task hooks (task_created, task_ended, task_gate: see _instruments), set
    # by the state whenever its instruments change.
    on_create = _Synced()
    on_end = _Synced()
    gate = _Synced()

    def set_task_hooks(self, on_create: Any, on_end: Any, gate: Any) -> None:
        self._on_create, self._on_end, self._gate = on_create, on_end, gate
        self._sync()

    def _sync(self) -> None:
        configure = getattr(self.factory, "configure", None)
        if configure is not None:
            configure(self._inner is None, self._on_end, self._on_create, self._gate)

    # -- rare paths called from the hot path -----------------------------------------------------
    def call_on_create(self, rec: TaskRecord, context: Any) -> None:
        try:
            self.on_create(rec, context)
        except BaseException:
            internal_error("on_create hook")

    @staticmethod
    def trim_source_traceback(tb: list[Any]) -> None:
        tb[:] = [f for f in tb if not f.filename.startswith(_sites._TASKWATCH_DIR)] or tb

    def on_failed(self, task: Any, rec: TaskRecord, exc: BaseException) -> None:
        """A task failed: keep a summary of the error, never the exception itself."""
        rec.exc_type, rec.exc_message, rec.exc_stack = exception_brief(exc)

    def watch_end(self, task: Any, rec: TaskRecord) -> None:
        """Close the record when the task ends (a done callback), not when it is freed or first
        seen done: for tasks whose end time or outcome matters as it happens."""
        if not rec.flags & PRECISE:
            rec.flags |= PRECISE
            task.add_done_callback(self.on_done, context=self.done_ctx)

    # -- cancellation ---------------------------------------------------------------------------
    def on_cancel(self, task: Any, msg: Any, frame: Any, via: int | None) -> None:
        """Record one cancel() request; start watching for slow-cancel if not watched already."""
        rec = getattr(task, "_tw_rec", None)
        if rec is None or task.done():
            return
        loop = self.loop_ref()
        current = _running_task(loop) if loop is not None else None
        by = getattr(current, "_tw_rec", None)
        if by is not None:
            by.name = _hotpath.name_of(current)
        self.fill_names(rec)
        req = CancelRequest(_monotonic(), _sites.capture_any(frame, self.depth), by, msg, via)
        if frame is not None and frame.f_code is _RUNNER_SHUTDOWN:
            req.shutdown = req.managed = True
        forward, self._forward = self._forward, None
        if forward is not None and via == forward[0] and forward[1]() is rec:
            req.forwarded_from = forward[2]  # asyncio passed the awaiting task's cancel on to us
        if "swallowed-cancel" in self.state.kinds and not req.managed:
            req.waiting = _handlers.await_keys(task)
            waiter = getattr(task, "_fut_waiter", None)
            inner = _record_of(waiter)
            if inner is not None and not _base_done(waiter):  # cancel() forwards it to the
                # awaited task: its own request, made inside this cancel(), links back to this one
                self._forward = (rec.id, weakref.ref(inner), req)
        kept = True  # the first eight requests are kept
        if rec.cancels is None:
            rec.cancels = [req]
            self.watch_end(task, rec)  # its end decides swallowed-cancel
        elif len(rec.cancels) < 8:
            rec.cancels.append(req)
        else:
            kept = False
        if "slow-cancel" in self.state.kinds and rec not in self._cancelling:
            self._watch_cancel(rec, weakref.ref(task), req)
        instruments = self.state.instruments
        if kept and instruments.has("task_cancelled"):
            instruments.call("task_cancelled", task, rec)

    def _watch_cancel(self, rec: TaskRecord, ref: Any, req: CancelRequest) -> None:
        """Watch a cancelled task until it ends, from taskwatch's thread: one job per probe serves
        every cancel in flight (in cancel order), and an entry leaves when its task ends, so a
        burst of cancels leaves nothing on the loop and nothing alive for ``slow_cancel``."""
        self._cancelling[rec] = (ref, req)
        if not self._slow_armed:
            self._slow_armed = True
            self.state.ticker.at(req.at + self.options.slow_cancel, self._check_slow_cancels)

    def _check_slow_cancels(self) -> float | None:
        """On taskwatch's thread: report every watched task still cancelling ``slow_cancel`` after
        the request, and say when to look again. A cancel that was withdrawn (``uncancel()`` by
        ``timeout()``, ``TaskGroup``, anyio's cancel scopes) is not pending: that task is dropped,
        and a later cancel() watches it again."""
        watched, limit = self._cancelling, self.options.slow_cancel
        if self.closed:
            watched.clear()
        elif self.run_thread is None and watched:
            # A loop that is not running runs none of its tasks: not the task's delay. Look again
            # later, as a timer on the loop would have fired only once it ran again.
            return _monotonic() + limit
        while watched:
            try:
                rec, (ref, req) = next(iter(watched.items()))
            except (StopIteration, RuntimeError):  # changed by the loop thread meanwhile
                if watched:
                    return _monotonic() + 0.01
                break
            due = req.at + limit
            if due - _EARLY > _monotonic():  # in request order: the rest were asked later still
                return due
            if watched.pop(rec, None) is None:
                continue  # its task ended meanwhile
            try:
                task = ref()
                if task is not None and not task.done() and _cancelling(task) != 0:
                    self._report_slow(rec, task, req, _monotonic() - req.at)
            except BaseException:
                internal_error("slow-cancel check")
        self._slow_armed = False
        if watched:  # added between the last look and the line above
            self._slow_armed = True
            return _monotonic()
        return None

    def cancel_settled(self, task: Any, rec: TaskRecord) -> None:
        """A task that was asked to cancel has ended (its record just closed, outcome set): stop
        watching it for slow-cancel, and if it did not end cancelled, see whether it swallowed
        the request."""
        self._cancelling.pop(rec, None)
        # Only a task that returned normally swallowed the cancel: one that failed instead
        # reports through its exception (or as a lost/unretrieved one if nobody sees it).
        swallowed = rec.state is FINISHED and _cancelling(task) > 0
        for req in rec.cancels or ():
            outer, req.forwarded_from = req.forwarded_from, None
            if swallowed and outer is not None:  # the awaiting task's cancel: it got our result
                outer.passed_to = rec.brief()
        if swallowed:
            self._swallowed(rec)

    def _report_slow(self, rec: TaskRecord, task: Any, req: Any, waited: float) -> None:
        if rec.flags & REPORTED_SLOW:
            return
        frames, waits = _await_chain(task)
        if _library_affair(rec, req) and not any(_sites.is_app_file(f.file) for f in frames):
            return  # a library's own task, cancelled by it, and no line of the program waiting
        rec.flags |= REPORTED_SLOW
        rec.name = _hotpath.name_of(task)
        self.fill_names(rec)
        where = _stacks.user_frames(frames), _stacks.waiting_on(frames, waits)
        try:
            waiting_for, waiting_total = self._waiting_for(task)
        except Exception:  # the finding, without naming what it waits for
            internal_error("slow-cancel: what it waits for")
            waiting_for, waiting_total = [], 0
        self.state.emit(_findings.slow_cancel(rec, req, waited, *where, waiting_for=waiting_for,
                                              waiting_total=waiting_total))

    def _waiting_for(self, task: Any) -> tuple[list[dict[str, Any]], int]:
        """TASK briefs of the tasks a slow-to-cancel task waits for (see
        ``_stacks.awaited_tasks``), when every one of them not done yet was asked to cancel too:
        then the task is slow because they are, and the finding must say so, not blame its own
        code. When it also waits for work nobody cancelled, or in any other way, none. Also how
        many there are: only the first ``_MAX_WAITING_FOR`` are named."""
        awaited = {id(t): t for t in _stacks.awaited_tasks(task) or () if t is not task}
        pending = [t for t in awaited.values() if not _base_done(t)]  # gather(t, t): once
        if not pending or any(_base_cancelling(t) <= 0 for t in pending):
            return [], 0
        tasks = sorted(pending, key=lambda t: getattr(_record_of(t), "id", 0))
        out = []
        for other in tasks[:_MAX_WAITING_FOR]:
            other_rec = _record_of(other)
            if other_rec is not None:
                other_rec.name = _hotpath.name_of(other)
                out.append(other_rec.brief())
                continue
            try:  # a kind of task taskwatch did not create: asyncio's own view of it
                name, coro = asyncio.Task.get_name(other), asyncio.Task.get_coro(other)
            except Exception:  # not the C Task's kind
                name = coro = None
            code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
            out.append({"id": None, "name": name, "coro": _sites.qualified_name(code),
                        "created_at": None})
        return out, len(tasks)

    def _swallowed(self, rec: TaskRecord) -> None:
        if rec.flags & REPORTED_SWALLOWED or "swallowed-cancel" not in self.state.kinds:
            return
        requests = [r for r in rec.cancels or () if not r.managed]
        if not requests:
            return  # only timeout()/TaskGroup cancelled it; they uncancel on their own
        req = requests[0]
        # Every request passed on to an awaited task that returned normally: that task swallowed
        # them, and this one only got its result; no `except` of its own caught anything.
        inner = requests[-1].passed_to if all(r.passed_to for r in requests) else None
        caught = None
        if inner is None:  # the latest request of its own that found the task suspended
            own = [r for r in requests if r.passed_to is None and r.waiting is not None]
            if own:
                caught = _handlers.except_site(own[-1].waiting)
        if all(_library_affair(rec, r) for r in requests) and (
                caught is None or not _sites.is_app_file(caught.file)):
            return  # a library's own task, cancelled and caught by library code
        rec.flags |= REPORTED_SWALLOWED
        self.fill_names(rec)
        self.state.emit(_findings.swallowed_cancel(rec, req, rec.state, caught, inner))

    # -- exceptions -----------------------------------------------------------------------------
    def on_exception_read(self, task: Any, frame: Any) -> None:
        """``exception()`` was called on a failed task: spot gather() discarding a late error."""
        code = frame.f_code
        if code is not self.state.gather_callback_code:
            return
        outer = frame.f_locals.get("outer", False)
        if outer is not None and outer is not False and not outer.done():
            return
        rec = getattr(task, "_tw_rec", None)
        if rec is None or rec.flags & REPORTED_LOST:
            return
        rec.flags |= REPORTED_LOST
        if rec.state == PENDING:  # our done callback has not run yet: fill the outcome in now
            rec.name = _hotpath.name_of(task)
            rec.exc_type, rec.exc_message, rec.exc_stack = exception_brief(task._exception)
        if outer is None:
            state = "been garbage-collected"
        elif outer.cancelled():
            state = "been cancelled"
        else:
            state = "failed with an earlier error"
        self.fill_names(rec)
        self.state.emit(_findings.lost_exception(rec, rec.exc_type, rec.exc_message,
                                                 rec.exc_stack, state))

    def on_loop_exception(self, context: dict[str, Any]) -> None:
        """Chained exception handler: asyncio's own reports become findings."""
        message = context.get("message") or ""
        if message.endswith("exception was never retrieved"):
            task = context.get("future")
            rec = getattr(task, "_tw_rec", None)
            exc = context.get("exception")
            if rec is None or exc is None or rec.flags & REPORTED_LOST:
                return
            if rec.name is None:
                rec.name = _hotpath.name_of(task)
            exc_type, exc_message, exc_stack = exception_brief(exc)
            self.fill_names(rec)
            self.state.emit(_findings.unretrieved_exception(rec, exc_type, exc_message, exc_stack))
        elif message.startswith("Task was destroyed but it is pending"):
            task = context.get("task")
            rec = getattr(task, "_tw_rec", None)
            if rec is None:
                return
            rec.name = _hotpath.name_of(task)
            rec.flags |= REPORTED_LEAK  # destroyed is not also leaked (3.14 may still list it)
            where = _where(task)
            self.fill_names(rec)
            parent = rec.parent
            if parent.__class__ is TaskRecord:
                parent.live_children -= 1
                rec.parent = (parent.id, parent.name, parent.coro, parent.stack)
            self.state.emit(_findings.destroyed_pending(rec, *where))

    # -- parents and children -------------------------------------------------------------------
    def schedule_orphan_check(self, rec: TaskRecord) -> None:
        """A parent ended with live children: look again after ``orphan_grace``, from taskwatch's
        thread (the record is kept alive until then; the loop only weakly)."""
        if "orphaned-task" not in self.state.kinds:
            return

        def check() -> float | None:
            if self.closed:
                return None
            if self.run_thread is None:  # the loop is stopped: its tasks cannot have ended
                return _monotonic() + self.options.orphan_grace
            self._check_orphans(rec)
            return None

        # A parent that returned normally gets the grace (children may be finishing up). One that
        # was cancelled or failed leaves children nobody will ever await: cancelling a task does
        # not cancel the tasks it created, so they are orphans even if they end soon after.
        grace = 0.0 if rec.state in (CANCELLED, FAILED) else self.options.orphan_grace
        self.state.ticker.at(_monotonic() + grace, check)

    def _check_orphans(self, parent: TaskRecord) -> None:
        """On taskwatch's thread: children of ``parent`` still pending and awaited by nobody."""
        try:
            if not parent.live_children:
                return
            loop = self.loop_ref()
            if loop is None:
                return
            children, where = [], {}
            graced = parent.state not in (CANCELLED, FAILED)
            for task in _all_tasks(loop):
                rec = getattr(task, "_tw_rec", None)
                if rec is None or rec.parent is not parent or rec.flags & REPORTED_ORPHAN:
                    continue
                if task.done() or is_awaited(task) or _cancelling(task) > 0:
                    continue  # finished, awaited by someone, or being cancelled: not orphaned
                if graced and _kept_by_program(task):
                    continue  # the program keeps it (a registry it awaits later): on purpose
                rec.flags |= REPORTED_ORPHAN
                rec.name = _hotpath.name_of(task)
                children.append(rec)
                where[rec.id] = _where(task)
            children.sort(key=lambda r: r.id)
            for finding in _findings.orphaned_tasks(parent, children, where):
                self.state.emit(finding)
        except BaseException:
            internal_error("orphan check")

    # -- end of the program ---------------------------------------------------------------------
    def report_leaks(self, at_exit: str, outcome: str = "the runner cancelled it",
                     unawaited_only: bool = False) -> None:
        """Tasks still pending when the main coroutine returned, the loop is closing or the
        process is ending; ``outcome`` says what became of them. ``unawaited_only``: while the
        loop still runs, a task another task awaits (a TaskGroup's) is that task's business."""
        if "leaked-task" not in self.state.kinds:
            return
        loop = self.loop_ref()
        if loop is None:
            return
        now = _monotonic()
        pending = []
        running = _running_task(loop) if self.run_thread is not None else None
        for task in _all_tasks(loop):
            rec = getattr(task, "_tw_rec", None)
            if rec is None or task is running or task.done() or rec.internal or (
                    rec.flags & REPORTED_LEAK) or (unawaited_only and is_awaited(task)):
                continue
            rec.flags |= REPORTED_LEAK
            rec.name = _hotpath.name_of(task)
            pending.append((rec, task))
        pending.sort(key=lambda pair: pair[0].id)
        for rec, task in pending:
            self.fill_names(rec)
            self.state.emit(_findings.leaked_task(rec, now - rec.created, *_where(task), at_exit,
                                                  outcome))

    def fill_names(self, rec: TaskRecord) -> None:
        """Name the parent in a finding: records learn their task's name only when it ends."""
        parent = rec.parent
        if parent is None:
            return
        live = parent.__class__ is TaskRecord
        if (parent.name if live else parent[1]) is not None:
            return
        loop = self.loop_ref()
        if loop is None:
            return
        pid = parent.id if live else parent[0]
        for task in _all_tasks(loop):
            other = getattr(task, "_tw_rec", None)
            if other is not None and other.id == pid:
                other.name = _hotpath.name_of(task)
                if not live:
                    rec.parent = (pid, other.name, parent[2], parent[3])
                return

    # -- views ----------------------------------------------------------------------------------
    def live_records(self) -> list[tuple[TaskRecord, Any]]:
        """(record, task) for every pending task of the loop, adopting tasks created without us."""
        loop = self.loop_ref()
        if loop is None:
            return []
        out = []
        for task in _all_tasks(loop):
            rec = getattr(task, "_tw_rec", None)
            if rec is None:
                rec = adopt(task)
                if rec is None:
                    continue
            rec.name = _hotpath.name_of(task)
            out.append((rec, task))
        out.sort(key=lambda pair: pair[0].id)
        return out

    def stats(self) -> dict[str, int]:
        return self._stats()


def _running_task(loop: Any) -> Any:
    """The loop's running task; on 3.14+ asyncio's pure-Python Task registers itself only in
    ``asyncio.tasks._current_tasks``, where ``current_task()`` no longer looks."""
    task = _current_task(loop)
    if task is None and _PY_CURRENT is not None:
        task = _PY_CURRENT.get(loop)
    return task


_PY_CURRENT = getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info >= (3, 14) else None


# References to a pending task that is suspended or scheduled, with nothing of the program's
# holding it: asyncio's own (the waker in the awaited future's callbacks, or the ready handle),
# plus, in _check_orphans, the set of tasks, the loop variable, this function's parameter and
# getrefcount's argument (3.14+ passes arguments as borrowed references: one fewer). Measured
# stable on 3.11-3.15, asyncio and uvloop, for sleep, Event, Queue, Lock and ready tasks (a ready
# task on 3.14+ has one fewer still: one kept there is taken for forgotten, as before). Not on
# free-threaded builds (refcounts are split between threads there).
_ORPHAN_CHECK_REFS = 5 if sys.version_info < (3, 14) else 4
_REFCOUNTS_EXACT = not sysconfig.get_config_var("Py_GIL_DISABLED")


def _library_affair(rec: TaskRecord, req: Any) -> bool:
    """A library cancelling a task of its own (aiohttp's run_app shutting down its server task):
    the task runs library code and cancel() was called from library code, so no line of the
    program is involved and a slow or swallowed cancel is not the program's finding."""
    stack = req.stack if req is not None else None
    return bool(stack) and _sites.library_affair(rec.coro, stack[0])


def _kept_by_program(task: Any) -> bool:
    """More references than asyncio, this check and the timeouts the task itself entered hold:
    the program keeps the task (in a set or registry it awaits later), so it is not a forgotten
    child."""
    if not _REFCOUNTS_EXACT:
        return False
    refs = sys.getrefcount(task)
    if refs <= _ORPHAN_CHECK_REFS:
        return False
    return refs - _stacks.held_by_own_timers(task) > _ORPHAN_CHECK_REFS


def _record_of(task: Any) -> TaskRecord | None:
    """The record of a task of taskwatch's own kinds; None for any other object (reading one of
    those could run the program's ``__getattr__``)."""
    if type(task) is not _task.Task and type(task) is not _task.CTask:
        return None
    rec = getattr(task, "_tw_rec", None)
    return rec if rec.__class__ is TaskRecord else None


def _base_done(fut: Any) -> bool:
    """``fut.done()`` as asyncio's Future answers it: no override runs (taskwatch's own would close
    a record, off the loop's thread when asked from taskwatch's; a program's could do anything)."""
    try:
        return bool(asyncio.Future.done(fut))
    except TypeError:  # not the C Future's kind (a pure-Python future)
        return bool(fut.done())


def _base_cancelling(task: Any) -> int:
    """``task.cancelling()`` as asyncio's Task answers it (no override runs); 0 for other kinds."""
    try:
        return int(asyncio.Task.cancelling(task))
    except TypeError:  # not the C Task's kind
        return _cancelling(task) if issubclass(type(task), asyncio.Task) else 0


def _cancelling(task: Any) -> int:
    """The task's count of pending cancel requests; 0 for futures without one (foreign kinds)."""
    try:
        return int(task.cancelling())
    except Exception:
        return 0


def _all_tasks(loop: Any) -> set[Any]:
    """``asyncio.all_tasks(loop)`` from any thread: the loop's thread may be changing the sets
    it reads; asyncio retries, and a last failure gives an empty answer rather than an error."""
    for _ in range(3):
        try:
            return asyncio.all_tasks(loop)
        except RuntimeError:
            continue
    return set()


def _await_chain(task: Any) -> tuple[list[_sites.Frame], str | None]:
    return _stacks.await_chain(task)


def _where(task: Any) -> tuple[list[_sites.Frame], str | None]:
    """The user's frames of a suspended task's await chain, and what the innermost one waits on."""
    frames, awaiting = _stacks.await_chain(task)
    return _stacks.user_frames(frames), _stacks.waiting_on(frames, awaiting)


def adopt(task: Any) -> TaskRecord | None:
    """A record for a task that bypassed the factory (created before install, or Task() directly)."""
    try:
        coro = task.get_coro()
    except Exception:
        coro = None
    stack = None
    frame = getattr(coro, "cr_frame", None)
    if frame is not None:
        stack = (frame.f_code, frame.f_lasti)
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    rec = TaskRecord(stack, _hotpath.unwrap(coro, code), None, _monotonic())
    rec.flags |= FOREIGN
    rec.internal = True  # we do not know who created it: never blame it in findings
    try:
        task._tw_rec = rec
    except AttributeError:
        return None
    return rec


def is_awaited(task: Any) -> bool:
    """True when another task or an asyncio combinator (gather, wait, shield) waits on ``task``."""
    for callback, _ctx in getattr(task, "_callbacks", None) or ():
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Future):
            return True
        func = getattr(callback, "func", callback)  # functools.partial
        code = getattr(func, "__code__", None)
        if code is not None and _sites.is_asyncio_file(code.co_filename):
            return True
    return False
