"""Findings: plain data describing one problem, with a message a person can act on.

The one place that writes finding text: every kind's builder is here, whichever part of taskwatch
detected it (the watchdog's blocked-loop included).

Builders here run off the hot path (a finding is rare), so they resolve code keys into file:line text
immediately and keep only dicts and strings: a stored finding pins no task, frame or exception.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from . import _sites
from ._record import CancelRequest, TaskRecord
from ._stacks import at_phrase

SEVERITY = {
    "unretrieved-exception": "error",
    "lost-exception": "warning",
    "swallowed-cancel": "warning",
    "slow-cancel": "warning",
    "orphaned-task": "warning",
    "destroyed-pending": "error",
    "never-awaited": "error",
    "leaked-task": "warning",
    "blocked-loop": "warning",
}


@dataclasses.dataclass
class Finding:
    """One problem taskwatch saw. ``data`` holds the kind-specific keys of report-format.md."""

    kind: str
    message: str
    task: dict[str, Any] | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    time: float = dataclasses.field(default_factory=time.time)
    site: _sites.Frame | None = None  # creation site, used for silencing and grouping

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "warning")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "severity": self.severity, "time": self.time,
                               "message": self.message, "task": self.task}
        out.update(self.data)
        return out

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


# -- phrases ------------------------------------------------------------------------------------

def _who(rec: TaskRecord) -> str:
    """``Task 'Task-7' (app.jobs.send_metrics), created at app/jobs.py:12 in main by task 'Task-1'``."""
    name = f"'{rec.name}'" if rec.name else f"#{rec.id}"
    text = f"Task {name} ({rec.coro_name})"
    frame = rec.created_at
    parent = rec.parent_brief()
    by = None
    if parent:
        by = f"task {_brief_name(parent)}"
    if frame:
        text += f", created at {frame.short()}" + (f" by {by}" if by else "")
    elif by:
        text += f", created by library code running in {by}"
    else:
        text += ", created by the event loop or a library"
    return text


def _label(brief: dict[str, Any]) -> str:
    """``'Task-7'`` from a TASK brief, or ``#7`` when its name is not known."""
    return f"'{brief['name']}'" if brief.get("name") else f"#{brief['id']}"


def _brief_name(brief: dict[str, Any]) -> str:
    """``'Task-7' (app.jobs.worker)`` from a TASK brief."""
    return f"{_label(brief)} ({brief['coro']})"


def _cancel_phrase(req: CancelRequest | None) -> str:
    if req is None:
        return "cancel() was requested"
    if req.shutdown:
        return ("the runner's shutdown cancelled it (asyncio.run() or Runner.close() cancels the "
                "tasks still pending when the main coroutine has ended)")
    frame = _sites.site(req.stack)
    text = "cancel() was called"
    if frame is not None:
        text += f" at {frame.short()}"
    if req.by:
        text += f" by task {_label(req.by)}"
    elif frame is not None and _sites.is_internal(req.stack[0]):
        text += " from an event-loop callback (a timeout or timer)"
    else:
        text += " from a callback"
    if req.message:
        text += f" with message {req.message!r}"
    return text


def _frames(stack: tuple[Any, ...] | None) -> list[dict[str, Any]]:
    return [f.as_dict() for f in _sites.resolve(stack)]


def _build(kind: str, rec: TaskRecord | None, message: str, **data: Any) -> Finding:
    return Finding(kind=kind, message=message, task=rec.as_dict() if rec else None, data=data,
                   site=rec.created_at if rec else None)


# -- builders, one per kind --------------------------------------------------------------------

def unretrieved_exception(rec: TaskRecord, exc_type: str, exc_message: str,
                          exc_stack: tuple[Any, ...]) -> Finding:
    where = _sites.site(exc_stack)
    raised = f", raised at {where.short()}" if where else ""
    msg = (f"{_who(rec)}, failed with {exc_type}: {exc_message}{raised}, and nothing ever retrieved "
           "the exception: no one awaited the task or called result()/exception() before it was "
           "garbage-collected, so the error vanished. Keep a reference to the task and await it "
           "(or use asyncio.TaskGroup), or add a done callback that logs task.exception().")
    return _build("unretrieved-exception", rec, msg,
                  exception={"type": exc_type, "message": exc_message, "traceback": _frames(exc_stack)})


def lost_exception(rec: TaskRecord, exc_type: str, exc_message: str, exc_stack: tuple[Any, ...],
                   outer_state: str) -> Finding:
    where = _sites.site(exc_stack)
    raised = f" (raised at {where.short()})" if where else ""
    msg = (f"{_who(rec)}, failed with {exc_type}: {exc_message}{raised} after the gather() awaiting "
           f"it had already {outer_state}, so only asyncio's internals saw this error. Use "
           "asyncio.TaskGroup (it reports every failure as an ExceptionGroup), or gather(..., "
           "return_exceptions=True) and inspect each result.")
    return _build("lost-exception", rec, msg,
                  exception={"type": exc_type, "message": exc_message, "traceback": _frames(exc_stack)})


