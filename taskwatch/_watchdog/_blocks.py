"""Turn an observed loop block into a ``blocked-loop`` finding: who, how long, where the time went."""

from __future__ import annotations

import collections
import os
from typing import Any, Protocol

from .._core import _findings, _sites
from .._core._findings import Finding
from .._core._record import to_wall

_SELECTORS = os.sep + "selectors.py"
_THREADING = os.sep + "threading.py"
_TOP_FRAMES = 8


class Observer(Protocol):
    """What a finding is made with, of the watchdog's view of one loop (its LoopWatch)."""

    threshold: float
    state: Any
    probe: Any


class Block:
    """A block of the loop as the watchdog observed it (on its thread): when, the stack samples,
    the task, and the loop thread's clocks at the first and last look."""

    __slots__ = ("start", "detected", "samples", "keys", "task_rec", "task_name", "internal",
                 "cpu0", "cpu1", "sched0", "sched1", "t0", "t1", "gc0", "tid", "imports", "late",
                 "busy_start")

    def __init__(self, start: float, detected: float) -> None:
        self.start = start
        self.detected = detected
        self.samples: list[tuple[tuple[str, int, str], ...]] = []
        self.keys: list[tuple[int, int]] = []  # (id(code), f_lasti) of each sample's innermost frame
        self.task_rec: Any = None
        self.task_name: str | None = None
        self.internal = 0
        self.cpu0 = self.cpu1 = None
        self.sched0 = self.sched1 = None
        self.t0 = self.t1 = detected
        self.gc0 = 0.0
        self.tid = 0
        self.imports: collections.Counter[str] = collections.Counter()  # outermost import per sample
        self.late = False  # found only after it ended (the GIL was held all along)
        # When the loop thread began to want a CPU after its last free look (its on-CPU plus
        # run-queue time since then, counted back from the ping): the start of a block that
        # turns out CPU-bound, exact where the midpoint guess is off by up to half a look.
        self.busy_start: float | None = None


def _is_user(frame: tuple[str, int, str]) -> bool:
    return not _sites.is_internal_file(frame[0]) and not frame[0].endswith(_SELECTORS)


def _is_app(frame: tuple[str, int, str]) -> bool:
    return not _sites.is_library_file(frame[0]) and not frame[0].endswith(_SELECTORS)


def _callee(stack: list[_sites.Frame], index: int) -> str | None:
    """The function the frame at ``index`` was in the middle of calling, if it is library code."""
    if index + 1 < len(stack):
        inner = stack[index + 1]
        if _sites.is_library_file(inner.file) and not inner.file.startswith("<"):
            return f"{inner.function} ({_sites.module_of(inner.file)})"
    return None


def _idle(sample: tuple[tuple[str, int, str], ...]) -> bool:
    """A sample of a loop waiting for I/O: the innermost frame is the selector or the loop runner."""
    if not sample:
        return False
    inner = sample[-1]
    if inner[0].endswith(_SELECTORS):
        return True
    return _sites.is_asyncio_file(inner[0]) and inner[2] in (
        "Runner.run", "BaseEventLoop.run_until_complete", "BaseEventLoop.run_forever",
        "BaseEventLoop._run_once", "run")


def _one_call(block: Block | None) -> bool:
    """Every sample stopped at the same instruction of the same frame: one call (a C function or a
    blocking call) held the loop, rather than Python code running through many lines."""
    keys = block.keys if block is not None else []
    return len(keys) >= 2 and len(set(keys)) == 1


def _starting_a_thread(samples: list[tuple[tuple[str, int, str], ...]]) -> bool:
    """Every sample was inside ``threading.Thread.start``: the loop thread waited for a thread it
    started to be scheduled (aiosqlite starts one per connection). That takes microseconds; a
    block there is the machine's scheduling (or another thread holding the GIL), not the line."""
    return bool(samples) and all(
        any(f[2] == "Thread.start" and f[0].endswith(_THREADING) for f in sample)
        for sample in samples)


