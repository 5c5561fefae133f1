"""CPU shares by sampling (``cpu_sampling``): which task, and which creation site, the event loop's
CPU time goes to, the busy side of tokio-console's busy/idle split.

The accelerator's thread (``sampler.c``) asks for a sample every ``cpu_sampling`` seconds while the
main thread uses CPU; the interpreter runs the sample (C) on the main thread between two bytecodes
of whatever runs there. A sample credits the CPU time the main thread used since the previous
sample to the task running at that moment (``rec.busy``) and to its creation site; with no task
running, to the loop itself (callbacks, transports, the selector), or, with no loop running, to
code outside any loop. It is a statistical profile: each sample stands for about one interval.

Limits, by construction: only the main thread is sampled (the interpreter runs these calls there
only); before Python 3.13 (see ``unavailable``), off Linux, on a free-threaded build or without the
C accelerator there is no sampler. A step counter per task would need a hook on every step
(``sys.monitoring`` costs 1.2-1.5 us per step, measured), so none is kept.
"""

from __future__ import annotations

import atexit
import threading
import time
from asyncio import events
from typing import Any

from .._core._accel import speedups
from .._core._guard import internal_error, report_later
from .._core._probe import _PY_CURRENT, _current_task

IDLE = 0.02  # longest sleep of the sampler's thread while the main thread is idle


def unavailable() -> str | None:
    """Why there is no sampler here, or None."""
    import sys

    if sys.version_info < (3, 13):
        # Py_AddPendingCall from another thread flags the main thread only when that thread next
        # takes the GIL (3.13 flags the thread holding it): samples would land after I/O and
        # select(), not where the CPU goes. Measured on 3.11 and 3.12, two tasks taking 75% and
        # 25% of a loop's CPU in short steps: 99% and 0% on uvloop, 0% to any task on asyncio.
        return "CPU sampling needs Python 3.13 or newer"
    if not sys.platform.startswith("linux"):
        return "CPU sampling needs Linux"
    if speedups is None or not hasattr(speedups, "sampler_start"):
        return ("CPU sampling needs the C accelerator, which is not loaded here (not built, "
                "TASKWATCH_SPEEDUPS=0, or a free-threaded build)")
    return None


