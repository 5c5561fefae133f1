"""Where a suspended task is waiting: its await chain, resolved on demand.

Used by the dump, slow-cancel, orphan, leak and destroyed findings. It reads ``cr_frame``/``cr_await``
of a live task once and returns plain ``Frame`` tuples, keeping nothing.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
import types
from typing import Any

from ._sites import Frame

_MAX_DEPTH = 64
# 3.14+: the standard library's own view of a task's await chain (the same frames as the walk
# below for suspended tasks; also right for the running task, which it reads from the stack).
_capture_call_graph = getattr(asyncio, "capture_call_graph", None)


def _frame(frame: Any) -> Frame:
    code = frame.f_code
    return Frame(code.co_filename, frame.f_lineno or code.co_firstlineno, code.co_qualname)


def await_chain(task: asyncio.Future | Any) -> tuple[list[Frame], str | None]:
    """Frames of a suspended task, outermost first, and a short description of what it awaits."""
    if _capture_call_graph is not None and isinstance(task, asyncio.Future):
        try:
            graph = _capture_call_graph(task, limit=_MAX_DEPTH)
        except Exception:
            graph = None
        if graph is not None and graph.call_stack:
            frames = [_frame(entry.frame) for entry in reversed(graph.call_stack)]
            awaiting = getattr(task, "_fut_waiter", None)
            return frames, describe_awaitable(awaiting) if awaiting is not None else None
    return _walk(task)


def _frame_of(obj: Any) -> Any:
    return getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(
        obj, "ag_frame", None)


def _chain(task: Any) -> tuple[list[Any], Any]:
    """The suspended coroutines (generators, async generators) of a task's await chain, outermost
    first, and what the innermost awaits that is none of them (None: nothing, or it finished)."""
    links: list[Any] = []
    obj = task.get_coro()
    for _ in range(_MAX_DEPTH):
        if obj is None:
            break
        if _frame_of(obj) is None:
            if hasattr(obj, "cr_code") or hasattr(obj, "gi_code"):
                break  # finished coroutine
            return links, obj
        links.append(obj)
        nxt = getattr(obj, "cr_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None)
        if nxt is None:
            nxt = getattr(obj, "ag_await", None)
        obj = nxt
    return links, None


def _walk(task: Any) -> tuple[list[Frame], str | None]:
    """The await chain read from ``cr_await`` links (3.11-3.13, and futures 3.14 cannot graph)."""
    try:
        links, awaiting = _chain(task)
        frames = [_frame(_frame_of(link)) for link in links]
    except Exception:  # the task moved on meanwhile (read from another thread)
        return [], None
    if frames and not isinstance(awaiting, asyncio.Future):
        # ``await fut`` ends the chain at the future's iterator (or at nothing): the future the
        # task waits on is the one it names.
        waiter = getattr(task, "_fut_waiter", None)
        if waiter is not None:
            awaiting = waiter
    return frames, describe_awaitable(awaiting) if awaiting is not None else None


def describe_awaitable(obj: Any) -> str:
    """A short human description: 'sleep', 'Event.wait', 'Task 'Task-3'', 'Future'."""
    if isinstance(obj, asyncio.Task):
        try:
            return f"task '{obj.get_name()}'"
        except Exception:
            return "task"
    if isinstance(obj, asyncio.Future):
        callbacks = getattr(obj, "_callbacks", None) or []
        for cb, _ctx in callbacks:
            name = getattr(cb, "__qualname__", "") or getattr(getattr(cb, "func", None), "__qualname__", "")
            if name.startswith("_release_waiter") or "sleep" in name:
                return "sleep"
        return "future"
    return type(obj).__qualname__


def user_frames(frames: list[Frame]) -> list[Frame]:
    """Drop frames inside asyncio/taskwatch/loop libraries (their code is not the user's)."""
    from ._sites import is_internal_file

    kept = [f for f in frames if not is_internal_file(f.file)]
    return kept or frames


def waiting_on(frames: list[Frame], awaiting: str | None) -> str | None:
    """Name what the innermost library frame waits in (sleep, Event.wait, Queue.get...)."""
    from ._sites import is_internal_file

    if frames and is_internal_file(frames[-1].file):
        return frames[-1].function
    return awaiting


def at_phrase(frames: list[Frame], waits: str | None) -> str:
    """``at app.py:12 in worker (waiting in sleep)``, or '' when nothing is known."""
    if not frames:
        return f"waiting in {waits}" if waits else ""
    text = f"at {frames[-1].short()}"
    if waits:
        text += f" (waiting in {waits})"
    return text


# Objects a reference walk passes through without judging them: containers and bound methods.
_PASS_THROUGH = (dict, list, tuple, set, frozenset, types.MethodType)
# Objects it never enters: code, functions, modules and classes lead to everything.
_OPAQUE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType,
           types.FrameType, types.CoroutineType, types.GeneratorType, asyncio.Future)
