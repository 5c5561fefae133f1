"""Watchdog: which task blocked the event loop, for how long, doing what.

Everything runs on taskwatch's own thread (``_ticker``); nothing is scheduled on the program's loop
while all is well. While a watched loop runs (between entering and leaving ``run_forever`` /
``run_until_complete``, see ``_hooks``), the thread looks at the loop thread's innermost frame a few
dozen times a second:

* waiting for I/O (the selector, or uvloop's C loop with no Python frame above the run call): the
  loop is free, nothing to do;
* running something: the thread posts one ``call_soon_threadsafe`` ping and measures how late it
  runs. A ping that has not run after half the block threshold means one step is holding the
  loop: the thread then samples the loop thread's stack, its CPU time and its scheduler times
  (``/proc``: on-CPU and run-queue wait, so a CPU-bound block on a busy machine or under a
  container quota is still called CPU-bound) until the ping runs, and reports the block.

A block exists only while the loop runs: slow work between two runs of a loop is not a block. The
thread holds no loop, task or frame between looks and never keeps the process alive.
"""

from __future__ import annotations

import asyncio
import collections
import faulthandler
import gc
import os
import sys
import threading
import time
import weakref
from typing import Any

from . import _blocks
from .._core import _guard, _hotpath, _sites
from .._core._accel import speedups as _speedups
from ._blocks import Block
from .._core._state import State

_monotonic = time.monotonic
_current_task = asyncio.current_task  # from another thread: the loop's running task
_thread_time = time.thread_time
_get_ident = threading.get_ident
_MAX_FRAMES = 64
_MAX_SAMPLES = 1000
_LAG_SAMPLES = 4096
_SELECTORS = os.sep + "selectors.py"
# Longest a loop's run end waits for a look in progress on taskwatch's thread (seconds).
_FLUSH_TIMEOUT = 2.0
# Share of a block's wall time the loop thread wanted a CPU above which the block is CPU-bound.
_CPU_BOUND = 0.9

# Seconds spent in the cyclic garbage collector, per thread: a block that is really a GC pause of
# the loop thread says so (collections in other threads do not stop the loop).
_gc_seconds: collections.defaultdict[int, float] = collections.defaultdict(float)
_gc_started: dict[int, float] = {}


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    ident = _get_ident()
    if phase == "start":
        _gc_started[ident] = time.perf_counter()
    else:
        started = _gc_started.pop(ident, None)
        if started is not None:
            _gc_seconds[ident] += time.perf_counter() - started


def _gil_changed_hands(gil_wait: float, runs: int | None) -> bool:
    """Whether taskwatch's thread, kept from the GIL for ``gil_wait`` seconds, was kept from it
    by a loop that kept handing it back and taking it again (many short steps, each releasing
    it in select() or I/O), not by one thread holding it.

    CPython's waiter for the GIL sleeps on a timed wait of the switch interval (5 ms); it asks
    the holder to let go only when that wait expires with no hand-over in between. A holder that
    never lets go wakes it once per interval (measured: 195-199 times a second on 3.11 and 3.15).
    A loop that releases and retakes the GIL every few hundred microseconds wakes it at each
    release but retakes the GIL first, so the waiter starves for seconds (measured: 300 to
    10,800 wakes a second, or none at all on 3.13+) while the loop runs short steps: that is no
    block, and the loop's CPU in that gap says nothing about one. With several threads waiting
    for the GIL, each release wakes only one of them, and a starved waiter's rate can fall near a
    held GIL's: such a gap is still taken for a block (seen once, a 1.9 s false block, in a test
    suite's process full of threads)."""
    if runs is None or gil_wait <= 0:
        return False
    expected = gil_wait / max(sys.getswitchinterval(), 1e-4)
    return runs > 2 * expected + 20 or runs < expected / 5


def _switches(call: str, *args: Any) -> Any:
    """switches.c's ``switches_<call>``: the loop thread's longest stretch without a context
    switch (3.14+). None without the accelerator, or when it failed (counted, never raised)."""
    if _speedups is None:
        return None
    try:
        return getattr(_speedups, "switches_" + call)(*args)
    except Exception:
        _guard.internal_error("watchdog (context watcher)")
        return None


def _cpu_clock(thread_id: int) -> Any:
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError, OverflowError):
        return None


def _cpu_time(clock: Any) -> float | None:
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:
        return None