def starved(duration: float, cpu_share: float | None, demand: float | None,
            threshold: float) -> bool:
    """A step the machine starved, not a block of the program's: take away the time the loop
    thread was runnable but waiting for a CPU (``demand - cpu_share`` of the block: other
    processes had the CPUs) and what is left, the step's own time on a CPU or asleep in a call,
    is under the threshold, so on a free machine it would not have been a block. Counted, not a
    finding: it is no claim about the program's code (the loop lag still shows it). Needs both
    shares measured."""
    if demand is None or cpu_share is None:
        return False
    waiting = max(0.0, demand - cpu_share)
    return duration * (1.0 - waiting) < threshold


def blocked_loop(watch: Observer, block: Block | None, duration: float, cpu_share: float | None,
                 demand: float | None, started: float, ended: float,
                 gc_s: float = 0.0) -> Finding | None:
    """``cpu_share``: the loop thread's CPU time over the observed part of the block; ``demand``:
    its time on a CPU or waiting for one (a CPU-bound thread on a busy machine or under a quota
    gets little CPU but is always runnable), None where the system does not say."""
    samples = block.samples if block is not None else []
    if samples and all(_idle(s) for s in samples):
        return None  # the loop thread was idle: another thread starved it of the GIL, not the loop
    # taskwatch's own frames (its run hooks sit under every step) never appear in a finding
    samples = [tuple(f for f in sample if not f[0].startswith(_sites._TASKWATCH_DIR))
               for sample in samples]
    counts: collections.Counter[tuple[str, int, str]] = collections.Counter()
    for sample in samples:
        counts.update(set(sample))
    common = collections.Counter(samples).most_common(1)[0][0] if samples else ()
    stack = [_sites.Frame(*f) for f in common][-30:]
    # The innermost frame of the application's own code; else of any code that is not asyncio's;
    # and what that line was calling into (a library function, an import).
    app = [i for i, f in enumerate(stack) if _is_app(tuple(f))]
    user = [i for i, f in enumerate(stack) if _is_user(tuple(f))]
    index = app[-1] if app else (user[-1] if user else len(stack) - 1)
    where = stack[index] if stack else None
    callee = _callee(stack, index)
    share = counts[tuple(where)] / len(samples) if where is not None and samples else 0.0
    keep = _is_app if app else _is_user
    top = [
        {"frame": _sites.Frame(*frame).as_dict(), "share": round(n / len(samples), 3)}
        for frame, n in sorted(counts.items(), key=lambda item: (-item[1], -_depth(common, item[0])))
        if keep(frame)
    ][:_TOP_FRAMES]
    imports = block.imports if block is not None else None
    importing = imports.most_common(1)[0][0] if imports else None

    rec = block.task_rec if block is not None else None
    if rec is not None and block is not None and block.task_name:
        rec.name = block.task_name
        watch.probe.fill_names(rec)
    cpu_s = duration * (cpu_share or 0.0)
    if starved(duration, cpu_share, demand, watch.threshold) or _starting_a_thread(samples):
        watch.state.count_starved_block()
        return None
    busy = demand if demand is not None else cpu_share
    if busy is not None:
        computing = busy >= 0.5
    else:  # not measured: Python code moving through lines is computing
        computing = bool(samples) and not _one_call(block)
    return _findings.blocked_loop(
        rec, duration, cpu_s, computing=computing,
        cpu_taken=demand is not None and cpu_share is not None and cpu_share < 0.5 <= demand,
        gc_s=gc_s, by_callback=rec is None and block is not None and bool(samples) and not block.late,
        where=where, importing=importing, callee=callee, share=share, samples=len(samples),
        data={
            "duration_s": round(duration, 6),
            "cpu_s": round(cpu_s, 6),
            "cpu_share": None if cpu_share is None else round(cpu_share, 3),
            "runnable_share": None if demand is None else round(demand, 3),
            "gc_s": round(gc_s, 6),
            "stack": [f.as_dict() for f in stack],
            "samples": len(samples),
            "top_frames": top,
            "started_at": to_wall(started),
            "ended_at": to_wall(ended),
            "blocked_at": where.as_dict() if where is not None else None,
            "importing": importing,
        })


def _depth(stack: tuple[Any, ...], frame: Any) -> int:
    try:
        return stack.index(frame)
    except ValueError:
        return -1
