"""taskwatch's own clock: one daemon thread that runs deadlines, so nothing of taskwatch's is ever
among a loop's scheduled timers.

Slow-cancel deadlines, orphan graces and the watchdog's periodic look all used to be ``call_later``
timers on the program's loop. Loops with scripted or virtual time (CPython's ``TestLoop``, the
``looptime`` plugin, simulated clocks) took them for the program's own and misbehaved, and each
timer kept its loop alive. Here a job is a plain callable run on this thread at its time; it
returns when it wants to run again (a ``time.monotonic()`` value) or None. Jobs reach a loop only
when there is something to do there, and must hold only weak references to loops and tasks.

The thread starts with install() and lives until uninstall(), asleep while no job is due; it never
keeps the process alive and is made anew in a forked child (where threads do not survive). A job that raises is counted as an internal error and dropped.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from ._guard import internal_error

Job = Callable[[], "float | None"]

_monotonic = time.monotonic


class Ticker:
    """A heap of (time, job) served by one thread."""

    def __init__(self, name: str = "taskwatch") -> None:
        self.name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._running = True

    def at(self, when: float, job: Job) -> None:
        """Run ``job`` on the ticker thread at ``when`` (monotonic seconds), or soon after."""
        with self._cond:
            if not self._running:
                return
            first = not self._heap or when < self._heap[0][0]
            heapq.heappush(self._heap, (when, next(self._seq), job))
            self._ensure_thread()
            if first:
                self._cond.notify()

    def start(self) -> None:
        """Start the thread now (install()), so that it exists for as long as taskwatch is
        installed instead of appearing in the middle of the program's work: test frameworks
        that count threads around each test (CPython's own) see no thread come and go."""
        with self._cond:
            if self._running:
                self._ensure_thread()

    def stop(self) -> None:
        """Drop every job and end the thread (uninstall)."""
        with self._cond:
            self._running = False
            self._heap.clear()
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout=2)

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: a new lock and, if jobs are waiting, a new thread."""
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        if self._running and self._heap:
            with self._cond:
                self._ensure_thread()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while self._running:
                    if not self._heap:
                        cond.wait()  # idle: no wake-ups until a job comes (or stop())
                        continue
                    delay = self._heap[0][0] - _monotonic()
                    if delay <= 0:
                        break
                    cond.wait(delay)
                if not self._running:
                    return
                _when, _seq, job = heapq.heappop(self._heap)
            try:
                again = job()
            except BaseException:
                internal_error(f"taskwatch thread job {getattr(job, '__qualname__', job)}")
                again = None
            if again is not None:
                with cond:
                    if self._running:
                        heapq.heappush(self._heap, (again, next(self._seq), job))