_WALK_DEPTH = 5
_WALK_BUDGET = 500
# Modules whose objects hold the one task they time, to cancel it (asyncio.timeout, aiohttp's
# timer, async-timeout): a reference from one of them that the task's own stack holds is no one
# keeping the task. Any other object may be the program's registry and counts as keeping it: a
# library's container (a deque, a queue), and also a task group or an anyio cancel scope, which
# hold the tasks that belong to them (a worker handed its group is kept by that group).
_TIMER_MODULES = ("asyncio.timeouts", "aiohttp.helpers", "async_timeout")
_timer_classes: dict[type, bool] = {}


def _timer_class(cls: type) -> bool:
    known = _timer_classes.get(cls)
    if known is None:
        known = (getattr(cls, "__module__", "") or "") in _TIMER_MODULES
        if len(_timer_classes) < 4096:
            _timer_classes[cls] = known
    return known


def held_by_own_timers(task: Any) -> int:
    """References to ``task`` held, through its own suspended frames, by the timers it entered:
    a timeout keeps the task to cancel it later (``asyncio.timeout``'s ``Timeout``, aiohttp's
    timer, async-timeout's). Such a reference says nothing about anyone keeping the task. Only a
    path whose first object that is not a plain container is of such a class counts: any other
    object the task holds (``self`` with a set of its tasks, a queue of tasks, a task group) may
    be the program keeping it. A bounded walk; 0 when the task is running."""
    # the coroutines of the chain: a coroutine's own traversal yields its frame's locals and
    # stack (its frame object's does not)
    try:
        coros = _chain(task)[0]
    except Exception:
        return 0
    if any(getattr(c, "cr_running", False) or getattr(c, "gi_running", False)
           or getattr(c, "ag_running", False) for c in coros):
        return 0  # running now: its stack is not settled
    count, budget = 0, _WALK_BUDGET
    seen = {id(task)} | {id(c) for c in coros}
    # (object, whether the path to it went through a library object: None = not decided yet)
    frontier: list[tuple[Any, bool | None]] = [(c, None) for c in coros]
    for _ in range(_WALK_DEPTH):
        nxt_frontier: list[tuple[Any, bool | None]] = []
        for holder, library in frontier:
            for ref in gc.get_referents(holder):
                if ref is task:
                    count += bool(library)
                    continue
                if id(ref) in seen or isinstance(ref, _OPAQUE) or budget <= 0:
                    continue
                seen.add(id(ref))
                budget -= 1
                verdict = library
                if verdict is None and not isinstance(ref, _PASS_THROUGH):
                    verdict = _timer_class(type(ref))
                if verdict is False:
                    continue  # the program's own object: whatever it holds, it keeps
                nxt_frontier.append((ref, verdict))
        frontier = nxt_frontier
        if not frontier:
            break
    del coros, frontier
    return count


# How far ``ends_complete`` follows a done callback's references to the waiter it completes.
_LINK_DEPTH = 3
_LINK_BUDGET = 200
# Objects it never enters: they lead to everything, or to other tasks' state.
_LINK_OPAQUE = (types.ModuleType, type, types.CodeType, types.FrameType, types.CoroutineType,
                types.GeneratorType, types.BuiltinFunctionType, asyncio.Future)


def ends_complete(task: Any, waiter: Any) -> bool:
    """Whether ``task``'s end completes ``waiter``, the future another task is suspended on: one of
    its done callbacks reaches the waiter within a few plain references, as gather()'s and
    asyncio.wait()'s closures, a TaskGroup's bound method (asyncio's, anyio's) and 3.11
    wait_for's partial do. A bounded walk over references only: no code of the program runs."""
    try:
        frontier = [cb for cb, _ctx in (getattr(task, "_callbacks", None) or ())]
    except (TypeError, ValueError):  # a future-like object with callbacks of another shape
        return False
    seen: set[int] = set()
    budget = _LINK_BUDGET
    for _ in range(_LINK_DEPTH + 1):
        nxt: list[Any] = []
        for obj in frontier:
            if obj is waiter:
                return True
            if id(obj) in seen or budget <= 0 or isinstance(obj, _LINK_OPAQUE):
                continue
            seen.add(id(obj))
            budget -= 1
            nxt.extend(_links(obj))
        frontier = nxt
    return False


def _links(obj: Any) -> list[Any]:
    """What a done callback (or an object it holds) refers to, for ``ends_complete``."""
    if isinstance(obj, types.FunctionType):  # its closure, not its globals
        out = []
        for cell in obj.__closure__ or ():
            try:
                out.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        return out
    if isinstance(obj, types.MethodType):
        return [obj.__self__]
    if isinstance(obj, functools.partial):
        return [*obj.args, *(obj.keywords or {}).values()]
    return list(gc.get_referents(obj))  # containers and instances: their items and attributes
