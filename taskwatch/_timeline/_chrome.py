"""A timeline snapshot as Chrome trace-event JSON, the format Perfetto and chrome://tracing open.

The layout, per event loop (a "process" of the trace):

* track 0, "event loop": blocks as slices with their stack nested beneath (outermost frame first),
  findings as instant events;
* one track per concurrently live task of a creation site: tasks from the same line share tracks,
  packed so that slices on a track never overlap (a thousand workers of one line take as many
  tracks as were live at once, and sit together);
* a "live tasks" counter;
* flow arrows from parent to child at the spawn, and from the canceller to the cancelled task.

Only complete ("X") slices are written, so every begin has its end by construction; timestamps are
microseconds since the earliest event, and each track's events are written in time order.
Format reference: the Trace Event Format document (Google), the "JSON Object Format".
"""

from __future__ import annotations

import heapq
import itertools
import os
from typing import Any

from .._core import _sites
from .._core._record import PENDING, TaskRecord, to_wall
from .._version import VERSION
from ._recorder import CANCEL, FINDING, Snapshot

LOOP_TRACK = 0
_NS = 0.001  # one nanosecond in the trace's microseconds: nested stack frames step in by it


class _Slice:
    __slots__ = ("rec", "start", "end", "loop", "track", "live", "clipped")

    def __init__(self, rec: TaskRecord, start: float, end: float, loop: int, live: bool,
                 clipped: bool) -> None:
        self.rec, self.start, self.end, self.loop = rec, start, end, loop
        self.live, self.clipped = live, clipped
        self.track = 0


