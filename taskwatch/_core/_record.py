"""TaskRecord: what taskwatch remembers of one task, without keeping the task alive.

A record holds integers, floats, short strings and code-object keys. It never references the task,
its coroutine, frames or exception objects, so a finished task is freed exactly when it would be
without taskwatch, and a pending task can still be garbage-collected (and reported).
"""

from __future__ import annotations

import itertools
import time
from types import CodeType
from typing import Any

from . import _sites
from ._accel import speedups
from ._flags import RELEASED

PENDING, FINISHED, FAILED, CANCELLED = "pending", "finished", "failed", "cancelled"

# Stable ids, never reused, shared by all loops and threads (both counters are atomic under the GIL).
next_id = speedups.next_id if speedups is not None else itertools.count(1).__next__

_time, _monotonic = time.time, time.monotonic


def to_wall(monotonic_time: float) -> float:
    """Wall-clock seconds of a ``time.monotonic()`` reading, with the offset as of now: the wall
    clock can step (NTP, a VM resumed), and what a report's times are read against (logs, the
    SDK's spans, ``time.time()``) follows the clock as it is now, not as it was at import."""
    return monotonic_time + (_time() - _monotonic())


def _managed_codes() -> frozenset[Any]:
    import asyncio.taskgroups
    import asyncio.timeouts

    codes = set()
    for func in (getattr(asyncio.taskgroups.TaskGroup, "_on_task_done", None),
                 getattr(asyncio.timeouts.Timeout, "_on_timeout", None)):
        code = getattr(func, "__code__", None)
        if code is not None:
            codes.add(code)
    return frozenset(codes)


_MANAGED_CODES = _managed_codes()


def brief(key: tuple[Any, ...]) -> dict[str, Any]:
    """A TASK brief from a task's cheap key: (id, name, coroutine code, creation stack)."""
    pid, name, coro, stack = key
    frame = _sites.site(stack)
    return {"id": pid, "name": name, "coro": _sites.qualified_name(coro),
            "created_at": frame.as_dict() if frame else None}


class CancelRequest:
    """One call of ``Task.cancel()``: when, from which line, by which task, with which message."""

    __slots__ = ("at", "stack", "_by", "message", "via", "managed", "waiting", "shutdown",
                 "passed_to", "forwarded_from")

    def __init__(self, at: float, stack: tuple[Any, ...] | None, by: TaskRecord | None,
                 message: Any, via: int | None) -> None:
        self.at = at
        self.stack = stack
        # the canceller as a cheap key (no chain of records), formatted only when read
        self._by: Any = None if by is None else (by.id, by.name, by.coro, by.stack)
        self.message = None if message is None else _short(message)
        self.via = via  # id of the task whose cancel() forwarded this one (awaited-task forwarding)
        # Sent by a timeout() or TaskGroup that will uncancel() the task itself: never "swallowed".
        self.managed = bool(stack) and stack[0] in _MANAGED_CODES
        # (code, offset) keys of where the task was suspended: the except that swallows the
        # cancel covers one of them (see _handlers); None if the task was running.
        self.waiting: tuple[Any, ...] | None = None
        # Sent by the runner's shutdown (asyncio.run / Runner.close cancelling leftover tasks):
        # a task may catch that last cancel on purpose to clean up.
        self.shutdown = False
        # Set when asyncio passed this cancel on to the task it awaited (``await task``,
        # ``wait_for``) and that task swallowed it: its TASK brief. This task then returned
        # normally without ever seeing a CancelledError.
        self.passed_to: dict[str, Any] | None = None
        # The awaiting task's request that asyncio forwarded as this one, until this task settles
        # (then its ``passed_to`` is filled if this task swallowed it).
        self.forwarded_from: CancelRequest | None = None

    @property
    def by(self) -> dict[str, Any] | None:
        """The task that called cancel(), as a TASK brief."""
        by = self._by
        if by.__class__ is tuple:
            self._by = by = brief(by)
        return by  # type: ignore[no-any-return]

    @property
    def by_id(self) -> int | None:
        """The canceller's id, without formatting the rest of its brief."""
        by = self._by
        if by is None:
            return None
        return by[0] if by.__class__ is tuple else by["id"]  # type: ignore[no-any-return]

    def as_dict(self) -> dict[str, Any]:
        frame = _sites.site(self.stack)
        return {
            "requested_at": frame.as_dict() if frame else None,
            "by_task": self.by,
            "message": self.message,
            "time": to_wall(self.at),
            "via_task": self.via,
        }