class CpuSampler:
    """The sampler's Python side, as an instrument (``stats`` and ``after_fork``): starts and
    stops the C thread and reads what its samples added up. The samples themselves are C
    (``sampler.c``): they run inside the program's code and run no bytecode there, so no signal
    handler, tracer or profiler of the program's ever runs inside one or sees one."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started = time.monotonic()
        # (id of the coroutine's code, id of the site's code, offset) -> [seconds, coroutine's
        # code, site's code, offset]; filled by the C samples on the main thread
        self.sites: dict[tuple[int, int, int], list[Any]] = {}
        self._totals: dict[str, Any] = {}  # the last run's, kept after stop()
        self._failed0 = speedups.sampler_stats()[4] if speedups is not None else 0
        self._reported = 0
        self._running = False

    @property
    def total(self) -> float:
        """The main thread's CPU seconds, sampled."""
        return float(self.totals()["total"])

    @property
    def samples(self) -> int:
        return int(self.totals()["samples"])

    def totals(self) -> dict[str, Any]:
        if self._running and speedups is not None:
            self._totals = speedups.sampler_totals()
        return self._totals or {"total": 0.0, "tasks": 0.0, "loop": 0.0, "outside": 0.0,
                                "unwatched": 0.0, "unattributed": 0.0, "other_sites": 0.0,
                                "samples": 0}

    # -- the thread --------------------------------------------------------------------------------
    def start(self) -> None:
        assert speedups is not None
        main = threading.main_thread()
        ident, native_id = main.ident, main.native_id
        if ident is None or native_id is None:
            raise RuntimeError("no main thread")
        self.sites.clear()
        self._totals = {}
        speedups.sampler_start(self.interval, max(IDLE, self.interval), ident, native_id,
                               events._get_running_loop, _current_task, _PY_CURRENT, self.sites)
        self._running = True
        # Before the interpreter is torn down: its thread must not queue calls into a finishing
        # interpreter.
        atexit.register(self.stop)

    def stop(self) -> None:
        if not self._running:
            return
        self.totals()  # the last totals, read while they are there
        self._running = False
        atexit.unregister(self.stop)
        if speedups is not None:
            speedups.sampler_stop()

    def after_fork(self) -> None:
        """The child has no sampler thread: start a new one for the child's main thread, from
        zero (the parent's CPU is not the child's)."""
        if speedups is None or not self._running:
            return
        speedups.sampler_after_fork()
        self._running = False
        atexit.unregister(self.stop)
        self.started = time.monotonic()
        try:
            self.start()
        except BaseException:
            internal_error("restart the cpu sampler after fork")

    def stats(self, out: dict[str, Any]) -> None:
        self._report_failures()
        totals = self.totals()
        out["cpu_sampled_s"] = round(totals["total"], 6)
        out["cpu_samples"] = totals["samples"]

    def _report_failures(self) -> None:
        """Report, from a reader's thread, the samples that failed on the main thread (counted
        there: reporting takes a lock the main thread may hold at that moment)."""
        if speedups is None:
            return
        stats = speedups.sampler_stats()
        while self._reported < stats[4] - self._failed0:
            self._reported += 1
            report_later("cpu sample", f"a sample failed in C with {stats[5]}")

    # -- reading (any thread) ----------------------------------------------------------------------
    def summary(self, top: int = 10) -> dict[str, Any]:
        """The totals and the ``top`` creation sites by CPU, as plain JSON data."""
        from .._core import _sites

        self._report_failures()
        totals = self.totals()
        total = totals["total"]
        sites = sorted(list(dict(self.sites).values()), key=lambda item: -item[0])
        rows = []
        for seconds, coro, code, offset in sites[:top]:
            frame = _sites.site((code, offset)) if code is not None else None
            rows.append({"coro": _sites.qualified_name(coro),
                         "created_at": frame.as_dict() if frame else None,
                         "busy_s": round(seconds, 6), "share": _share(seconds, total)})
        requests, refused, wakeups, asleep, _failed, _first = (
            speedups.sampler_stats() if speedups is not None else (0, 0, 0, 0, 0, None))
        return {
            "interval_s": self.interval,
            "sampled_s": round(total, 6),
            "samples": totals["samples"],
            "since_s": round(time.monotonic() - self.started, 3),
            "tasks_s": round(totals["tasks"], 6),
            "loop_s": round(totals["loop"], 6),
            "outside_loop_s": round(totals["outside"], 6),
            "unwatched_tasks_s": round(totals["unwatched"], 6),
            "other_sites_s": round(totals["other_sites"], 6),
            "unattributed_s": round(totals["unattributed"], 6),
            "sites": rows,
            "requests_refused": refused,
            "wakeups": wakeups,
            "skipped_asleep": asleep,
        }


def _share(part: float, total: float) -> float | None:
    return round(part / total, 4) if total > 0 else None


def section(state: Any) -> dict[str, Any]:
    """The report's and the snapshot's ``cpu`` object: the sampler's summary, or why there is
    none."""
    sampler = getattr(state, "cpu", None)
    if sampler is None:
        why = unavailable() or ("cpu_sampling is off" if not state.options.cpu_sampling
                                else "the sampler did not start")
        return {"sampling": False, "why": why}
    return {"sampling": True, **sampler.summary()}


def text(cpu: dict[str, Any], top: int = 5) -> str:
    """The exit summary's lines on where the main thread's CPU went, by creation site."""
    if not cpu.get("sampling"):
        return ""
    total = cpu["sampled_s"]
    if not total:
        return "taskwatch: CPU: no CPU time was sampled.\n"
    lines = [f"taskwatch: CPU of the main thread, sampled every {cpu['interval_s'] * 1000:g} ms: "
             f"{total:.3f} s, {_pct(cpu['tasks_s'], total)} in tasks, "
             f"{_pct(cpu['loop_s'], total)} in the loop outside tasks, "
             f"{_pct(cpu['outside_loop_s'], total)} outside any loop"]
    for row in cpu["sites"][:top]:
        where = row["created_at"]
        at = f" created at {where['file']}:{where['line']} in {where['function']}" if where else ""
        lines.append(f"  {_pct(row['busy_s'], total):>6}  {row['busy_s']:.3f} s  {row['coro']}{at}")
    return "\n".join(lines) + "\n"


def _pct(part: float, total: float) -> str:
    return f"{100.0 * part / total:.1f}%" if total > 0 else "-"


def start(state: Any) -> CpuSampler | None:
    """Start sampling for ``state`` if its options ask for it and this build can; else None."""
    interval = state.options.cpu_sampling
    if not interval:
        return None
    why = unavailable()
    if why is not None:
        from .._core._guard import logger

        logger.warning("taskwatch: cpu_sampling is off: %s", why)
        return None
    sampler = CpuSampler(interval)
    sampler.start()
    state.instruments.add(sampler)
    return sampler