def _busy(before: Any, after: Any) -> float | None:
    """Seconds the loop thread wanted a CPU (on one, or waiting for one) between two readings."""
    if before[2] is not None and after[2] is not None:
        return (after[2][0] - before[2][0]) + (after[2][1] - before[2][1])
    if before[1] is not None and after[1] is not None:
        return after[1] - before[1]
    return None


class _SchedStats:
    """Each watched thread's ``/proc/self/task/TID/schedstat``, opened once and re-read with
    ``pread``: every look reads two (the loop thread's, taskwatch's own), and an open costs ten
    times a read (about 40 us against 2 here), most of an idle process's watchdog CPU.

    An fd is checked against the file it was opened on before each read (fstat), so one the
    program closed, or whose number it reused, is forgotten and never read or closed by
    taskwatch; a thread that ended reads as an error and is reopened (its id may be reused).
    """

    _MAX = 64  # threads remembered; the oldest is closed past that

    def __init__(self) -> None:
        self.fds: dict[int, tuple[int, int, int]] = {}  # native id -> (fd, st_dev, st_ino)
        self.lock = threading.Lock()

    def read(self, native_id: int | None) -> tuple[float, float, int] | None:
        """(seconds on a CPU, seconds runnable but waiting for one, times it was scheduled in)
        of a thread."""
        if native_id is None:
            return None
        for _ in range(2):
            entry = self.fds.get(native_id)
            if entry is None:
                entry = self._open(native_id)
                if entry is None:
                    return None
            fd = entry[0]
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != entry[1:]:
                    self._forget(native_id, entry, close=False)  # not ours any more
                    continue
                on_cpu, waiting, runs = os.pread(fd, 128, 0).split()[:3]
                return int(on_cpu) / 1e9, int(waiting) / 1e9, int(runs)
            except (OSError, ValueError):
                self._forget(native_id, entry, close=True)  # the thread ended: try its id anew
        return None

    def _open(self, native_id: int) -> tuple[int, int, int] | None:
        try:
            fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        entry = (fd, st.st_dev, st.st_ino)
        with self.lock:
            if native_id in self.fds:  # another thread opened it meanwhile
                os.close(fd)
                return self.fds[native_id]
            if len(self.fds) >= self._MAX:
                oldest = next(iter(self.fds))
                self._close(self.fds.pop(oldest))
            self.fds[native_id] = entry
        return entry

    def _forget(self, native_id: int, entry: tuple[int, int, int], close: bool) -> None:
        with self.lock:
            if self.fds.get(native_id) == entry:
                del self.fds[native_id]
            else:
                return
        if close:
            self._close(entry)

    @staticmethod
    def _close(entry: tuple[int, int, int]) -> None:
        try:
            st = os.fstat(entry[0])
            if (st.st_dev, st.st_ino) == entry[1:]:
                os.close(entry[0])
        except OSError:
            pass

    def close_all(self) -> None:
        """At uninstall, and in a forked child (whose copies would read the parent's threads)."""
        with self.lock:
            entries, self.fds = list(self.fds.values()), {}
        for entry in entries:
            self._close(entry)


_sched = _SchedStats()
_sched_times = _sched.read


