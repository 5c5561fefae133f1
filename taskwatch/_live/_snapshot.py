"""One look at a running program: its live tasks as a tree of groups, where each waits and for how
long, pending cancels, the loops' lag and blocks, the recent findings. What ``taskwatch ps`` shows.

Identical tasks are one group: same coroutine, creation site, suspension point (the user's frames
and what they wait in) and parent group, so 1,000 workers from one line are one row with a count.
Groups form a tree through the parent task of their first member. The result is plain JSON data:
it pins no task, frame or record, and reads the same in the process and over an attach.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

from .._core import _stacks
from .._core._probe import _running_task
from .._core._record import to_wall
from .._version import VERSION
from .._watchdog._cpu import section
from ._busy import Busy
from ._waits import Waits, point

_monotonic = time.monotonic
FORMAT = 1  # the snapshot's version, for readers of ``--json``
_SAMPLE_IDS = 5
_FINDINGS = 20

_lock = threading.Lock()


def take(state: Any) -> dict[str, Any]:
    """The snapshot of the installed ``state`` (any thread; looks are serialised)."""
    with _lock:
        waits = getattr(state, "live_waits", None)
        if waits is None:
            waits = state.live_waits = Waits()  # waits are counted from one look to the next
            state.live_busy = Busy()  # so are CPU shares
        return _take(state, waits, state.live_busy)


def _take(state: Any, _waits: Waits, busy: Busy) -> dict[str, Any]:
    now = _monotonic()
    loops: list[dict[str, Any]] = []
    pairs: list[tuple[Any, Any, int, Any]] = []  # (record, task, loop index, running task)
    for probe in state.live_probes():
        loop = probe.loop_ref()
        if loop is None:
            continue
        try:
            live = probe.live_records()
            running = _running_task(loop) if probe.run_thread is not None else None
        except Exception:
            continue
        index = len(loops)
        loops.append({"kind": probe.loop_kind, "thread": _thread_name(probe.run_thread),
                      "running": probe.run_thread is not None, "tasks": len(live)})
        pairs.extend((rec, task, index, running) for rec, task in live)
    chains = [_read_chain(task, task is running) for _rec, task, _, running in pairs]
    waited = _waits.look([(rec.id, point(links, task)) for (rec, task, _, _), (links, _aw)
                          in zip(pairs, chains)])
    sampler = getattr(state, "cpu", None)
    if sampler is not None:
        cpu_since, cpu_spent, cpu_window = busy.look(sampler, [rec for rec, *_ in pairs])

    groups: list[dict[str, Any]] = []
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    group_of: dict[int, int] = {}  # task id -> group index
    where: dict[Any, tuple[tuple[Any, ...], str | None]] = {}  # chain key -> (user frames, waits)
    for (rec, task, loop_index, running), (links, awaiting) in zip(pairs, chains):
        # by id: parents before their children
        is_running = task is running
        if is_running:
            user, waits = (), None
        else:
            # Tasks suspended along the same chain of code points, waiting on the same kind of
            # thing, wait in the same place: its frames are resolved once (100,000 workers of
            # one line are one resolution, not 100,000).
            chain = _chain_key(links, awaiting, task)
            known = where.get(chain) if chain is not None else None
            if known is None:
                frames, awaiting = _stacks.await_chain(task)
                known = (tuple(_stacks.user_frames(frames)), _stacks.waiting_on(frames, awaiting))
                if chain is not None:
                    where[chain] = known
            user, waits = known
        parent_id = rec.parent_id
        parent_group = group_of.get(parent_id) if parent_id is not None else None
        key = (loop_index, rec.coro, rec.stack[:2] if rec.stack else None, tuple(user), waits,
               is_running, parent_group, parent_id if parent_group is None else None)
        group = by_key.get(key)
        if group is None:
            frame = rec.created_at
            group = by_key[key] = {
                "group": len(groups), "parent_group": parent_group, "loop": loop_index,
                "count": 0, "coro": rec.coro_name,
                "created_at": frame.as_dict() if frame else None,
                "state": "running" if is_running else "waiting",
                "waiting_on": None if is_running else waits,
                "where": [f.as_dict() for f in user],
                "parent_task": parent_id, "tasks": [], "age_s": [None, None],
                "waiting_s": [None, None], "cancelling": [],
                "busy_s": None if sampler is None else 0.0,
                "cpu_share": None if sampler is None else 0.0}
            groups.append(group)
        group_of[rec.id] = group["group"]
        group["count"] += 1
        if len(group["tasks"]) < _SAMPLE_IDS:
            group["tasks"].append({"id": rec.id, "name": rec.name})
        _widen(group["age_s"], now - rec.created)
        if sampler is not None:
            group["busy_s"] += rec.busy
            group["cpu_share"] += cpu_since.get(rec.id, 0.0)
        wait = None if is_running else waited.get(rec.id)
        if wait is not None:
            _widen(group["waiting_s"], wait)
        if rec.cancels and len(group["cancelling"]) < _SAMPLE_IDS and _cancelling(task):
            last = rec.cancels[-1]
            frame = last.as_dict()
            group["cancelling"].append({"task": rec.id, "requested_at": frame["requested_at"],
                                        "by_task": frame["by_task"], "message": last.message,
                                        "pending_s": round(now - last.at, 3)})
    for group in groups:
        group["age_s"] = [None if v is None else round(v, 3) for v in group["age_s"]]
        group["waiting_s"] = [None if v is None else round(v, 3) for v in group["waiting_s"]]
        if sampler is not None:
            group["busy_s"] = round(group["busy_s"], 6)
            group["cpu_share"] = round(group["cpu_share"] / cpu_spent, 4) if cpu_spent > 0 else None

    stats = state.stats()
    with state.lock:
        findings = list(state.findings)[-_FINDINGS:]
    first = _waits.first_look
    return {
        "format": FORMAT,
        "pid": os.getpid(),
        "argv": list(sys.argv),
        "python": sys.version.split()[0],
        "taskwatch": VERSION,
        "time": to_wall(now),
        "uptime_s": round(time.time() - state.started_at, 3),
        "waits_counted_since": None if first is None else to_wall(first),
        "tasks": len(pairs),
        "loops": loops,
        "groups": groups,
        "stats": {key: stats.get(key) for key in (
            "tasks_created", "tasks_finished", "tasks_failed", "tasks_cancelled", "blocks",
            "max_block_s", "p99_block_s", "loop_lag_p99_s", "loop_lag_max_s", "internal_errors")},
        "cpu": _cpu(state, sampler, cpu_spent if sampler else 0.0, cpu_window if sampler else 0.0),
        "findings": [f.as_dict() for f in findings],
    }


def _cpu(state: Any, sampler: Any, spent: float, window: float) -> dict[str, Any]:
    """The sampler's summary and the window the groups' ``cpu_share`` covers; or why none."""
    out = section(state)
    if sampler is not None:
        out["share_window_s"] = round(window, 3)
        out["share_window_cpu_s"] = round(spent, 6)
    return out


def _read_chain(task: Any, running: bool) -> tuple[list[Any], Any]:
    """The task's await chain (``_stacks._chain``), read once per look; empty while it runs."""
    if running:
        return [], None
    try:
        return _stacks._chain(task)
    except Exception:  # read from another thread while the task moved on
        return [], None


