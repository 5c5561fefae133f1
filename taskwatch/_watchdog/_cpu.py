"""CPU shares by sampling (``cpu_sampling``): which task, and which creation site, the event loop's
CPU time goes to, the busy side of tokio-console's busy/idle split.

The accelerator's thread (``sampler.c``) asks for a sample every ``cpu_sampling`` seconds while the
main thread uses CPU; the interpreter runs :meth:`CpuSampler.sample` on the main thread between two
bytecodes of whatever runs there. A sample credits the CPU time the main thread used since the
previous sample to the task running at that moment (``rec.busy``) and to its creation site; with no
task running, to the loop itself (callbacks, transports, the selector), or, with no loop running,
to code outside any loop. It is a statistical profile: each sample stands for about one interval.

Limits, by construction: only the main thread is sampled (the interpreter runs these calls there
only); before Python 3.13 (see ``unavailable``), off Linux, on a free-threaded build or without the
C accelerator there is no sampler. A step
counter per task would need a hook on every step (``sys.monitoring`` costs 1.2-1.5 us per step,
measured), so none is kept.
"""

from __future__ import annotations

import atexit
import threading
import traceback
import time
from asyncio import events
from typing import Any

from .._core._accel import speedups
from .._core._guard import internal_error, report_later
from .._core._probe import _running_task

_thread_time_ns, _monotonic_ns = time.thread_time_ns, time.monotonic_ns
_SITES = 10_000  # distinct (coroutine, creation site) keys kept; more are counted apart
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
    """The Python side of the sampler, as an instrument (``stats`` and ``after_fork``)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started = time.monotonic()
        self.total = 0.0      # the main thread's CPU seconds, sampled
        self.samples = 0
        self.no_task = 0.0    # the loop running no task: callbacks, transports, the selector
        self.outside = 0.0    # the main thread running no event loop
        self.unwatched = 0.0  # a task taskwatch keeps no record of
        self.other_sites = 0.0
        self.unattributed = 0.0  # sampled just after the main thread slept: not credited
        self._stale_ns = max(int(interval * 1e9) // 2, 100_000)
        # (id of the coroutine's code, id of the site's code, offset) -> [seconds, code, site]
        self.sites: dict[tuple[int, int, int], list[Any]] = {}
        self._last = 0  # the main thread's CPU time at the last sample, ns
        self._failed = 0  # samples that failed, and the first one's traceback, reported later
        self._error: str | None = None
        self._reported = 0
        self._c_failed = speedups.sampler_stats()[4] if speedups is not None else 0
        self._running = False

    # -- the sample: main thread, GIL held, between two bytecodes of anything -------------------
    def sample(self, asked_ns: int, asked_cpu_ns: int) -> None:
        """Credit the CPU time since the last sample. Runs inside the program's own code, like a
        signal handler: it takes no lock, waits on nothing and lets no exception out.

        ``asked_ns``/``asked_cpu_ns``: when the sampler's thread asked (monotonic) and the main
        thread's CPU time then. If the main thread slept between the asking and now (the ask
        raced with a system call), this point is after the sleep, in whatever woke: the time is
        counted apart (``unattributed``), not credited to it."""
        try:
            now = _thread_time_ns()
            weight = (now - self._last) / 1e9
            self._last = now
            if weight <= 0.0:
                return
            self.total += weight
            self.samples += 1
            if (_monotonic_ns() - asked_ns) - (now - asked_cpu_ns) > self._stale_ns:
                self.unattributed += weight
                return
            loop = events._get_running_loop()
            if loop is None:
                self.outside += weight
                return
            task = _running_task(loop)
            if task is None:
                self.no_task += weight
                return
            try:
                rec = getattr(task, "_tw_rec", None)
            except Exception:  # a Task subclass's own __getattr__
                rec = None
            if rec is None:
                self.unwatched += weight
                return
            rec.busy += weight
            # Keyed by ids: hashing a code object reads all of its bytecode and constants (tens
            # of microseconds for a large function). The value keeps both code objects alive, so
            # their ids are not reused while the key exists.
            coro, stack = rec.coro, rec.stack
            key = (id(coro), id(stack[0]), stack[1]) if stack else (id(coro), 0, 0)
            sites = self.sites
            site = sites.get(key)
            if site is not None:
                site[0] += weight
            elif len(sites) < _SITES:
                sites[key] = [weight, coro, stack[:2] if stack else None]
            else:
                self.other_sites += weight
        except (KeyboardInterrupt, SystemExit):
            raise  # a signal handler's, run while the sample ran: the program's, not taskwatch's
        except BaseException:
            # Not internal_error() here: the main thread may be inside it, holding its lock.
            self._failed += 1
            if self._error is None:
                self._error = traceback.format_exc()

    # -- the thread --------------------------------------------------------------------------------
    def start(self) -> None:
        assert speedups is not None
        main = threading.main_thread()
        ident, native_id = main.ident, main.native_id
        if ident is None or native_id is None:
            raise RuntimeError("no main thread")
        # the main thread's CPU clock, which time.thread_time_ns() reads there
        self._last = time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        speedups.sampler_start(self.interval, max(IDLE, self.interval), ident, native_id,
                               self.sample)
        self._running = True
        # Before the interpreter is torn down: its thread must not queue calls into a finishing
        # interpreter.
        atexit.register(self.stop)

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        if speedups is not None:
            speedups.sampler_stop()

    def after_fork(self) -> None:
        """The child has no sampler thread: start a new one for the child's main thread."""
        if speedups is None or not self._running:
            return
        speedups.sampler_after_fork()
        self._running = False
        atexit.unregister(self.stop)
        try:
            self.start()
        except BaseException:
            internal_error("restart the cpu sampler after fork")

    def stats(self, out: dict[str, Any]) -> None:
        self._report_failures()
        out["cpu_sampled_s"] = round(self.total, 6)
        out["cpu_samples"] = self.samples

    def _report_failures(self) -> None:
        """Report, from a reader's thread, the samples that failed on the main thread (and the
        calls that failed before reaching :meth:`sample`, counted in C)."""
        failed = self._failed + (speedups.sampler_stats()[4] - self._c_failed
                                 if speedups is not None else 0)
        while self._reported < failed:
            self._reported += 1
            report_later("cpu sample", self._error or "(the call failed before the sample ran)")

    # -- reading (any thread) ----------------------------------------------------------------------
    def summary(self, top: int = 10) -> dict[str, Any]:
        """The totals and the ``top`` creation sites by CPU, as plain JSON data."""
        from .._core import _sites

        self._report_failures()
        total = self.total
        sites = sorted(list(dict(self.sites).values()), key=lambda item: -item[0])
        rows = []
        for seconds, coro, stack in sites[:top]:
            frame = _sites.site(stack) if stack else None
            rows.append({"coro": _sites.qualified_name(coro),
                         "created_at": frame.as_dict() if frame else None,
                         "busy_s": round(seconds, 6), "share": _share(seconds, total)})
        requests, refused, wakeups, asleep, _failed = (
            speedups.sampler_stats() if speedups is not None else (0, 0, 0, 0, 0))
        return {
            "interval_s": self.interval,
            "sampled_s": round(total, 6),
            "samples": self.samples,
            "since_s": round(time.monotonic() - self.started, 3),
            "tasks_s": round(total - self.no_task - self.outside - self.unwatched
                             - self.unattributed, 6),
            "loop_s": round(self.no_task, 6),
            "outside_loop_s": round(self.outside, 6),
            "unwatched_tasks_s": round(self.unwatched, 6),
            "other_sites_s": round(self.other_sites, 6),
            "unattributed_s": round(self.unattributed, 6),
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