class LoopWatch:
    """One loop: whether it runs, on which thread, the ping in flight and the block seen."""

    def __init__(self, dog: _Watchdog, probe: Any, loop: Any) -> None:
        options = dog.state.options
        self.dog = dog
        self.state = dog.state
        self.probe = probe
        self.loop_ref = weakref.ref(loop)
        self.threshold = options.block_threshold
        self.thread_id: int | None = None
        self.native_id: int | None = None
        self.clock: Any = None
        self.last_free = 0.0
        self.ping_token = 0
        self.ping_posted: float | None = None
        self.ping_ran: tuple[int, float] | None = None
        self.ping_handle: Any = None
        self.last_reading: Any = None  # the loop thread's times at the watchdog's last look
        self.posted_reading: Any = None  # ... and when the ping in flight was posted
        self.free_reading: Any = None  # ... and at the last look that saw the loop free
        self.backdate: float | None = None  # a block seen after a gap began by this look
        # The loop thread's longest stretch without a context switch since the previous look
        # (switches.c, 3.14+), None where it is not measured: a gap whose longest stretch is
        # under the threshold held no block, whatever the heuristics say.
        self.switches = False
        self.longest: float | None = None
        self.block: Block | None = None
        self.stopped = False
        self.lags: collections.deque[float] = collections.deque(maxlen=_LAG_SAMPLES)
        # Held by taskwatch's thread while it looks at this loop (and may be closing a block):
        # the loop's run end waits for it, so a block of that run is reported before it returns.
        self.looking = threading.Lock()

    # -- loop thread ----------------------------------------------------------------------------
    def started(self) -> None:
        """The loop began to run on this thread."""
        if self.stopped:
            return
        ident = _get_ident()
        self.last_free = _monotonic()
        self.ping_posted = None
        self.block = None
        self.clock = _cpu_clock(ident)
        self.native_id = threading.get_native_id()
        self.last_reading = None
        self.backdate = None
        self.switches = bool(_switches("watch", ident))
        self.thread_id = ident
        self.dog.wake()

    def finished(self) -> None:
        """The loop stopped running: a block in progress ended with the step that made it, and
        is reported now, before the program goes on (a test ends, a job returns)."""
        now = _monotonic()
        with self.dog.lock:
            tid, self.thread_id = self.thread_id, None  # no new look at this loop from here on
        if self.switches and tid is not None:
            self.switches = False
            _switches("unwatch", tid)
        # A look in progress may be turning a block of this run into a finding: wait for it,
        # so the finding is out before the program goes on (a test is judged next).
        waited = self.looking.acquire(timeout=_FLUSH_TIMEOUT)
        try:
            with self.dog.lock:
                handle, self.ping_handle = self.ping_handle, None
                block, self.block = self.block, None
                ran = self.ping_ran
                ended = ran[1] if ran is not None and ran[0] == self.ping_token else now
                self.ping_posted = None
        finally:
            if waited:
                self.looking.release()
        if handle is not None:
            try:
                handle.cancel()  # it stays queued, cancelled, until the loop's next run
            except BaseException:
                pass
        if block is not None:
            try:
                self.close(block, ended)
            except BaseException:
                _guard.internal_error("watchdog (block)")

    def _pong(self, token: int) -> None:
        """The ping: runs on the loop, only notes when (and the loop thread's CPU time then, so
        a later look can tell what that thread did after the ping from what the ping measured)."""
        self.ping_ran = (token, _monotonic(), _thread_time())

    # -- watchdog thread ------------------------------------------------------------------------
    def _reading(self, now: float) -> tuple[float, float | None, tuple[float, float] | None, float]:
        """(time, CPU time, scheduler times, GC seconds) of the loop thread now."""
        return (now, _cpu_time(self.clock), _sched_times(self.native_id),
                _gc_seconds.get(self.thread_id or 0, 0.0))

    def look(self, now: float, frames: dict[int, Any]) -> None:
        with self.looking:
            self._look(now, frames)

    def _look(self, now: float, frames: dict[int, Any]) -> None:
        tid = self.thread_id
        if tid is None or self.stopped:
            return
        previous, self.last_reading = self.last_reading, self._reading(now)
        self.longest = _switches("gap", tid) if self.switches else None
        posted = self.ping_posted
        ran = self.ping_ran
        measured = None  # (time, loop thread's CPU time) up to which the ping measured the loop
        if posted is not None and ran is not None and ran[0] == self.ping_token:
            measured = (ran[1], ran[2])
            lag = max(0.0, ran[1] - posted)
            self.lags.append(lag)
            self.ping_posted = None
            backdate, self.backdate = self.backdate, None
            self.ping_handle = None
            self.last_free = max(self.last_free, ran[1])
            with self.dog.lock:
                block, self.block = self.block, None
            if block is None and lag >= self.threshold / 2:
                # late, and never seen in progress: the GIL was held, or this thread starved
                block = self._ping_block(posted, backdate, now, tid)
                block.t1, block.cpu1, block.sched1 = self.last_reading[:3]
                block.late = True
            if block is not None:
                self.close(block, ran[1])
            posted = None
        frame = frames.get(tid)
        if frame is None:
            return
        if posted is None and previous is not None and self.block is None:
            self._held_gil(previous, self.last_reading, frame, measured)
        if posted is None:
            if self._idle(frame):
                self.last_free = now
                self.free_reading = self.last_reading
                self.backdate = None
                return
            self._post(now)
            return
        waited = now - posted
        if waited < self.threshold / 2:
            return
        block = self.block
        if block is None:
            block = self._ping_block(posted, self.backdate, now, tid)
            self._identify(block)
            with self.dog.lock:
                if self.thread_id is None:  # the loop stopped meanwhile
                    return
                self.block = block
        self._sample(block, frame, now)

    def _ping_block(self, posted: float, backdate: float | None, now: float, tid: int) -> Block:
        """A block measured by the ping in flight: it began after the loop was last seen free,
        about half a look before the ping was posted (or at the look before a gap)."""
        start = posted - self.dog.period / 2 if backdate is None else backdate
        block = Block(max(self.last_free, start), now)
        posted_reading = self.posted_reading
        block.t0, block.cpu0, block.sched0, block.gc0 = posted_reading
        block.tid = tid
        free = self.free_reading
        if backdate is None and free is not None and free[0] == self.last_free:
            busy = _busy(free, posted_reading)
            if busy is not None:
                block.busy_start = max(self.last_free, posted - busy)
        return block

    def _held_gil(self, before: Any, after: Any, frame: Any,
                  measured: tuple[float, float] | None = None) -> None:
        """taskwatch's thread could not run for longer than a block: some thread held the GIL
        (the garbage collector, or C code that does not release it). If the loop thread spent
        that time on a CPU (or waiting for one), that was a block of the loop, found after the
        fact: no ping could be posted and no stack sampled while it lasted.

        ``measured``: a ping ran in this gap, at that (time, loop thread CPU time). Up to then
        the ping measured the loop (a block there is already reported, from its lag): only the
        rest of the gap, and the CPU the loop thread used in it, can hold another block."""
        if measured is not None and measured[0] > before[0]:
            if after[1] is None:
                return  # the loop thread's CPU time after the ping is unknown: claim nothing
            before = (measured[0], measured[1], None, before[3])
        gap = after[0] - before[0]
        if gap < self.threshold + self.dog.period:
            return
        busy = _busy(before, after)
        gc_s = after[3] - before[3]
        if busy is None:
            busy = gc_s
        duration = min(gap, busy)
        if duration < self.threshold:
            return
        if self.longest is not None and self.longest < self.threshold:
            return  # the loop thread switched contexts all through the gap: short steps
        own = self.dog.own_wait
        if own is not None:
            # Between its looks taskwatch's thread sleeps for its period, then wants the GIL: the
            # rest of the gap it was waiting for a CPU (own), on one, or asleep waiting for the
            # GIL. Only that GIL wait says a thread held the GIL: if it is under the threshold,
            # the gap is the machine's (the loop may have run many short steps meanwhile). If the
            # loop is busy now, the ping (posted next) measures it, from the last look on.
            gil_wait = gap - self.dog.period - own - (self.dog.own_cpu or 0.0)
            if gil_wait < self.threshold:
                if not self._idle(frame):
                    self.backdate = before[0]
                return
            if _gil_changed_hands(gil_wait, self.dog.own_runs):
                return
            duration = min(duration, gil_wait + self.dog.period)
        block = Block(after[0] - duration, after[0])
        block.t0, block.cpu0, block.sched0, block.gc0 = before
        block.t1, block.cpu1, block.sched1 = after[0], after[1], after[2]
        block.tid = self.thread_id or 0
        block.late = True
        self._identify(block)
        if block.task_rec is not None and not self._idle(frame):
            self._sample(block, frame, after[0])  # still in the task step that held the GIL
        else:
            block.task_rec = block.task_name = None
        self.close(block, after[0])

    def _idle(self, frame: Any) -> bool:
        """The loop thread is waiting for I/O: in the selector (asyncio), or in uvloop's C loop
        with no Python frame above taskwatch's run hook."""
        code = frame.f_code
        return code in self.dog.run_codes or code.co_filename.endswith(_SELECTORS)

    def _post(self, now: float) -> None:
        loop = self.loop_ref()
        if loop is None:
            return
        self.ping_token += 1
        self.ping_posted = now
        self.posted_reading = self.last_reading
        try:
            handle = loop.call_soon_threadsafe(self._pong, self.ping_token)
        except RuntimeError:  # closed meanwhile
            self.ping_posted = None
            return
        self.ping_handle = handle
        if self.thread_id is None:  # the loop stopped meanwhile: leave nothing to run later
            self.ping_handle = self.ping_posted = None
            handle.cancel()

    def _identify(self, block: Block) -> None:
        loop = self.loop_ref()
        if loop is None:
            return
        try:
            task = _current_task(loop)
        except Exception:
            task = None
        if task is not None:
            block.task_rec = getattr(task, "_tw_rec", None)
            try:
                block.task_name = _hotpath.name_of(task)
            except Exception:
                pass

    def _sample(self, block: Block, frame: Any, now: float) -> None:
        block.cpu1 = _cpu_time(self.clock)
        block.sched1 = _sched_times(self.native_id)
        block.t1 = now
        if len(block.samples) >= _MAX_SAMPLES:
            return
        key = (id(frame.f_code), frame.f_lasti)
        stack = []
        importing = None
        while frame is not None and len(stack) < _MAX_FRAMES:
            code = frame.f_code
            stack.append((code.co_filename, frame.f_lineno or code.co_firstlineno, code.co_qualname))
            if code.co_name == "_find_and_load" and code.co_filename.startswith("<frozen"):
                importing = frame  # the outermost import wins: the one the application asked for
            frame = frame.f_back
        if importing is not None:
            try:
                name = importing.f_locals.get("name")
            except Exception:
                name = None
            if isinstance(name, str):
                block.imports[name] += 1
        del importing
        del frame
        stack.reverse()
        if stack and stack[-1][2] == "_gc_callback" and stack[-1][0] == __file__:
            # The GIL changes hands at the first bytecode after a long collection, which is this
            # module's gc callback: the sample belongs to the code that triggered the collection.
            stack.pop()
        sample = tuple(stack)
        if sample and sample[-1][0].startswith(_sites._TASKWATCH_DIR):
            block.internal += 1  # samples of taskwatch's own work on the loop thread
        block.samples.append(sample)
        block.keys.append(key)

    def close(self, block: Block, ended: float) -> None:
        """Turn an observed block into a finding (on the watchdog thread)."""
        if ended - min(block.start, block.busy_start or block.start) < self.threshold:
            return
        if block.samples and block.internal * 2 > len(block.samples):
            return  # mostly taskwatch's own work: not the user's block
        if block.t1 <= block.t0:  # one look only: measure up to now (the loop may be free again)
            block.cpu1 = _cpu_time(self.clock)
            block.sched1 = _sched_times(self.native_id)
            block.t1 = _monotonic()
        span = block.t1 - block.t0
        cpu_share = None
        if block.cpu0 is not None and block.cpu1 is not None and span > 0:
            cpu_share = min(1.0, max(0.0, (block.cpu1 - block.cpu0) / span))
        demand = None
        if block.sched0 is not None and block.sched1 is not None and span > 0:
            busy = (block.sched1[0] - block.sched0[0]) + (block.sched1[1] - block.sched0[1])
            demand = min(1.0, max(0.0, busy / span))
        cpu_bound = demand if demand is not None else cpu_share
        if block.busy_start is not None and cpu_bound is not None and cpu_bound >= _CPU_BOUND:
            # CPU-bound all along: it began when the thread last woke (not half a look earlier)
            block.start = block.busy_start
        duration = ended - block.start
        if duration < self.threshold:
            return
        self.state.record_block(duration)
        gc_s = min(duration, max(0.0, _gc_seconds.get(block.tid, 0.0) - block.gc0))
        finding = _blocks.blocked_loop(self, block, duration, cpu_share, demand, block.start, ended, gc_s)
        if finding is not None:
            self.state.emit(finding)

    def stop(self) -> None:
        self.stopped = True
        self.thread_id = None
        self.switches = False  # the watchdog's stop forgets every thread (switches_stop)

    def lag_samples(self) -> list[float]:
        return list(self.lags)


