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

import asyncio
import heapq
import itertools
import json
import os
from typing import Any

from .._core import _sites
from .._core._record import FAILED, PENDING, TaskRecord, to_wall
from .._version import VERSION
from ._recorder import CANCEL, FINDING, Snapshot

LOOP_TRACK = 0
_NS = 0.001  # one nanosecond in the trace's microseconds: nested stack frames step in by it
_COUNTER_US = 1000.0
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep  # the live-tasks counter's step


class _Slice:
    __slots__ = ("rec", "start", "end", "loop", "track", "live", "clipped")

    def __init__(self, rec: TaskRecord, start: float, end: float, loop: int, live: bool,
                 clipped: bool) -> None:
        self.rec, self.start, self.end, self.loop = rec, start, end, loop
        self.live, self.clipped = live, clipped
        self.track = 0


class Trace:
    """A built trace: metadata events, the other events as sorted keys (rendered to JSON text only
    as they are written, so 100,000 tasks never exist as 500,000 dicts), and ``otherData``."""

    def __init__(self, meta: list[dict[str, Any]], events: list[tuple[Any, ...]],
                 render: Any, other: dict[str, Any]) -> None:
        self.meta, self.events, self._render, self.other = meta, events, render, other

    def write(self, handle: Any) -> None:
        """The JSON Object Format, in batches (``json.dumps`` runs the C encoder)."""
        handle.write('{"traceEvents":[')
        handle.write(",".join(_dumps(event) for event in self.meta))
        render = self._render
        events = self.events
        for start in range(0, len(events), 4096):
            if start or self.meta:
                handle.write(",")
            handle.write(",".join(render(event) for event in events[start:start + 4096]))
        handle.write('],"displayTimeUnit":"ms","otherData":')
        handle.write(_dumps(self.other))
        handle.write("}")


def build(snap: Snapshot) -> Trace:
    """Lay the snapshot out: slices, tracks, arrows, instants, the counter."""
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

    sites = _Sites()
    loops = _loop_order(slices, snap)
    pids = {key: index + 1 for index, key in enumerate(loops)}
    default_pid = 1
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
        label = sites.label(members[0].rec)
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

    # Events as sort keys (pid, track, ts, -dur, seq) and what to render: (kind, payload).
    events: list[tuple[Any, ...]] = []
    seq = itertools.count()
    flow_ids = itertools.count(1)

    def flow(name: str, ts: float, pid: int, from_track: int, to_track: int) -> None:
        flow_id = next(flow_ids)
        events.append((pid, from_track, ts, 0.0, next(seq), "s", (name, flow_id)))
        events.append((pid, to_track, ts, 0.0, next(seq), "f", (name, flow_id)))

    def instant(pid: int, track: int, ts: float, event: dict[str, Any]) -> None:
        events.append((pid, track, ts, 0.0, next(seq), "J", event))

    for s in slices.values():
        rec = s.rec
        pid = pids[s.loop]
        ts = us(s.start)
        dur = round(max(0.0, s.end - s.start) * 1e6, 3)
        events.append((pid, s.track, ts, -dur, next(seq), "X", (s, dur)))
        parent_id = rec.parent_id
        parent = slices.get(parent_id) if parent_id is not None else None
        # a child made by a callback the parent scheduled may start after the parent ended
        if (parent is not None and parent.loop == s.loop and not s.clipped
                and parent.start <= rec.created <= parent.end):
            flow("spawn", ts, pid, parent.track, s.track)

    # -- cancels: an instant on the cancelled task's track, an arrow from the canceller ----------
    for req, target_id in cancels:
        target = slices.get(target_id)
        if target is None or not target.start <= req.at <= target.end:
            continue
        pid = pids[target.loop]
        frame = _sites.site(req.stack)
        by = req.by_id
        ts = us(req.at)
        instant(pid, target.track, ts, {
            "ph": "i", "s": "t", "cat": "cancel", "name": "cancel", "pid": pid,
            "tid": target.track, "ts": ts,
            "args": {"task": target_id, "by_task": by, "message": req.message,
                     "requested_at": frame.short() if frame else None}})
        canceller = slices.get(by) if by is not None else None
        if canceller is not None and canceller.loop == target.loop and (
                canceller.start <= req.at <= canceller.end):
            flow("cancel", ts, pid, canceller.track, target.track)

    # -- the loop's track: blocks with their stacks, findings -----------------------------------
    for at, finding in findings:
        task_id = (finding.task or {}).get("id") if isinstance(finding.task, dict) else None
        owner = slices.get(task_id) if task_id is not None else None
        pid = pids[owner.loop] if owner is not None else default_pid
        if finding.kind == "blocked-loop":
            for event in _block(finding, us(_end(at, finding) - _duration(finding)),
                                _duration(finding), pid):
                events.append((pid, LOOP_TRACK, event["ts"], -event["dur"], next(seq), "J", event))
        ts = us(at)
        instant(pid, LOOP_TRACK, ts, {
            "ph": "i", "s": "p", "cat": "finding", "name": finding.kind, "pid": pid,
            "tid": LOOP_TRACK, "ts": ts,
            "args": {"message": finding.message, "task": task_id, "severity": finding.severity}})

    for pid, ts, value in _live_counter(slices.values(), pids, us):
        events.append((pid, -1, ts, 0.0, next(seq), "C", value))
    events.sort()  # by pid, track, time; at one time an enclosing slice first (seq breaks ties)
    other = {"taskwatch": VERSION, "pid": os.getpid(), "time_origin": to_wall(base),
             "events_recorded": snap.recorded, "events_dropped": snap.dropped,
             "window_s": None if since is None else round(snap.now - since, 3),
             "tasks": len(slices)}
    return Trace(meta, events, _Renderer(sites).render, other)


