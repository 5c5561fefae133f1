"""CPU shares between looks: each look notes every live task's sampled CPU (``rec.busy``) and the
sampler's total, so the next look can say what share of the CPU each group took since then, as
``top`` does. The first look has no earlier one and gives the share since sampling began.
"""

from __future__ import annotations

import time
from typing import Any

_monotonic = time.monotonic


class Busy:
    """The CPU seen at the last look: the sampler's total and each task's, by task id."""

    def __init__(self) -> None:
        self._total = 0.0
        self._at = 0.0
        self._tasks: dict[int, float] = {}

    def look(self, sampler: Any, records: list[Any]) -> tuple[dict[int, float], float, float]:
        """(CPU seconds of each task since the last look, by id; the sampler's CPU seconds since
        then; the seconds since then, wall clock). Forgets tasks that are gone."""
        now, total = _monotonic(), sampler.total
        if not self._at:
            self._at = sampler.started
        before = self._tasks
        fresh = {rec.id: rec.busy for rec in records}
        deltas = {task_id: busy - before.get(task_id, 0.0) for task_id, busy in fresh.items()}
        window, spent = now - self._at, total - self._total
        self._tasks, self._total, self._at = fresh, total, now
        return deltas, spent, window