def build(snap: Snapshot) -> dict[str, Any]:
    """The trace as a JSON-ready dict."""
    slices: dict[int, _Slice] = {}
    cancels: list[tuple[Any, int]] = []
    findings: list[tuple[float, Any]] = []
    since = snap.since
    for rec, loop in snap.tasks:
        start = rec.created if since is None else max(rec.created, since)
        slices[rec.id] = _Slice(rec, start, rec.ended, loop, False, start != rec.created)
    for event in snap.events:
        if event[0] == CANCEL:
            cancels.append((event[1], event[2]))
        elif event[0] == FINDING:
            findings.append((event[1], event[2]))
    for rec, loop in snap.live:
        if rec.id not in slices:
            start = rec.created if since is None else max(rec.created, since)
            slices[rec.id] = _Slice(rec, start, snap.now, loop, True, start != rec.created)

    times = [s.start for s in slices.values()] + [req.at for req, _ in cancels]
    times += [_end(t, f) - _duration(f) for t, f in findings]
    base = min(times) if times else snap.now

    def us(t: float) -> float:
        return round((t - base) * 1e6, 3)

    loops = _loop_order(slices, snap)
    pids = {key: index + 1 for index, key in enumerate(loops)}
    default_pid = 1
    events: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    for key, pid in pids.items():
        meta.append(_meta("process_name", pid, None, {"name": snap.loops.get(key, "event loop")}))
        meta.append(_meta("process_sort_index", pid, None, {"sort_index": pid}))
        meta.append(_meta("thread_name", pid, LOOP_TRACK, {"name": "event loop"}))
        meta.append(_meta("thread_sort_index", pid, LOOP_TRACK, {"sort_index": 0}))

    # -- tracks: a creation site's tasks packed onto as few tracks as overlap -------------------
    next_track: dict[int, int] = {}
    for (loop, _site), members in _by_site(slices).items():
        pid = pids[loop]
        free: list[tuple[float, int]] = []  # (end of the track's last slice, track)
        label = _site_label(members[0].rec)
        count = 0
        for s in members:
            if free and free[0][0] <= s.start:
                _, track = heapq.heappop(free)
            else:
                track = next_track.get(pid, 1)
                next_track[pid] = track + 1
                count += 1
                meta.append(_meta("thread_name", pid, track,
                                  {"name": label + (f" [{count}]" if count > 1 else "")}))
                meta.append(_meta("thread_sort_index", pid, track, {"sort_index": track}))
            s.track = track
            heapq.heappush(free, (s.end, track))

    flow_ids = itertools.count(1)
    for s in slices.values():
        rec = s.rec
        pid = pids[s.loop]
        events.append({"ph": "X", "cat": "task", "name": rec.coro_name, "pid": pid, "tid": s.track,
                       "ts": us(s.start), "dur": round(max(0.0, s.end - s.start) * 1e6, 3),
                       "args": _task_args(rec, s)})
        parent = slices.get(rec.parent_id) if rec.parent_id is not None else None
        # a child made by a callback the parent scheduled may start after the parent ended
        if (parent is not None and parent.loop == s.loop and not s.clipped
                and parent.start <= rec.created <= parent.end):
            _flow(events, "spawn", next(flow_ids), us(rec.created), pid, parent.track, s.track)

    # -- cancels: an instant on the cancelled task's track, an arrow from the canceller ----------
    for req, target_id in cancels:
        target = slices.get(target_id)
        if target is None or not target.start <= req.at <= target.end:
            continue
        pid = pids[target.loop]
        frame = _sites.site(req.stack)
        by = req.by_id
        events.append({"ph": "i", "s": "t", "cat": "cancel", "name": "cancel", "pid": pid,
                       "tid": target.track, "ts": us(req.at),
                       "args": {"task": target_id, "by_task": by, "message": req.message,
                                "requested_at": frame.short() if frame else None}})
        canceller = slices.get(by) if by is not None else None
        if canceller is not None and canceller.loop == target.loop and (
                canceller.start <= req.at <= canceller.end):
            _flow(events, "cancel", next(flow_ids), us(req.at), pid, canceller.track,
                  target.track)

    # -- the loop's track: blocks with their stacks, findings -----------------------------------
    for at, finding in findings:
        task_id = (finding.task or {}).get("id") if isinstance(finding.task, dict) else None
        owner = slices.get(task_id) if task_id is not None else None
        pid = pids[owner.loop] if owner is not None else default_pid
        if finding.kind == "blocked-loop":
            _block(events, finding, us(_end(at, finding) - _duration(finding)),
                   _duration(finding), pid)
        events.append({"ph": "i", "s": "p", "cat": "finding", "name": finding.kind, "pid": pid,
                       "tid": LOOP_TRACK, "ts": us(at),
                       "args": {"message": finding.message, "task": task_id,
                                "severity": finding.severity}})

    events.extend(_live_counter(slices.values(), pids, us))
    events.sort(key=_order)
    other = {"taskwatch": VERSION, "pid": os.getpid(), "time_origin": to_wall(base),
             "events_recorded": snap.recorded, "events_dropped": snap.dropped,
             "window_s": None if since is None else round(snap.now - since, 3),
             "tasks": len(slices)}
    return {"traceEvents": meta + events, "displayTimeUnit": "ms", "otherData": other}


def _loop_order(slices: dict[int, _Slice], snap: Snapshot) -> list[int]:
    """Loops in the order of their first task, the ones without tasks (blocks only) last."""
    seen: dict[int, float] = {}
    for s in slices.values():
        if s.loop not in seen or s.start < seen[s.loop]:
            seen[s.loop] = s.start
    order = sorted(seen, key=seen.__getitem__)
    return order or [0]


def _by_site(slices: dict[int, _Slice]) -> dict[tuple[int, Any], list[_Slice]]:
    """Slices grouped by (loop, creation site), groups in order of their first task, each group
    by start time: the order the packing needs."""
    groups: dict[tuple[int, Any], list[_Slice]] = {}
    for s in sorted(slices.values(), key=lambda s: (s.start, s.rec.id)):
        rec = s.rec
        site = (rec.coro, rec.stack[:2] if rec.stack else None)
        groups.setdefault((s.loop, site), []).append(s)
    return groups


def _site_label(rec: TaskRecord) -> str:
    frame = rec.created_at
    return rec.coro_name + (f" @ {frame.short()}" if frame else " (event loop or library)")


