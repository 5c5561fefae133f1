"""The Task subclass taskwatch's factory builds: a C Task that also reports ``cancel()`` calls.

Only ``cancel``, ``exception`` (to spot errors lost inside ``gather``), ``done``/``result`` (with
spans on, the first moment a task is seen done is its end) and ``__del__`` (to close the record when
the task is freed, cheaper than a done callback) are overridden, plus ``set_name`` on 3.13.0-3.13.2,
so tasks keep the C implementation's speed and behaviour. The class is named ``Task``
so reprs and asyncio's own messages ("Task exception was never retrieved") read exactly as without
taskwatch. ``__del__`` always calls the base one: skipping it would silence asyncio's "never
retrieved" report. With the C accelerator the same class exists as a C type (``CTask``: fields,
finalizer and ``exception`` in C, ``cancel`` from here); ``task_class()`` picks one per probe.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._accel import speedups

_base_cancel = asyncio.Task.cancel
_base_del = asyncio.Task.__del__
_base_exception = asyncio.Task.exception
_base_done = asyncio.Task.done
_base_result = asyncio.Task.result
_base_set_name = asyncio.Task.set_name
_getframe = sys._getframe

# Set by the installed state; None after uninstall so old tasks fall back to plain behaviour.
on_cancel: Callable[[asyncio.Task, Any, Any, int | None], None] | None = None
on_exception_read: Callable[[asyncio.Task, Any], None] | None = None
# True while OpenTelemetry is on: then done(), result() and exception() report a task seen done.
seen_hooks = False


class _PerThread(threading.local):
    """The ids of the tasks whose cancel() is running on this thread, innermost last. Per thread:
    loops in other threads cancel their own tasks at the same time."""

    def __init__(self) -> None:
        self.cancelling: list[int | None] = []


_local = _PerThread()


def _report_error(where: str) -> None:
    from ._guard import internal_error

    internal_error(where)


def _seen(task: Task) -> None:
    """done(), result() or exception() saw the task: with spans on, a task that has no done
    callback of taskwatch's is closed the first time it is seen done (the probe decides)."""
    try:
        release = task._tw_probe_release
    except AttributeError:  # not (or no longer) watched
        return
    release(task, True)


class Task(asyncio.Task):  # type: ignore[misc]
    __slots__ = ("_tw_rec", "_tw_probe_release")

    def cancel(self, msg: Any = None) -> bool:
        hook = on_cancel
        if hook is None:
            return _base_cancel(self, msg)
        stack = _local.cancelling
        try:
            hook(self, msg, _getframe(1), stack[-1] if stack else None)
        except BaseException:
            _report_error("Task.cancel")
        # A task awaiting another forwards cancel() to it from inside this call: the stack lets the
        # inner request name the outer task as the one it came through.
        stack.append(getattr(getattr(self, "_tw_rec", None), "id", None))
        try:
            return _base_cancel(self, msg)
        finally:
            stack.pop()

    def exception(self) -> BaseException | None:
        try:
            exc = _base_exception(self)
        except BaseException:
            if seen_hooks:
                _seen(self)
            raise
        if exc is not None:
            hook = on_exception_read
            if hook is not None:
                try:
                    hook(self, _getframe(1))
                except BaseException:
                    _report_error("Task.exception")
        if seen_hooks:
            _seen(self)
        return exc

    def done(self) -> bool:
        done = _base_done(self)
        if done and seen_hooks:
            _seen(self)
        return done

    def result(self) -> Any:
        try:
            return _base_result(self)
        finally:
            if seen_hooks:
                _seen(self)

    def __del__(self) -> None:
        # Closing the record here costs a fifth of a done callback per task. The base __del__
        # must run: it is what reports "exception was never retrieved" and "destroyed but pending".
        try:
            self._tw_probe_release(self)
        except AttributeError:  # not (or no longer) watched
            pass
        _base_del(self)

    if (3, 13, 0) <= sys.version_info[:3] < (3, 13, 3):
        # gh-130033: with any task factory, 3.13.0-3.13.2 call task.set_name(None) for unnamed
        # tasks, renaming 'Task-7' to 'None'. Without a factory that never happens, so ignore it.
        def set_name(self, value: Any) -> None:
            if value is None and _getframe(1).f_code is _LOOP_CREATE_TASK:
                return
            _base_set_name(self, value)


_LOOP_CREATE_TASK = asyncio.BaseEventLoop.create_task.__code__

# The same class as a C type (taskwatch/_speedups_src/task.c) when the accelerator is built: its
# fields, finalizer, exception(), done() and result() are C; cancel() (and set_name where
# overridden) are the ones above.
CTask: type[Task] | None = None
if speedups is not None:
    CTask = speedups.task_type(asyncio.Task, globals())
    for _name in ("cancel", "set_name", "__doc__"):
        if _name in Task.__dict__:
            setattr(CTask, _name, Task.__dict__[_name])


def task_class(use_speedups: bool) -> type[Task]:
    """The Task class a probe builds: the C one when asked for and built, else the Python one."""
    return CTask if use_speedups and CTask is not None else Task
