"""Where a suspended task is waiting: its await chain, resolved on demand.

Used by the dump, slow-cancel, orphan, leak and destroyed findings. It reads ``cr_frame``/``cr_await``
of a live task once and returns plain ``Frame`` tuples, keeping nothing.
"""

from __future__ import annotations

import asyncio
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


def _only(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else None


def _group_tasks(group: Any, waiter: Any) -> list[Any] | None:
    """A task group's tasks, if the waiter is the future its exit waits on."""
    if group is None or getattr(group, "_on_completed_fut", None) is not waiter:
        return None
    tasks = getattr(group, "_tasks", None)
    return list(tasks) if type(tasks) is set else None


def _waits_for_tasks() -> dict[Any, Any]:
    """Code objects of asyncio's and anyio's coroutines that wait for other tasks' ends, each with
    how to find those tasks among the coroutine's locals (given unnamed, by its own traversal, so
    no locals snapshot is left on the frame) and the future it waits on: a TaskGroup's exit,
    asyncio.wait(), and wait_for() cancelling its task (3.11). Built when asked: anyio may be
    imported late."""
    table: dict[Any, Any] = {}
    aexit = getattr(asyncio.TaskGroup, "_aexit", None) or asyncio.TaskGroup.__aexit__
    table[aexit.__code__] = lambda refs, waiter: _group_tasks(
        _only([r for r in refs if type(r) is asyncio.TaskGroup]), waiter)
    tasks_module = sys.modules["asyncio.tasks"]
    wait = getattr(tasks_module, "_wait", None)
    if wait is not None:  # its set of futures, while it waits on its own waiter
        table[wait.__code__] = lambda refs, waiter: (
            list(fs) if any(r is waiter for r in refs)
            and (fs := _only([r for r in refs if type(r) is set])) is not None else None)
    cancel_and_wait = getattr(tasks_module, "_cancel_and_wait", None)
    if cancel_and_wait is not None:  # the future it cancelled, while it waits on its own waiter
        table[cancel_and_wait.__code__] = lambda refs, waiter: (
            [fut] if any(r is waiter for r in refs) and (fut := _only(
                [r for r in refs if r is not waiter and issubclass(type(r), asyncio.Future)]))
            is not None else None)
    group = getattr(sys.modules.get("anyio._backends._asyncio"), "TaskGroup", None)
    code = getattr(getattr(group, "__aexit__", None), "__code__", None)
    if isinstance(group, type) and code is not None:
        table[code] = lambda refs, waiter: _group_tasks(
            _only([r for r in refs if type(r) is group]), waiter)
    return table


def awaited_tasks(task: Any) -> list[Any] | None:
    """The tasks whose end a suspended ``task`` waits for, when it waits in one of asyncio's or
    anyio's ways of waiting for tasks: ``await`` of a task (and wait_for on 3.12+), gather(), a
    TaskGroup's exit, asyncio.wait(), wait_for() cancelling its task (3.11), anyio's task group
    exit. None when it waits on anything else. Reads only those objects, checked by exact type,
    and runs no code of the program."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return None
    if issubclass(type(waiter), asyncio.Task):
        return [waiter]
    gathering = getattr(sys.modules["asyncio.tasks"], "_GatheringFuture", None)
    if gathering is not None and type(waiter) is gathering:
        children = getattr(waiter, "_children", None)
        return list(children) if type(children) is list else None
    try:
        links, _ = _chain(task)
    except Exception:  # the task moved on meanwhile (read from another thread)
        return None
    frame = _frame_of(links[-1]) if links else None
    read = _waits_for_tasks().get(frame.f_code) if frame is not None else None
    if read is None:
        return None
    refs = []
    for ref in gc.get_referents(links[-1]):  # locals a closure shares are in cells
        if type(ref) is types.CellType:
            try:
                ref = ref.cell_contents
            except ValueError:  # an empty cell
                continue
        refs.append(ref)
    found = read(refs, waiter)
    if found is None:
        return None
    return [t for t in found if issubclass(type(t), asyncio.Future)]