def _task_args(rec: TaskRecord, s: _Slice) -> dict[str, Any]:
    frame = rec.created_at
    args: dict[str, Any] = {"id": rec.id, "name": rec.name,
                            "created_at": frame.short() if frame else None,
                            "parent": rec.parent_id, "state": PENDING if s.live else rec.state}
    if s.live:
        args["still_running"] = True
    if s.clipped:
        args["started_before_window"] = True
    exc = getattr(rec, "exc_type", None) if rec.state == "failed" else None
    if exc:
        args["exception"] = f"{exc}: {getattr(rec, 'exc_message', '')}"
    return args


def _duration(finding: Any) -> float:
    if finding.kind != "blocked-loop":
        return 0.0
    try:
        return float(finding.data.get("duration_s") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _end(at: float, finding: Any) -> float:
    """A block's end on the monotonic clock: the finding was recorded at ``at``, some time after
    the block ended; both of that gap's ends are wall times taken moments apart."""
    if finding.kind != "blocked-loop":
        return at
    try:
        lag = float(finding.time) - float(finding.data["ended_at"])
    except (KeyError, TypeError, ValueError):
        return at
    return at - max(0.0, lag)


def _block(events: list[dict[str, Any]], finding: Any, ts: float, duration: float,
           pid: int) -> None:
    """The block as a slice of the loop's track, its stack nested beneath, one frame a level."""
    dur = round(duration * 1e6, 3)
    data = finding.data
    events.append({"ph": "X", "cat": "block", "name": "blocked-loop", "pid": pid,
                   "tid": LOOP_TRACK, "ts": ts, "dur": dur,
                   "args": {"message": finding.message, "duration_s": data.get("duration_s"),
                            "cpu_s": data.get("cpu_s"), "task": (finding.task or {}).get("id")}})
    frames = data.get("stack") or []
    for depth, frame in enumerate(frames, start=1):
        inner = dur - 2 * depth * _NS
        if inner <= 0:
            break
        events.append({"ph": "X", "cat": "stack", "name": str(frame.get("function")),
                       "pid": pid, "tid": LOOP_TRACK, "ts": round(ts + depth * _NS, 3),
                       "dur": round(inner, 3),
                       "args": {"file": frame.get("file"), "line": frame.get("line")}})


def _flow(events: list[dict[str, Any]], name: str, flow_id: int, ts: float, pid: int,
          from_track: int, to_track: int) -> None:
    """An arrow between two slices at ``ts``: v1 flow events bound to the slices enclosing it."""
    events.append({"ph": "s", "cat": name, "name": name, "id": flow_id, "pid": pid,
                   "tid": from_track, "ts": ts})
    events.append({"ph": "f", "bp": "e", "cat": name, "name": name, "id": flow_id, "pid": pid,
                   "tid": to_track, "ts": ts})


def _live_counter(slices: Any, pids: dict[int, int], us: Any) -> list[dict[str, Any]]:
    changes: dict[int, list[tuple[float, int]]] = {}
    for s in slices:
        pid = pids[s.loop]
        changes.setdefault(pid, []).append((s.start, 1))
        if not s.live:
            changes[pid].append((s.end, -1))
    out = []
    for pid, steps in changes.items():
        steps.sort()
        live = 0
        last: dict[str, Any] | None = None
        for t, step in steps:
            live += step
            ts = us(t)
            if last is not None and last["ts"] == ts:
                last["args"]["tasks"] = live
                continue
            last = {"ph": "C", "name": "live tasks", "pid": pid, "ts": ts, "args": {"tasks": live}}
            out.append(last)
    return out


def _meta(name: str, pid: int, tid: int | None, args: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"ph": "M", "name": name, "pid": pid, "args": args}
    if tid is not None:
        event["tid"] = tid
    return event


def _order(event: dict[str, Any]) -> tuple[Any, ...]:
    # per track in time order; at one time an enclosing slice before what it encloses
    return (event["pid"], event.get("tid", -1), event["ts"], -event.get("dur", 0))