def swallowed_cancel(rec: TaskRecord, req: CancelRequest | None, outcome: str,
                     caught: _sites.Frame | None = None,
                     passed_to: dict[str, Any] | None = None) -> Finding:
    """``passed_to``: the TASK brief of the awaited task that asyncio passed the cancel on to and
    that returned normally: it swallowed the cancel, and this task only got its result."""
    ended = ("returned normally" if outcome == "finished"
             else f"then failed with {rec.exc_type}: {rec.exc_message}")
    head = f"{_who(rec)}: {_cancel_phrase(req)}, but the task {ended} instead of being cancelled"
    if passed_to is not None:
        msg = (f"{head}: it was awaiting task {_brief_name(passed_to)}, asyncio passed the "
               "cancellation on to that task, and that task returned normally instead of being "
               "cancelled, so this task's `await` simply got its result. The CancelledError was "
               "caught in that task, not in this one (see its own finding). Whoever cancelled this "
               "task (a timeout, a TaskGroup, shutdown) now waits on or misreports a task that "
               "ignored the request. Re-raise CancelledError there after cleanup.")
    else:
        where = f" (the `except` at {caught.short()})" if caught is not None else ""
        msg = (f"{head}: it caught CancelledError{where} and did not re-raise it. Whoever cancelled "
               "it (a timeout, a TaskGroup, shutdown) now waits on or misreports a task that "
               "ignored the request. Re-raise CancelledError after cleanup (`except "
               "asyncio.CancelledError: ...; raise`), and catch Exception rather than "
               "BaseException.")
    cancel = _cancel_dict(req, rec)
    cancel["caught_at"] = caught.as_dict() if caught is not None else None
    cancel["passed_to"] = passed_to
    return _build("swallowed-cancel", rec, msg, cancel=cancel)


def slow_cancel(rec: TaskRecord, req: CancelRequest | None, waited: float,
                suspended: list[_sites.Frame], waits: str | None,
                waiting_for: list[dict[str, Any]] | None = None, waiting_total: int = 0) -> Finding:
    """``waiting_for``: TASK briefs of the unfinished tasks, asked to cancel too, whose end it waits
    for (the first few of ``waiting_total``); then they are what holds it up, and the advice points
    there, not at this task's code."""
    where = at_phrase(suspended, waits)
    at = f" It is now {where}." if where else ""
    head = f"{_who(rec)}: {_cancel_phrase(req)} {waited:.1f} s ago and the task is still not done.{at} "
    total = max(waiting_total, len(waiting_for or ()))
    if waiting_for:
        names = ", ".join(f"task {_brief_name(b)}" for b in waiting_for[:3])
        if total > 3:
            names += f" and {total - 3} more"
        one = total == 1
        msg = head + (
            f"It is waiting for {names}, which {'was' if one else 'were'} asked to cancel too and "
            f"{'has' if one else 'have'} not ended either. Look there for a CancelledError caught "
            "in a loop or a long `await` in a finally/except block; keep cleanup short and bounded "
            "(asyncio.timeout), and re-raise CancelledError.")
    else:
        msg = head + ("It is ignoring the cancellation (catching CancelledError in a loop), or running "
                      "a long `await` in a finally/except block, or waiting for something that is "
                      "not done. Keep cleanup short and bounded (asyncio.timeout), and re-raise "
                      "CancelledError.")
    cancel = _cancel_dict(req, rec)
    cancel["waited_s"] = round(waited, 3)
    cancel["waiting_for"] = list(waiting_for or ())
    cancel["waiting_for_count"] = total
    return _build("slow-cancel", rec, msg, cancel=cancel,
                  stack=[f.as_dict() for f in suspended])


def orphaned_tasks(parent: TaskRecord, children: list[TaskRecord],
                   suspended: dict[int, tuple[list[_sites.Frame], str | None]]) -> list[Finding]:
    out = []
    for child in children:
        where, waits = suspended.get(child.id) or ([], None)
        phrase = at_phrase(where, waits)
        now = f" ({phrase})" if phrase else ""
        why = ""
        if parent.state == "cancelled":
            why = " Cancelling a task does not cancel the tasks it created."
        elif parent.state == "failed":
            why = " A task that fails does not cancel the tasks it created."
        msg = (f"{_who(child)}, is still running{now} although its parent "
               f"{_plain(parent)} {parent.state} {time.monotonic() - parent.ended:.1f} s ago and "
               "nothing awaits it: children outlived their parent and nobody will see their result "
               f"or error.{why} Create children in an asyncio.TaskGroup (or cancel and await them "
               "in the parent's finally block) so they end with the parent.")
        finding = _build("orphaned-task", child, msg, parent=parent.as_dict(),
                         stack=[f.as_dict() for f in where])
        out.append(finding)
    return out