def _chain_key(links: list[Any], awaiting: Any, task: Any) -> tuple[Any, ...] | None:
    """The code points of a suspended task's await chain and the type of what it awaits; None
    when that is a task (named in the text, so never shared) or the chain cannot be read."""
    if not links:
        return None
    try:
        waiter = getattr(task, "_fut_waiter", None)
        if isinstance(waiter, asyncio.Task) or isinstance(awaiting, asyncio.Task):
            return None
        points = []
        for link in links:
            frame = _stacks._frame_of(link)
            if frame is None:
                return None
            points.append((frame.f_code, frame.f_lasti))
        return (tuple(points), type(awaiting), type(waiter), _sleeping(waiter))
    except Exception:
        return None


def _sleeping(waiter: Any) -> bool:
    """Whether ``describe_awaitable`` would call the future 'sleep' (it looks at callbacks)."""
    return isinstance(waiter, asyncio.Future) and _stacks.describe_awaitable(waiter) == "sleep"


def _widen(bounds: list[Any], value: float) -> None:
    if bounds[0] is None or value < bounds[0]:
        bounds[0] = value
    if bounds[1] is None or value > bounds[1]:
        bounds[1] = value


def _cancelling(task: Any) -> bool:
    try:
        return bool(task.cancelling())
    except Exception:
        return False


def _thread_name(ident: int | None) -> str | None:
    if ident is None:
        return None
    return next((t.name for t in threading.enumerate() if t.ident == ident), str(ident))
