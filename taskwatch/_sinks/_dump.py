"""The live dump: every pending task, where it waits and for how long, identical ones grouped.

Like a Go goroutine dump: ``3 x worker (app.py:40) [waiting 12.0 s on Queue.get] created at
app.py:88 in main by 'Task-1'`` followed by the await chain. Tasks that share coroutine, creation
site and suspension point print once with a count, so 1,000 workers stay readable.
"""

from __future__ import annotations

import time
from typing import Any

from .._core import _stacks
from .._core._state import State


def render(state: State) -> str:
    now = time.monotonic()
    groups: dict[tuple[Any, ...], list[Any]] = {}
    order: list[tuple[Any, ...]] = []
    total = 0
    for probe in state.live_probes():
        for rec, task in probe.live_records():
            total += 1
            frames, awaiting = _stacks.await_chain(task)
            waits = _stacks.waiting_on(frames, awaiting)
            user = _stacks.user_frames(frames)
            key = (rec.coro, rec.stack[:2] if rec.stack else None, tuple(user), waits,
                   rec.parent_id if not rec.stack else None)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((rec, task, user, waits))
    lines = [f"taskwatch: {total} live task(s) in {len(order)} group(s)"]
    for key in order:
        members = groups[key]
        rec, task, user, waits = members[0]
        ages = [now - r.created for r, *_ in members]
        state_word = "running" if _is_running(task) else "waiting"
        head = f"{len(members)} x " if len(members) > 1 else ""
        names = ", ".join(f"'{r.name}'" for r, *_ in members[:3]) + (", ..." if len(members) > 3 else "")
        age = f"{min(ages):.1f}-{max(ages):.1f} s" if len(members) > 1 else f"{ages[0]:.1f} s"
        lines.append("")
        lines.append(f"{head}{rec.coro_name} [{names}] id={rec.id} {state_word}"
                     + (f" on {waits}" if waits and state_word == "waiting" else "") + f", age {age}")
        frame = rec.created_at
        parent = rec.parent_brief()
        pname = ""
        if parent is not None:
            pname = f" by task '{parent['name']}'" if parent["name"] else f" by task #{parent['id']}"
        lines.append(f"    created at {frame.short() if frame else '<event loop or library>'}{pname}")
        for f in user:
            lines.append(f"    at {f.short()}")
    return "\n".join(lines) + "\n"


def _is_running(task: Any) -> bool:
    import asyncio

    try:
        return asyncio.current_task(task.get_loop()) is task
    except Exception:
        return False