def destroyed_pending(rec: TaskRecord, suspended: list[_sites.Frame], waits: str | None) -> Finding:
    phrase = at_phrase(suspended, waits)
    at = f" while suspended {phrase}" if phrase else ""
    msg = (f"{_who(rec)}, was garbage-collected while still pending{at}: nothing kept a reference to "
           "it, so it never finished and its remaining work silently never ran (asyncio: \"Task was "
           "destroyed but it is pending!\"). The event loop keeps only weak references to tasks: "
           "store fire-and-forget tasks in a set and discard them in a done callback, or use a "
           "TaskGroup.")
    return _build("destroyed-pending", rec, msg, stack=[f.as_dict() for f in suspended])


def never_awaited(name: str, created_at: _sites.Frame | None, origin: list[_sites.Frame]) -> Finding:
    where = f", created at {created_at.short()}," if created_at else ""
    msg = (f"Coroutine {name}{where} was never awaited, so its body never ran. Add `await`, or "
           "schedule it with asyncio.create_task() and keep the task.")
    return Finding(kind="never-awaited", message=msg, task=None,
                   data={"coroutine": {"name": name,
                                       "created_at": created_at.as_dict() if created_at else None,
                                       "origin": [f.as_dict() for f in origin]}},
                   site=created_at)


def leaked_task(rec: TaskRecord, age: float, suspended: list[_sites.Frame], waits: str | None,
                at_exit: str, outcome: str = "the runner cancelled it") -> Finding:
    phrase = at_phrase(suspended, waits)
    now = f" It was suspended {phrase}." if phrase else ""
    msg = (f"{_who(rec)}, was still pending {age:.2f} s after it started when {at_exit}, so "
           f"{outcome} and its work never completed.{now} Await or cancel background tasks "
           "before the main coroutine returns (a TaskGroup does this for you).")
    return _build("leaked-task", rec, msg, age_s=round(age, 3),
                  stack=[f.as_dict() for f in suspended])


def _plain(rec: TaskRecord) -> str:
    name = f"'{rec.name}'" if rec.name else f"#{rec.id}"
    return f"{name} ({rec.coro_name})"


def _cancel_dict(req: CancelRequest | None, rec: TaskRecord) -> dict[str, Any]:
    if req is None:
        return {"requested_at": None, "by_task": None, "message": None,
                "count": len(rec.cancels or ())}
    out = req.as_dict()
    out["count"] = len(rec.cancels or ())
    return out



def blocked_loop(rec: TaskRecord | None, duration: float, cpu_s: float, *, computing: bool,
                 cpu_taken: bool, gc_s: float, by_callback: bool, where: _sites.Frame | None,
                 importing: str | None, callee: str | None, share: float, samples: int,
                 data: dict[str, Any]) -> Finding:
    """The watchdog's analysis of one block (taskwatch._watchdog._blocks) in words."""
    if computing:
        what = f"CPU {cpu_s:.2f} s: computing"
        if cpu_taken:
            what += " (the machine's other work took the rest of the CPU)"
    else:
        what = f"CPU {cpu_s:.2f} s: waiting in a blocking call"
    if gc_s >= 0.01:
        what += f"; {gc_s:.2f} s of it in Python's garbage collector"
    if rec is not None:
        who = f" by {rec.describe()}"
    elif by_callback:
        who = " by a callback (no task was running)"
    else:
        who = ""
    if where is not None:
        at = f", at {where.short()}"
        if importing:
            at += f" (importing module {importing!r})"
        elif callee:
            at += f" (in {callee})"
        if samples > 1:
            at += f" ({share:.0%} of {samples} samples)"
    else:
        at = (", where taskwatch could not sample the loop thread: C code or the garbage collector "
              "held the GIL until the block ended")
    advice = ("Move CPU work off the loop (await asyncio.to_thread(...) or a process pool) and "
              "replace blocking calls (time.sleep, synchronous clients) with their async versions.")
    if gc_s >= 0.5 * duration:
        advice = ("Most of it was a garbage-collection pause, not this code: reduce reference "
                  "cycles among long-lived objects, or tune gc (gc.freeze() after startup, "
                  "gc.set_threshold()).")
    message = (f"The event loop was blocked for {duration:.3f} s ({what}){who}{at}. Every other task, "
               f"timer and I/O callback waited that long. {advice}")
    return Finding(kind="blocked-loop", message=message, task=rec.as_dict() if rec is not None else None,
                   data=data, site=where)
