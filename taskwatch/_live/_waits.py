"""How long each pending task has been waiting where it is, as a lower bound that costs nothing
per step.

A task's suspension point is the innermost frame of its await chain (code object and instruction
offset) and the future it waits on (by id): a task that resumed and suspended again at the same
line waits on a new future, so the point counts as new. Each look (a snapshot) notes the points;
a task found at the point it was at in an earlier look has waited there at least since that look.
Nothing is recorded between looks, so the first look knows no wait and says so.
"""

from __future__ import annotations

import time
from typing import Any

from .._core._stacks import _frame_of

_monotonic = time.monotonic


def point(links: list[Any], task: Any) -> tuple[Any, ...] | None:
    """The suspension point of a task whose await chain is ``links`` (``_stacks._chain``), or None
    (running now, done, or not readable)."""
    try:
        if not links:
            return None
        frame = _frame_of(links[-1])
        if frame is None:
            return None
        return (frame.f_code, frame.f_lasti, id(getattr(task, "_fut_waiter", None)))
    except Exception:  # read from another thread while the task moved on
        return None


class Waits:
    """The points seen at the last look, by task id, with when each was first seen."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[tuple[Any, ...], float]] = {}
        self.first_look: float | None = None  # monotonic time of the first look

    def look(self, points: list[tuple[int, tuple[Any, ...] | None]]) -> dict[int, float | None]:
        """Note each (task id, point); return, by task id, how long it has waited there at least
        (None: not known yet, or not waiting). Forgets tasks that are gone."""
        now = _monotonic()
        if self.first_look is None:
            self.first_look = now
        seen, fresh = self._seen, {}
        out: dict[int, float | None] = {}
        for task_id, key in points:
            if key is None:
                out[task_id] = None
                continue
            before = seen.get(task_id)
            if before is not None and before[0] == key:
                fresh[task_id] = before
                out[task_id] = now - before[1]
            else:
                fresh[task_id] = (key, now)
                out[task_id] = None
        self._seen = fresh
        return out
