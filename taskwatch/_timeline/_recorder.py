"""What a timeline is made of: the finished tasks of the history ring, the tasks live now, and a
ring of the cancels and findings.

The tasks cost the timeline nothing per task: each loop's hot path already appends every finished
task's record to its history ring (``Probe.history``; records hold integers, strings and code keys,
never the task, its coroutine or a frame), and while recording that ring is ``timeline_events``
long (``Options.history_size``). Only the ends must be exact: the state gives every task a done
callback while recording (``State.precise_ends``). Cancels and findings are rare; this instrument
keeps them in a ring of its own. What fell off either ring is counted, so a timeline says how much
it does not show. Slices, tracks and text are made only when a timeline is written.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from .._core._findings import Finding
from .._core._record import CancelRequest, TaskRecord

CANCEL, FINDING = 1, 2
_LABELS = 64
RETIRED = -1  # the key of the tasks of loops that have closed (their ring was folded together)

_monotonic = time.monotonic


class Snapshot:
    """What one timeline shows: finished and live tasks by loop, cancels and findings of the
    window, the loops' names, and the counts of what is missing."""

    __slots__ = ("tasks", "live", "events", "loops", "now", "since", "dropped", "recorded")

    def __init__(self) -> None:
        self.tasks: list[tuple[TaskRecord, int]] = []  # (record, loop key) of finished tasks
        self.live: list[tuple[TaskRecord, int]] = []  # (record, loop key) of tasks pending now
        self.events: list[tuple[Any, ...]] = []  # (CANCEL, request, task id), (FINDING, t, finding)
        self.loops: dict[int, str] = {}  # loop key -> "uvloop loop on thread 'MainThread'"
        self.now = _monotonic()
        self.since: float | None = None  # start of the window (monotonic), None for everything
        self.dropped = 0  # finished tasks, cancels and findings that fell off their rings, ever
        self.recorded = 0  # finished tasks, cancels and findings recorded, ever


class Recorder:
    """The timeline's instrument. One per installed state."""

    def __init__(self, state: Any, size: int) -> None:
        self.state = state
        self.events: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=size)
        self.recorded = 0
        self.labels: dict[int, str] = {}  # id(probe) -> label, learnt while its loop runs

    # -- instrument hooks (rare) -----------------------------------------------------------------
    def loop_attached(self, probe: Any, loop: Any) -> None:
        """Name the loop now: by the time a timeline is written at exit it may have closed."""
        labels = self.labels
        labels[id(probe)] = f"{probe.loop_kind} loop on thread {threading.current_thread().name!r}"
        if len(labels) > _LABELS:  # a program that makes loop after loop: forget the oldest
            del labels[next(iter(labels))]

    def task_cancelled(self, task: Any, rec: TaskRecord) -> None:
        cancels = rec.cancels
        if cancels:
            self.events.append((CANCEL, cancels[-1], rec.id))
            self.recorded += 1

    def finding(self, finding: Finding) -> None:
        self.events.append((FINDING, _monotonic(), finding))
        self.recorded += 1

    def stats(self, out: dict[str, Any]) -> None:
        out["timeline_events"] = self.recorded
        out["timeline_dropped"] = max(0, self.recorded - len(self.events))

    # -- reading -----------------------------------------------------------------------------------
    def snapshot(self, window: float | None = None) -> Snapshot:
        """The rings as they are now (their last ``window`` seconds, if given) and the live tasks.
        Safe from any thread: each ring is copied whole, then filtered."""
        snap = Snapshot()
        state = self.state
        since = snap.since = None if window is None else snap.now - window
        for probe in state.live_probes():
            key = id(probe)
            snap.loops[key] = self._label(probe)
            snap.tasks.extend((rec, key) for rec in probe.history.copy())
            try:
                snap.live.extend((rec, key) for rec, _task in probe.live_records())
            except Exception:  # the loop's task set changed under us: show the rest
                pass
        with state.lock:
            retired = state.retired_history.copy()
            kinds = sorted(state.loop_kinds)
        if retired:
            live = {id(probe) for probe in state.live_probes()}
            closed = sorted({label for key, label in self.labels.items() if key not in live})
            snap.loops[RETIRED] = (f"{closed[0]} (closed)" if len(closed) == 1 else
                                   f"closed {'/'.join(kinds) or 'event'} loops")
            snap.tasks.extend((rec, RETIRED) for rec in retired)
        events = list(self.events.copy())
        if since is not None:
            snap.tasks = [item for item in snap.tasks if item[0].ended >= since]
            events = [event for event in events if _time_of(event) >= since]
        snap.events = events
        stats = state.stats()
        snap.recorded = stats.get("tasks_finished", 0) + stats.get("timeline_events", 0)
        snap.dropped = stats.get("dropped_history", 0) + stats.get("timeline_dropped", 0)
        return snap

    def _label(self, probe: Any) -> str:
        """The loop's kind and thread; the thread is known while it runs, and remembered."""
        key = id(probe)
        thread_id = probe.run_thread
        if thread_id is None:
            return self.labels.get(key) or f"{probe.loop_kind} loop"
        name = next((t.name for t in threading.enumerate() if t.ident == thread_id), None)
        label = f"{probe.loop_kind} loop" + (f" on thread {name!r}" if name else "")
        self.labels[key] = label
        return label


def _time_of(event: tuple[Any, ...]) -> float:
    """When a cancel was requested or a finding recorded."""
    if event[0] == CANCEL:
        req: CancelRequest = event[1]
        return req.at
    return event[1]  # type: ignore[no-any-return]