class _TaskRecord:
    """The record of one task. Hot-path fields are set in ``__init__`` (or by the C hot path, which
    sets the same fields directly); the rest at the end."""

    __slots__ = (
        "id", "stack", "coro", "parent", "created", "ended", "busy", "state", "name", "cancels",
        "live_children", "exc_type", "exc_message", "exc_stack", "internal", "flags", "span",
        "__weakref__",
    )

    def __init__(self, stack: tuple[Any, ...] | None, coro: CodeType | None,
                 parent: TaskRecord | None, created: float) -> None:
        self.id = next_id()
        self.stack = stack
        self.coro = coro
        self.parent: Any = parent  # the parent's record while this task lives, then a brief tuple
        self.created = created
        self.ended = 0.0
        self.busy = 0.0  # CPU seconds the sampler found it running (``cpu_sampling``)
        self.state = PENDING
        self.name: str | None = None
        self.cancels: list[CancelRequest] | None = None
        self.live_children = 0
        self.internal = stack is None
        self.flags = 0  # bit set of finding kinds already raised for this task
        # ``span`` (unset until an exporter sets it) holds OpenTelemetry's span for this task.

    # -- formatting (never on the hot path) -------------------------------------------------------
    @property
    def coro_name(self) -> str:
        return _sites.qualified_name(self.coro)

    @property
    def created_at(self) -> _sites.Frame | None:
        return _sites.site(self.stack)

    @property
    def parent_id(self) -> int | None:
        parent = self.parent
        if parent is None:
            return None
        return parent.id if isinstance(parent, TaskRecord) else parent[0]

    def parent_brief(self) -> dict[str, Any] | None:
        """The parent as a TASK brief, whether it is still live (a record) or ended (a tuple)."""
        parent = self.parent
        if parent is None:
            return None
        if isinstance(parent, TaskRecord):
            return parent.brief()
        return brief(parent)

    def display_name(self) -> str:
        return self.name if self.name is not None else f"task #{self.id}"

    def brief(self) -> dict[str, Any]:
        """The short TASK form used for parents and cancellers."""
        return brief((self.id, self.name, self.coro, self.stack))

    def as_dict(self) -> dict[str, Any]:
        """The report's TASK object."""
        parent = self.parent_brief()
        frame = self.created_at
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "coro": self.coro_name,
            "created_at": frame.as_dict() if frame else None,
            "creation_stack": [f.as_dict() for f in _sites.resolve(self.stack)],
            "parent": parent,
            "state": self.state,
            "created": to_wall(self.created),
        }
        if self.ended:
            out["ended"] = to_wall(self.ended)
            out["duration_s"] = round(self.ended - self.created, 6)
            out["closed"] = "released" if self.flags & RELEASED else "done"
        if self.state == FAILED:
            out["exception"] = {"type": self.exc_type, "message": self.exc_message}
        if self.cancels:
            out["cancels"] = [c.as_dict() for c in self.cancels]
        return out

    def describe(self) -> str:
        """``Task 'Task-7' (app.jobs.send_metrics) created at app/jobs.py:12 in main``."""
        frame = self.created_at
        where = f"created at {frame.short()}" if frame else "created by the event loop or a library"
        name = f"'{self.name}'" if self.name else f"#{self.id}"
        return f"task {name} ({self.coro_name}) {where}"


TaskRecord: type[_TaskRecord]
if speedups is None:
    TaskRecord = _TaskRecord
else:
    # The C accelerator lays the same fields out in C, in a type the cyclic GC does not track (a
    # Python subclass would be tracked: one more GC object per task). It gets the methods above.
    TaskRecord = speedups.RecordType
    for _name, _value in vars(_TaskRecord).items():
        if _name not in ("__slots__", "__module__", "__weakref__", "__dict__") and (
                _name not in _TaskRecord.__slots__):
            setattr(TaskRecord, _name, _value)


def _short(value: Any, limit: int = 500) -> str:
    """Text of a program's object for a finding: its repr(), which may raise or return anything."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = repr(value)
            if not isinstance(text, str):
                raise TypeError("repr() did not return a str")
        except Exception:
            text = f"<{type(value).__name__} object (repr() failed)>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exception_brief(exc: BaseException) -> tuple[str, str, tuple[Any, ...]]:
    """Type name, message and a code-key stack of an exception, without keeping the exception."""
    keys: list[Any] = []
    tb = exc.__traceback__
    while tb is not None:
        keys.append(tb.tb_frame.f_code)
        keys.append(tb.tb_lasti)
        tb = tb.tb_next
    # innermost first, like a captured stack
    pairs = [(keys[i], keys[i + 1]) for i in range(0, len(keys), 2)][-16:]
    pairs.reverse()
    flat = tuple(x for pair in pairs for x in pair)
    try:
        message = _short(str(exc))
    except Exception:  # a broken __str__ must not break taskwatch
        message = "<unprintable>"
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else (
        f"{kind.__module__}.{kind.__qualname__}")
    return name, message, flat
