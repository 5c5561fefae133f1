"""The Task subclass taskwatch's factory builds: a C Task that also reports ``cancel()`` calls.

Only ``cancel`` (and ``exception``, to spot errors lost inside ``gather``) are overridden, so tasks
keep the C implementation's speed and behaviour. The class is named ``Task`` so reprs and asyncio's
own messages ("Task exception was never retrieved") read exactly as without taskwatch. No
``__del__`` is defined: a subclass ``__del__`` that skips the base one would silence asyncio's
"never retrieved" report.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

_base_cancel = asyncio.Task.cancel
_base_exception = asyncio.Task.exception
_base_set_name = asyncio.Task.set_name
_getframe = sys._getframe

# Set by the installed state; None after uninstall so old tasks fall back to plain behaviour.
on_cancel: Callable[[asyncio.Task, Any, Any, int | None], None] | None = None
_cancelling: list[int | None] = []
on_exception_read: Callable[[asyncio.Task, Any], None] | None = None


def _report_error(where: str) -> None:
    from ._guard import internal_error

    internal_error(where)


class Task(asyncio.Task):  # type: ignore[misc]
    __slots__ = ("_tw_rec",)

    def cancel(self, msg: Any = None) -> bool:
        hook = on_cancel
        if hook is None:
            return _base_cancel(self, msg)
        try:
            hook(self, msg, _getframe(1), _cancelling[-1] if _cancelling else None)
        except BaseException:
            _report_error("Task.cancel")
        # A task awaiting another forwards cancel() to it from inside this call: the stack lets the
        # inner request name the outer task as the one it came through.
        _cancelling.append(getattr(getattr(self, "_tw_rec", None), "id", None))
        try:
            return _base_cancel(self, msg)
        finally:
            _cancelling.pop()

    def exception(self) -> BaseException | None:
        exc = _base_exception(self)
        if exc is not None:
            hook = on_exception_read
            if hook is not None:
                try:
                    hook(self, _getframe(1))
                except BaseException:
                    _report_error("Task.exception")
        return exc

    if (3, 13, 0) <= sys.version_info[:3] < (3, 13, 3):
        # gh-130033: with any task factory, 3.13.0-3.13.2 call task.set_name(None) for unnamed
        # tasks, renaming 'Task-7' to 'None'. Without a factory that never happens, so ignore it.
        def set_name(self, value: Any) -> None:
            if value is None and _getframe(1).f_code is _LOOP_CREATE_TASK:
                return
            _base_set_name(self, value)


_LOOP_CREATE_TASK = asyncio.BaseEventLoop.create_task.__code__