class _Watchdog:
    """The watchdog's job on taskwatch's thread, serving every watched loop."""

    def __init__(self, state: State, run_codes: frozenset[Any]) -> None:
        self.state = state
        self.run_codes = run_codes
        threshold = state.options.block_threshold
        self.period = max(0.002, min(threshold / 5, 0.025))
        self.watches: list[LoopWatch] = []
        self.lock = threading.Lock()
        self.armed = False
        self.hang = state.options.hang_threshold
        self.hang_armed = False
        self.running = True
        self.own_sched: tuple[float, float, int] | None = None
        self.own_wait: float | None = None  # this thread's run-queue wait since its last look
        self.own_cpu: float | None = None  # ... and its time on a CPU
        self.own_runs: int | None = None  # ... and how many times it was scheduled in

    # -- the state's instrument (see taskwatch._core._instruments) ------------------------------
    def loop_attached(self, probe: Any, loop: Any) -> None:
        _on_attach(probe, loop)

    def after_fork(self) -> None:
        after_fork()

    def add(self, watch: LoopWatch) -> None:
        with self.lock:
            self.watches.append(watch)

    def remove(self, watch: LoopWatch) -> None:
        with self.lock:
            if watch in self.watches:
                self.watches.remove(watch)

    def wake(self) -> None:
        """A loop began to run: make sure the job is on the thread."""
        with self.lock:
            if self.armed or not self.running:
                return
            self.armed = True
        self.state.ticker.at(_monotonic(), self.tick)

    def tick(self) -> float | None:
        with self.lock:
            if not self.running:
                self.armed = False
                return None
            watches = [w for w in self.watches if w.thread_id is not None]
        healthy = True
        if watches:
            own = _sched_times(threading.get_native_id())
            previous, self.own_sched = self.own_sched, own
            self.own_cpu = (own[0] - previous[0]) if own is not None and previous is not None \
                else None
            self.own_wait = (own[1] - previous[1]) if own is not None and previous is not None \
                else None
            self.own_runs = (own[2] - previous[2]) if own is not None and previous is not None \
                else None
            now = _monotonic()
            frames = sys._current_frames()
            try:
                for watch in watches:
                    try:
                        watch.look(now, frames)
                    except BaseException:
                        _guard.internal_error("watchdog thread")
                    if watch.block is not None:
                        healthy = False
            finally:
                del frames
        if self.hang is not None:
            if healthy and watches:
                # Re-armed while the loops are healthy; a hang stops the re-arming and the
                # C-level timer dumps every thread's stack with no need for the GIL.
                faulthandler.dump_traceback_later(self.hang, repeat=False, file=sys.stderr)
                self.hang_armed = True
            elif not watches and self.hang_armed:
                faulthandler.cancel_dump_traceback_later()
                self.hang_armed = False
        with self.lock:
            if not self.running or not any(w.thread_id is not None for w in self.watches):
                self.armed = False
                return None
        return _monotonic() + self.period

    def stop(self) -> None:
        with self.lock:
            self.running = False
            watches = list(self.watches)
            self.watches.clear()
        for watch in watches:
            watch.stop()
        _switches("stop")
        if self.hang_armed:
            faulthandler.cancel_dump_traceback_later()
            self.hang_armed = False