class _Renderer:
    """One event as JSON text. Task slices, arrows and counter steps, the bulk of a trace, are
    formatted directly, with each site's strings encoded once."""

    def __init__(self, sites: _Sites) -> None:
        self.sites = sites
        self.encoded: dict[str, str] = {}

    def text(self, value: Any) -> str:
        if value is None:
            return "null"
        if value.__class__ is int:
            return str(value)
        value = str(value)
        known = self.encoded.get(value)
        if known is None:
            known = self.encoded[value] = json.dumps(value)
        return known

    def render(self, event: tuple[Any, ...]) -> str:
        pid, tid, ts, _, _, kind, payload = event
        if kind == "X":
            s, dur = payload
            rec = s.rec
            coro_name, created_at = self.sites.of(rec)
            text = self.text
            args = (f'"id":{rec.id},"name":{_dumps(rec.name)},"created_at":{text(created_at)},'
                    f'"parent":{text(rec.parent_id)},"state":"{PENDING if s.live else rec.state}"')
            if s.live:
                args += ',"still_running":true'
            if s.clipped:
                args += ',"started_before_window":true'
            if rec.state == FAILED:
                exc = f"{getattr(rec, 'exc_type', '')}: {getattr(rec, 'exc_message', '')}"
                args += f',"exception":{_dumps(exc)}'
            return (f'{{"ph":"X","cat":"task","name":{text(coro_name)},"pid":{pid},"tid":{tid},'
                    f'"ts":{ts},"dur":{dur},"args":{{{args}}}}}')
        if kind == "s" or kind == "f":
            name, flow_id = payload
            bind = ',"bp":"e"' if kind == "f" else ""
            return (f'{{"ph":"{kind}"{bind},"cat":"{name}","name":"{name}","id":{flow_id},'
                    f'"pid":{pid},"tid":{tid},"ts":{ts}}}')
        if kind == "C":
            return (f'{{"ph":"C","name":"live tasks","pid":{pid},"ts":{ts},'
                    f'"args":{{"tasks":{payload}}}}}')
        return _dumps(payload)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


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


class _Sites:
    """Coroutine names and creation sites as text, made once per site: a trace of 100,000 tasks
    from a few lines resolves a few lines."""

    def __init__(self) -> None:
        self._known: dict[Any, tuple[str, str | None]] = {}

    def of(self, rec: TaskRecord) -> tuple[str, str | None]:
        key = (rec.coro, rec.stack[:2] if rec.stack else None)
        known = self._known.get(key)
        if known is None:
            frame = rec.created_at
            known = self._known[key] = (rec.coro_name, frame.short() if frame else None)
        return known

    def label(self, rec: TaskRecord) -> str:
        coro_name, created_at = self.of(rec)
        return coro_name + (f" @ {created_at}" if created_at else " (event loop or library)")


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


def _block(finding: Any, ts: float, duration: float, pid: int) -> list[dict[str, Any]]:
    """The block as a slice of the loop's track, its stack nested beneath, one frame a level."""
    dur = round(duration * 1e6, 3)
    data = finding.data
    out = [{"ph": "X", "cat": "block", "name": "blocked-loop", "pid": pid, "tid": LOOP_TRACK,
            "ts": ts, "dur": dur,
            "args": {"message": finding.message, "duration_s": data.get("duration_s"),
                     "cpu_s": data.get("cpu_s"), "task": (finding.task or {}).get("id")}}]
    for depth, frame in enumerate(_step_frames(data.get("stack") or []), start=1):
        inner = round(dur - 2 * depth * _NS, 3)
        if inner <= 0:
            break
        out.append({"ph": "X", "cat": "stack", "name": str(frame.get("function")), "pid": pid,
                    "tid": LOOP_TRACK, "ts": round(ts + depth * _NS, 3), "dur": inner,
                    "args": {"file": frame.get("file"), "line": frame.get("line")}})
    return out


def _step_frames(stack: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames of the step that blocked: below the loop's own (asyncio's run_forever, the
    handle that ran the step), not the program's start-up frames above them."""
    last = -1
    for index, frame in enumerate(stack):
        if str(frame.get("file", "")).startswith(_ASYNCIO_DIR):
            last = index
    return stack[last + 1:] if 0 <= last < len(stack) - 1 else stack


def _live_counter(slices: Any, pids: dict[int, int], us: Any) -> list[tuple[int, float, int]]:
    """(pid, ts, live tasks) steps: the most tasks live at once in each millisecond, so a
    counter of 100,000 tasks is at most one step a millisecond."""
    changes: dict[int, list[tuple[float, int]]] = {}
    for s in slices:
        steps = changes.setdefault(pids[s.loop], [])
        steps.append((s.start, 1))
        if not s.live:
            steps.append((s.end, -1))
    out: list[tuple[int, float, int]] = []
    for pid, steps in changes.items():
        steps.sort(key=lambda step: (step[0], -step[1]))  # at one time, starts before ends
        live = 0
        bucket = None
        peak = 0
        for t, step in steps:
            live += step
            ms = int(us(t) // _COUNTER_US)
            if ms != bucket:
                if bucket is not None:
                    out.append((pid, bucket * _COUNTER_US, peak))
                bucket, peak = ms, live
            else:
                peak = max(peak, live)
        if bucket is not None:
            out.append((pid, bucket * _COUNTER_US, peak))
            if live != peak:  # where it ended up
                out.append((pid, (bucket + 1) * _COUNTER_US, live))
    return out


def _meta(name: str, pid: int, tid: int | None, args: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"ph": "M", "name": name, "pid": pid, "args": args}
    if tid is not None:
        event["tid"] = tid
    return event
