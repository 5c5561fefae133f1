"""Watchdog: which task blocked the event loop, for how long, doing what.

Two halves that meet through plain attributes:

* a heartbeat on each watched loop (``call_later`` every few ms) that notes when the loop was last
  free and its thread's CPU clock; when a beat arrives late by at least the block threshold, the
  beat itself measures the whole block and reports it (so a block is reported even when C code held
  the GIL and nothing could be sampled);
* one daemon thread for all loops that sleeps until a loop's beat is overdue, then samples the loop
  thread's stack (``sys._current_frames()``) and current task repeatedly until the loop comes back.

Patching ``asyncio.events.Handle`` would see nothing on uvloop; this works on both. The thread holds
no loop, task or frame between samples, restarts after ``os.fork()`` and never keeps the process alive.
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

from . import _guard, _sites
from ._state import State

_monotonic = time.monotonic
_thread_time = time.thread_time
_MAX_FRAMES = 64
_LAG_SAMPLES = 4096

# Seconds spent in the cyclic garbage collector since enable(): a block that is really a GC pause
# says so instead of blaming the task that happened to be running.
_gc_seconds = 0.0
_gc_started = 0.0


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    global _gc_seconds, _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    elif _gc_started:
        _gc_seconds += time.perf_counter() - _gc_started
        _gc_started = 0.0


class _Block:
    """A block in progress, filled in by the watchdog thread, closed by the next heartbeat."""

    __slots__ = ("beat", "detected", "samples", "task_rec", "task_name", "first_stack", "internal")

    def __init__(self, beat: float, detected: float) -> None:
        self.beat = beat
        self.detected = detected
        self.samples: list[tuple[tuple[str, int, str], ...]] = []
        self.task_rec: Any = None
        self.task_name: str | None = None
        self.first_stack: tuple[tuple[str, int, str], ...] = ()
        self.internal = 0


class LoopWatch:
    """The heartbeat of one loop and the block being observed on it, if any."""

    def __init__(self, state: State, probe: Any, loop: Any) -> None:
        options = state.options
        self.state = state
        self.probe = probe
        self.loop_ref = weakref.ref(loop)
        self.threshold = options.block_threshold
        self.interval = min(options.block_threshold / 20, 0.005)
        self.sample_period = max(min(options.block_threshold / 5, 0.05), 0.005)
        self.thread_id: int | None = None
        self.last_beat = 0.0
        self.last_cpu = 0.0
        self.last_gc = 0.0
        self.block: _Block | None = None
        self.lock = threading.Lock()
        self.handle: Any = None
        self.stopped = False
        self.lags: collections.deque[float] = collections.deque(maxlen=_LAG_SAMPLES)

    # -- loop thread ----------------------------------------------------------------------------
    def start(self, loop: Any) -> None:
        self.handle = loop.call_soon(self.beat)

    def beat(self) -> None:
        """Runs on the loop: note that the loop is free; close a block if this beat came late."""
        if self.stopped:
            return
        now = _monotonic()
        cpu = _thread_time()
        try:
            first = self.thread_id is None
            self.thread_id = threading.get_ident()
            if not first:
                late = now - (self.last_beat + self.interval)
                self.lags.append(late if late > 0 else 0.0)
                if late >= self.threshold:
                    self._close_block(now, cpu, late)
            self.last_beat = now
            self.last_cpu = cpu
            self.last_gc = _gc_seconds
            loop = self.loop_ref()
            if loop is not None and not loop.is_closed():
                self.handle = loop.call_later(self.interval, self.beat)
        except BaseException:
            _guard.internal_error("watchdog heartbeat")

    def _close_block(self, now: float, cpu: float, late: float) -> None:
        with self.lock:
            block, self.block = self.block, None
        if block is not None and block.beat != self.last_beat:
            block = None
        # The block began between the last beat and the moment the next one was due.
        duration = (now - self.last_beat + late) / 2
        cpu_s = max(0.0, cpu - self.last_cpu)
        if block is not None and block.samples and block.internal * 2 > len(block.samples):
            return  # mostly taskwatch's own work: not the user's block
        self.state.record_block(duration)
        from ._blocks import blocked_loop

        gc_s = min(duration, max(0.0, _gc_seconds - self.last_gc))
        finding = blocked_loop(self, block, duration, cpu_s, now - duration, now, gc_s)
        if finding is not None:
            self.state.emit(finding)

    def stop(self) -> None:
        self.stopped = True
        handle, self.handle = self.handle, None
        loop = self.loop_ref()
        if handle is None or loop is None or loop.is_closed():
            return
        try:
            if asyncio._get_running_loop() is loop or not loop.is_running():
                handle.cancel()
            else:
                loop.call_soon_threadsafe(handle.cancel)
        except RuntimeError:
            pass

    # -- watchdog thread ------------------------------------------------------------------------
    def check(self, now: float) -> float:
        """Called by the watchdog thread; returns when it should look again."""
        if self.thread_id is None or self.stopped:
            return now + 0.25
        beat = self.last_beat
        due = beat + self.interval
        if now - due < self.threshold:
            return due + self.threshold
        block = self.block
        if block is None or block.beat != beat:
            block = _Block(beat, now)
            self._identify(block)
            with self.lock:
                self.block = block
        self._sample(block)
        return now + self.sample_period

    def _identify(self, block: _Block) -> None:
        loop = self.loop_ref()
        if loop is None:
            return
        try:
            task = asyncio.current_task(loop)
        except Exception:
            task = None
        if task is not None:
            block.task_rec = getattr(task, "_tw_rec", None)
            try:
                block.task_name = task.get_name()
            except Exception:
                pass

    def _sample(self, block: _Block) -> None:
        frame = sys._current_frames().get(self.thread_id)  # type: ignore[arg-type]
        stack = []
        while frame is not None and len(stack) < _MAX_FRAMES:
            code = frame.f_code
            stack.append((code.co_filename, frame.f_lineno or code.co_firstlineno, code.co_qualname))
            frame = frame.f_back
        del frame
        stack.reverse()
        if stack and stack[-1][2] == "_gc_callback" and stack[-1][0] == __file__:
            # The GIL changes hands at the first bytecode after a long collection, which is this
            # module's gc callback: the sample belongs to the code that triggered the collection.
            stack.pop()
        sample = tuple(stack)
        if not block.samples:
            block.first_stack = sample
        if sample and sample[-1][0].startswith(_sites._TASKWATCH_DIR):
            block.internal += 1  # samples of taskwatch's own work on the loop thread
        if len(block.samples) < 1000:
            block.samples.append(sample)


class _Watchdog:
    """The single daemon thread serving every watched loop."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.watches: list[LoopWatch] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.running = False
        self.hang = state.options.hang_threshold
        self.hang_armed = False

    def add(self, watch: LoopWatch) -> None:
        with self.cond:
            self.watches.append(watch)
            self._ensure_thread()
            self.cond.notify()

    def remove(self, watch: LoopWatch) -> None:
        with self.cond:
            if watch in self.watches:
                self.watches.remove(watch)
            self.cond.notify()

    def _ensure_thread(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.running = True
        self.thread = threading.Thread(target=self._run, name="taskwatch-watchdog", daemon=True)
        self.thread.start()

    def after_fork(self) -> None:
        """In a forked child the thread is gone: make a new lock and thread for surviving loops."""
        self.cond = threading.Condition()
        self.thread = None
        for watch in self.watches:
            watch.lock = threading.Lock()
            watch.block = None
        if self.running and self.watches:
            self._ensure_thread()

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        if self.hang_armed:
            faulthandler.cancel_dump_traceback_later()
            self.hang_armed = False

    def _run(self) -> None:
        while True:
            with self.cond:
                if not self.running:
                    return
                if not self.watches:
                    self.cond.wait(1.0)
                    continue
                watches = list(self.watches)
            now = _monotonic()
            wake = now + 0.5
            healthy = True
            for watch in watches:
                try:
                    when = watch.check(now)
                except BaseException:
                    _guard.internal_error("watchdog thread")
                    when = now + 0.5
                if watch.block is not None and watch.block.beat == watch.last_beat:
                    healthy = False
                wake = min(wake, when)
            if self.hang is not None and healthy:
                # Re-armed while the loops are healthy; a hang stops the re-arming and the
                # C-level timer dumps every thread's stack with no need for the GIL.
                faulthandler.dump_traceback_later(self.hang, repeat=False, file=sys.stderr)
                self.hang_armed = True
            delay = wake - _monotonic()
            with self.cond:
                if not self.running:
                    return
                if delay > 0:
                    self.cond.wait(delay)


_dog: _Watchdog | None = None
_fork_registered = False


def _after_fork_in_child() -> None:
    if _dog is not None:
        try:
            _dog.after_fork()
        except BaseException:
            _guard.internal_error("watchdog after fork")


def enable(state: State) -> None:
    """Watch every loop that gets a probe from now on (called by install())."""
    global _dog, _fork_registered
    _dog = _Watchdog(state)
    state.attach_listeners.append(_on_attach)
    if _gc_callback not in gc.callbacks:
        gc.callbacks.append(_gc_callback)
    for probe in state.live_probes():
        loop = probe.loop_ref()
        if loop is not None:
            _on_attach(probe, loop)
    if not _fork_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_registered = True


def _on_attach(probe: Any, loop: Any) -> None:
    dog = _dog
    if dog is None or probe.watchdog is not None or loop.is_closed():
        return
    watch = LoopWatch(dog.state, probe, loop)
    probe.watchdog = _Stopper(dog, watch)
    watch.start(loop)
    dog.add(watch)


class _Stopper:
    """What the probe holds: stops this loop's heartbeat and forgets it in the thread."""

    def __init__(self, dog: _Watchdog, watch: LoopWatch) -> None:
        self.dog = dog
        self.watch = watch

    def stop(self) -> None:
        self.watch.stop()
        self.dog.remove(self.watch)

    def lag_samples(self) -> list[float]:
        return list(self.watch.lags)


def disable(state: State) -> None:
    """Stop the thread and every heartbeat (called by uninstall())."""
    global _dog
    dog, _dog = _dog, None
    if _gc_callback in gc.callbacks:
        gc.callbacks.remove(_gc_callback)
    if dog is None:
        return
    for watch in list(dog.watches):
        watch.stop()
    dog.stop()
    if _on_attach in state.attach_listeners:
        state.attach_listeners.remove(_on_attach)
    for probe in state.live_probes():
        probe.watchdog = None