_dog: _Watchdog | None = None


def enable(state: State, run_codes: frozenset[Any] = frozenset()) -> None:
    """Watch every loop that gets a probe from now on (called by install())."""
    global _dog
    _dog = _Watchdog(state, run_codes)
    state.instruments.add(_dog)
    if _gc_callback not in gc.callbacks:
        gc.callbacks.append(_gc_callback)
    for probe in state.live_probes():
        loop = probe.loop_ref()
        if loop is not None:
            _on_attach(probe, loop)


def _on_attach(probe: Any, loop: Any) -> None:
    dog = _dog
    if dog is None or probe.watchdog is not None:
        return
    watch = LoopWatch(dog, probe, loop)
    probe.watchdog = _Stopper(dog, watch)
    dog.add(watch)
    if probe.run_thread is not None:  # attached while running (install() inside the loop)
        watch.started()


class _Stopper:
    """What the probe holds: the loop's run hooks call started()/finished(); stop() forgets it."""

    __slots__ = ("dog", "watch", "started", "finished")

    def __init__(self, dog: _Watchdog, watch: LoopWatch) -> None:
        self.dog = dog
        self.watch = watch
        self.started = watch.started
        self.finished = watch.finished

    def stop(self) -> None:
        self.watch.finished()
        self.watch.stop()
        self.dog.remove(self.watch)

    def lag_samples(self) -> list[float]:
        return list(self.watch.lags)


def after_fork() -> None:
    """In a forked child: taskwatch's thread is gone, and a lock it held at the fork would be
    held forever (a loop's run end would wait on it): make them anew."""
    _sched.lock = threading.Lock()
    _sched.close_all()
    _switches("after_fork")
    dog = _dog
    if dog is None:
        return
    dog.lock = threading.Lock()
    for watch in list(dog.watches):
        watch.looking = threading.Lock()


def disable(state: State) -> None:
    """Stop watching every loop (called by uninstall())."""
    global _dog
    dog, _dog = _dog, None
    if _gc_callback in gc.callbacks:
        gc.callbacks.remove(_gc_callback)
    _gc_seconds.clear()
    _gc_started.clear()
    _sched.close_all()
    if dog is None:
        return
    dog.stop()
    state.instruments.remove(dog)
    for probe in state.live_probes():
        probe.watchdog = None
