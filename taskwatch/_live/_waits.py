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

from .._core._stacks import _chain, _frame_of

_monotonic = time.monotonic


def point(task: Any) -> tuple[Any, ...] | None:
    """The task's suspension point, or None (running now, done, or not readable)."""
    try:
        links, _awaiting = _chain(task)
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

    def look(self, pairs: list[tuple[Any, Any]]) -> dict[int, float | None]:
        """Note each (record, task)'s point; return, by task id, how long it has waited there at
        least (None: not known yet, or not waiting). Forgets tasks that are gone."""
        now = _monotonic()
        if self.first_look is None:
            self.first_look = now
        seen, fresh = self._seen, {}
        out: dict[int, float | None] = {}
        for rec, task in pairs:
            key = point(task)
            if key is None:
                out[rec.id] = None
                continue
            before = seen.get(rec.id)
            if before is not None and before[0] == key:
                fresh[rec.id] = before
                out[rec.id] = now - before[1]
            else:
                fresh[rec.id] = (key, now)
                out[rec.id] = None
        self._seen = fresh
        return out
