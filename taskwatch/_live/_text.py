"""A snapshot as text: the ``taskwatch ps`` tree. Its shape (docs/live.md has a real one):

    taskwatch ps 4242: python app.py (Python 3.13.1) - 1,002 live task(s) in 3 group(s)
    loop: uvloop on MainThread, running, 1,002 task(s)
    lag p99 0.002 s, 1 block(s) (max 0.310 s), 5,210 tasks created, 0 failed

    1 x main ['Task-1'] waiting on Queue.join for >= 4.0 s, age 12.1 s
    |       created at app.py:88 in <module>; at app.py:60 in main
    |-- 1,000 x worker ['Task-2', 'Task-3', 'Task-4', ...] waiting on sleep for >= 0.5-4.0 s, age 12.0 s
    |       created at app.py:40 in main; at app.py:22 in worker
    `-- 1 x flush ['Task-1002'] running now, age 0.2 s
            created at app.py:51 in main
"""

from __future__ import annotations

import os
from typing import Any


def render(snap: dict[str, Any]) -> str:
    groups = snap["groups"]
    argv = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(snap["argv"]))
    lines = [f"taskwatch ps {snap['pid']}: python {argv} (Python {snap['python']}) - "
             f"{snap['tasks']:,} live task(s) in {len(groups):,} group(s)"]
    stats = snap["stats"]
    for loop in snap["loops"]:
        where = f" on {loop['thread']}" if loop["thread"] else ""
        lines.append(f"loop: {loop['kind']}{where}, {'running' if loop['running'] else 'not running'}"
                     f", {loop['tasks']:,} task(s)")
    cpu = snap.get("cpu") or {}
    if cpu.get("sampling"):
        lines.append(f"CPU of the main thread (sampled every {cpu['interval_s'] * 1000:g} ms): "
                     f"{cpu['sampled_s']:.3f} s over {cpu['since_s']:.1f} s, "
                     f"{_pct(cpu['tasks_s'], cpu['sampled_s'])} in tasks, "
                     f"{_pct(cpu['loop_s'], cpu['sampled_s'])} in the loop outside tasks")
    lines.append(f"lag p99 {stats.get('loop_lag_p99_s') or 0:.3f} s, "
                 f"{stats.get('blocks') or 0} block(s) (max {stats.get('max_block_s') or 0:.3f} s), "
                 f"{stats.get('tasks_created') or 0:,} tasks created, "
                 f"{stats.get('tasks_failed') or 0:,} failed")
    if snap["waits_counted_since"] is not None and all(
            g["waiting_s"][1] is None for g in groups if g["state"] == "waiting"):
        lines.append("(waits are counted from one look to the next: this is the first look, "
                     "so none is known yet; look again)")
    children: dict[Any, list[dict[str, Any]]] = {}
    for group in groups:
        children.setdefault(group["parent_group"], []).append(group)
    lines.append("")
    for group in children.get(None, []):
        _tree(group, children, "", "", lines)
    if cpu.get("sampling") and cpu["sites"]:
        lines.append("")
        lines.append("CPU by creation site, since sampling began (finished tasks included):")
        for row in cpu["sites"][:5]:
            at = f" created at {_short(row['created_at'])}" if row["created_at"] else ""
            lines.append(f"  {_pct(row['busy_s'], cpu['sampled_s']):>6} {row['busy_s']:.3f} s "
                         f"{row['coro'].rsplit('.', 1)[-1]}{at}")
    if snap["findings"]:
        lines.append("")
        lines.append(f"recent findings ({len(snap['findings'])}):")
        for finding in snap["findings"]:
            message = finding["message"]
            if len(message) > 300:
                message = message[:299] + "…"
            lines.append(f"  [{finding['kind']}] {message}")
    return "\n".join(lines) + "\n"


def _tree(group: dict[str, Any], children: dict[Any, list[dict[str, Any]]], lead: str,
          rest: str, lines: list[str]) -> None:
    lines.append(lead + _row(group))
    detail = _detail(group)
    kids = children.get(group["group"], [])
    if detail:
        lines.append(rest + ("|   " if kids else "    ") + "    " + detail)
    for index, kid in enumerate(kids):
        last = index == len(kids) - 1
        _tree(kid, children, rest + ("`-- " if last else "|-- "), rest + ("    " if last else "|   "),
              lines)


def _row(group: dict[str, Any]) -> str:
    names = [t["name"] or f"#{t['id']}" for t in group["tasks"]]
    shown = ", ".join(f"'{n}'" for n in names[:3]) + (", ..." if group["count"] > 3 else "")
    head = f"{group['count']:,} x {group['coro'].rsplit('.', 1)[-1]} [{shown}]"
    if group["state"] == "running":
        what = "running now"
    else:
        what = "waiting" + (f" on {group['waiting_on']}" if group["waiting_on"] else "")
        low, high = group["waiting_s"]
        if high is not None:
            what += f" for >= {_span(low, high)}"
    low, high = group["age_s"]
    text = f"{head} {what}, age {_span(low, high)}"
    if group.get("busy_s"):
        text += f", CPU {group['busy_s']:.3f} s ({_pct(group['cpu_share'] or 0.0, 1.0)} lately)"
    for cancel in group["cancelling"][:1]:
        at = cancel["requested_at"]
        by = cancel["by_task"]
        text += (f"; cancel pending {cancel['pending_s']:.1f} s"
                 + (f" from {_short(at)}" if at else "")
                 + (f" by '{by['name'] or '#' + str(by['id'])}'" if by else ""))
    return text


def _detail(group: dict[str, Any]) -> str:
    created = group["created_at"]
    parts = [f"created at {_short(created)}" if created else "created by the loop or a library"]
    if group["where"]:
        parts.append("at " + _short(group["where"][-1]))
    return "; ".join(parts)


def _short(frame: dict[str, Any]) -> str:
    path = frame["file"]
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:
        pass
    return f"{path}:{frame['line']} in {frame['function']}"


def _pct(part: float, total: float) -> str:
    return f"{100.0 * part / total:.1f}%" if total else "-"


def _span(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "?"
    if high - low < 0.05:
        return f"{high:.1f} s"
    return f"{low:.1f}-{high:.1f} s"
