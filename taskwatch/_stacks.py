"""Where a suspended task is waiting: its await chain, resolved on demand.

Used by the dump, slow-cancel, orphan, leak and destroyed findings. It reads ``cr_frame``/``cr_await``
of a live task once and returns plain ``Frame`` tuples, keeping nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._sites import Frame

_MAX_DEPTH = 64


def await_chain(task: asyncio.Future | Any) -> tuple[list[Frame], str | None]:
    """Frames of a suspended task, outermost first, and a short description of what it awaits."""
    frames: list[Frame] = []
    try:
        coro = task.get_coro()
    except Exception:
        return frames, None
    awaiting: Any = None
    obj = coro
    for _ in range(_MAX_DEPTH):
        if obj is None:
            break
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(
            obj, "ag_frame", None)
        if frame is None:
            if hasattr(obj, "cr_code") or hasattr(obj, "gi_code"):
                break  # finished coroutine
            awaiting = obj
            break
        code = frame.f_code
        frames.append(Frame(code.co_filename, frame.f_lineno or code.co_firstlineno, code.co_qualname))
        nxt = getattr(obj, "cr_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None)
        if nxt is None:
            nxt = getattr(obj, "ag_await", None)
        if nxt is None:
            break
        obj = nxt
    if awaiting is None and frames:
        # A coroutine suspended on a bare future: ``await fut`` yields the future itself.
        awaiting = getattr(task, "_fut_waiter", None)
    return frames, describe_awaitable(awaiting) if awaiting is not None else None


def describe_awaitable(obj: Any) -> str:
    """A short human description: 'sleep', 'Event.wait', 'Task 'Task-3'', 'Future'."""
    if isinstance(obj, asyncio.Task):
        return f"task '{obj.get_name()}'"
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
    from ._sites import _classify

    kept = [f for f in frames if not _classify(f.file)]
    return kept or frames


def waiting_on(frames: list[Frame], awaiting: str | None) -> str | None:
    """Name what the innermost library frame waits in (sleep, Event.wait, Queue.get...)."""
    from ._sites import _classify

    if frames and _classify(frames[-1].file):
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
