"""The pytest plugin's engine: which findings belong to which test, and tasks left pending.

Everything pytest-specific lives in ``pytest_plugin``; this module only knows tests as windows.

A test's *window* runs from the start of its setup to the end of its teardown. Findings emitted while
it is open are the test's, with one refinement for the kinds that are detected late, at loop
shutdown or after a delay (``leaked-task``, ``orphaned-task``, ``slow-cancel``): those belong to the
test only when their task does, that is when the task (or the task that started it) was created in
the window, and not by a fixture wider than the test (a module-scoped server, a session loop's
runner). Task ids grow monotonically, so "created in the window" is an id range.

After the teardown, tasks of the window that are still pending on loops that stay open (session
loops, servers in threads) are given a short grace period, goleak-style, then reported as
``leaked-task``. Loops closed during the test already reported theirs (the core's runner hook).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .._core import _findings, _hotpath, _record, _sites
from .._core._findings import Finding
from .._core._probe import _where
from .._core._flags import REPORTED_LEAK
from .._core._record import TaskRecord
from .._core._stacks import at_phrase

# Kinds found late (loop shutdown, timers): attributed by whose task it is, not by when it came.
OWNED_KINDS = frozenset({"leaked-task", "orphaned-task", "slow-cancel"})

# Lineage of a task relative to a window, from the most to the least the test's own.
TEST, SETUP, FIXTURE, BEFORE, INTERNAL = "test", "setup", "fixture", "before", "internal"

_PYTEST_PARTS = (os.sep + "_pytest" + os.sep, os.sep + "pluggy" + os.sep,
                 os.sep + "pytest_asyncio" + os.sep, os.sep + "anyio" + os.sep + "pytest_plugin.py",
                 os.sep + "taskwatch" + os.sep + "pytest_plugin.py")


def peek_id() -> int:
    """An id no task has yet: every task created from now on gets a larger one."""
    return _record.next_id()


# -- ignore patterns ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Pattern:
    """One ``ignore`` entry: a path (suffix or glob, optionally ``:line``) or a coroutine name."""

    text: str
    path: str | None
    line: int | None
    name: str | None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        text = text.strip()
        body, sep, line = text.rpartition(":")
        lineno = int(line) if sep and line.isdigit() and body else None
        if lineno is None:
            body = text
        body = body.replace("\\", "/")
        looks_like_path = "/" in body or body.endswith(".py") or lineno is not None
        if looks_like_path:
            return cls(text, body, lineno, None)
        return cls(text, None, None, body)

    def matches_frame(self, frame: dict[str, Any] | None) -> bool:
        if not frame or self.path is None:
            return False
        if self.line is not None and frame.get("line") != self.line:
            return False
        file = str(frame.get("file", "")).replace("\\", "/")
        pattern = self.path
        if any(ch in pattern for ch in "*?["):
            return fnmatch.fnmatchcase(file, pattern) or fnmatch.fnmatchcase(file, "*/" + pattern.lstrip("/"))
        if pattern.endswith("/"):
            return ("/" + pattern.lstrip("/")) in file or file.startswith(pattern)
        return file == pattern or file.endswith("/" + pattern.lstrip("/"))

    def matches_name(self, name: str | None) -> bool:
        if not name or self.name is None:
            return False
        return name == self.name or fnmatch.fnmatchcase(name, self.name)


def parse_patterns(items: Any) -> tuple[Pattern, ...]:
    if items is None:
        return ()
    if isinstance(items, str):
        items = items.replace(";", ",").split(",")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"ignore patterns must be strings, got {item!r}")
        for part in item.split(","):
            if part.strip():
                out.append(Pattern.parse(part))
    return tuple(out)


def ignored_by(finding: Finding, patterns: tuple[Pattern, ...]) -> Pattern | None:
    """The first pattern that matches the finding's task, coroutine or blocking code, if any."""
    if not patterns:
        return None
    frames: list[dict[str, Any]] = []
    names: list[str] = []
    task = finding.task
    if task:
        if task.get("created_at"):
            frames.append(task["created_at"])
        frames.extend(task.get("creation_stack") or ())
        names.append(task.get("coro"))
    coroutine = finding.data.get("coroutine")
    if coroutine:
        names.append(coroutine.get("name"))
        if coroutine.get("created_at"):
            frames.append(coroutine["created_at"])
    if finding.kind == "blocked-loop":
        if finding.data.get("blocked_at"):
            frames.append(finding.data["blocked_at"])
        frames.extend(f for f in finding.data.get("stack") or () if not _sites.is_internal_file(f["file"]))
    for pattern in patterns:
        if any(pattern.matches_frame(f) for f in frames) or any(pattern.matches_name(n) for n in names):
            return pattern
    return None


# -- windows --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Entry:
    """A finding seen while a window was open, with the lineage of its task."""

    finding: Finding
    lineage: str
    cancelling: bool = False  # a leaked task that was already being cancelled: not a leak
    evaluated: bool = False


class Window:
    """One test, from setup to the end of teardown."""

    def __init__(self, nodeid: str, enabled: bool, wide_ranges: list[tuple[int, int]]) -> None:
        self.nodeid = nodeid
        self.enabled = enabled
        self.start_id = peek_id()
        # Tasks created outside [call_id, teardown_id) were created by the test's fixtures.
        self.call_id: int | None = None
        self.teardown_id: int | None = None
        self.entries: list[Entry] = []
        self.wide_ranges = wide_ranges  # id ranges of wider-than-function fixture setups (shared)
        self.test_failed = False
        self.reported: list[Entry] = []
        self.counters: tuple[int, int, int] | None = None  # task counters when the test began

    def lineage(self, chain: list[tuple[int, bool]]) -> str:
        """How much a task is the test's own. ``chain`` is (id, internal) for the task, then its
        ancestors, nearest first. Library tasks (runners, the loop's own) are transparent."""
        if not chain or chain[0][1]:
            return INTERNAL
        setup = False
        for tid, internal in chain:
            if internal:
                continue
            if tid < self.start_id:
                return BEFORE
            for low, high in self.wide_ranges:
                if low <= tid < high:
                    return FIXTURE
            if self.call_id is None or tid < self.call_id or (
                    self.teardown_id is not None and tid >= self.teardown_id):
                setup = True
        return SETUP if setup else TEST


def chain_of(rec: TaskRecord) -> list[tuple[int, bool]]:
    """(id, internal) of a live record and its known ancestors."""
    out = [(rec.id, rec.internal)]
    parent: Any = rec.parent
    seen = 0
    while parent is not None and seen < 64:
        seen += 1
        if isinstance(parent, TaskRecord):
            out.append((parent.id, parent.internal))
            parent = parent.parent
        else:  # an ended parent: (id, name, coroutine code, creation stack)
            code = parent[2]
            out.append((parent[0], parent[3] is None or (code is not None and _sites.is_internal(code))))
            break
    return out


def chain_of_dict(task: dict[str, Any]) -> list[tuple[int, bool]]:
    out = [(task["id"], task.get("created_at") is None)]
    parent = task.get("parent")
    if parent:
        out.append((parent["id"], parent.get("created_at") is None))
    return out


def find_live(state: Any, task_id: int) -> tuple[TaskRecord, Any] | None:
    """A still-pending task and its record, by id (for shutdown-time findings, which are rare)."""
    return state.find_live(task_id, include_closed=True)


def being_cancelled(task: Any) -> bool:
    """At a runner's shutdown, a task whose cancel() was called but not yet delivered: the runner
    is about to run it to its end, as the caller intended. (When a bare ``loop.close()`` finds it,
    it never ends: a leak.)"""
    if not (getattr(task, "_must_cancel", False) or (
            (waiter := getattr(task, "_fut_waiter", None)) is not None and waiter.cancelled())):
        return False
    frame: Any = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_cancel_all_tasks":  # asyncio.runners (or taskwatch's hook)
            return True
        frame = frame.f_back
    return False


# -- tasks left pending on loops that stay open ---------------------------------------------------

def _pending_of(state: Any, window: Window, ignore_fixtures: bool) -> list[tuple[Any, TaskRecord, Any]]:
    out = []
    for probe in state.live_probes():
        loop = probe.loop_ref()
        if loop is None or loop.is_closed():
            continue
        for rec, task in probe.live_records():
            if task.done() or rec.internal or rec.flags & REPORTED_LEAK or rec.id < window.start_id:
                continue
            lineage = window.lineage(chain_of(rec))
            if lineage == TEST or (lineage == SETUP and not ignore_fixtures):
                out.append((loop, rec, task))
    return out


def _let_run(loops: list[Any], grace: float) -> None:
    """Give pending tasks ``grace`` seconds: run idle loops of this thread, wait for the others."""
    ran = False
    for loop in loops:
        if loop.is_closed() or loop.is_running() or asyncio._get_running_loop() is not None:
            continue
        try:
            loop.run_until_complete(asyncio.sleep(grace))
            ran = True
        except Exception:  # a loop we cannot run (foreign thread, shutting down): just wait
            pass
    if not ran:
        time.sleep(grace)


def check_pending(state: Any, window: Window, *, ignore_fixtures: bool, grace: float,
                  retries: int) -> None:
    """Report the window's tasks still pending after the test (after ``retries`` grace periods)."""
    pending = _pending_of(state, window, ignore_fixtures)
    tries = 0
    while pending and tries < retries:
        tries += 1
        loops = list({id(loop): loop for loop, _rec, _task in pending}.values())
        _let_run(loops, grace)
        pending = [(loop, rec, task) for loop, rec, task in pending if not task.done()]
    now = time.monotonic()
    for loop, rec, task in sorted(pending, key=lambda item: item[1].id):
        if task.done() or rec.flags & REPORTED_LEAK:
            continue
        rec.flags |= REPORTED_LEAK
        rec.name = _hotpath.name_of(task)
        probe = state.probes.get(loop)
        if probe is not None:
            probe.fill_names(rec)
        state.emit(still_pending(rec, now - rec.created, *_where(task),
                                 waited=tries * grace))


def still_pending(rec: TaskRecord, age: float, suspended: list[_sites.Frame], waits: str | None,
                  waited: float) -> Finding:
    phrase = at_phrase(suspended, waits)
    now = f" It is suspended {phrase}." if phrase else ""
    cancel = " cancel() was requested but it has not finished." if rec.cancels else ""
    grace = f" (after {waited:.2f} s of grace)" if waited else ""
    msg = (f"{_findings._who(rec)}, was still pending when the test ended{grace}, "
           f"{age:.2f} s after it started.{cancel}{now} Its event loop stays open, so it keeps "
           "running into later tests, and its errors and results belong to no test. Await or "
           "cancel it before the test returns (an asyncio.TaskGroup, or a fixture that cancels "
           "and awaits it in its teardown).")
    return _findings._build("leaked-task", rec, msg, age_s=round(age, 3),
                            stack=[f.as_dict() for f in suspended], still_running=True)


class Counters:
    """Running totals of tasks created, ended and failed on every loop, read cheaply per test."""

    def read(self, state: Any) -> tuple[int, int, int]:
        with state.lock:
            retired = state.retired
            created, finished, failed = (retired["tasks_created"], retired["tasks_finished"],
                                         retired["tasks_failed"])
        for probe in state.live_probes():
            stats = probe.stats()
            created += stats["tasks_created"]
            finished += stats["tasks_finished"]
            failed += stats["tasks_failed"]
        return created, finished, failed


def collect_garbage(policy: str, before: tuple[int, int, int] | None,
                    after: tuple[int, int, int] | None,
                    reread: Callable[[], tuple[int, int, int]] | None = None) -> bool:
    """Surface "exception was never retrieved", destroyed pending tasks and dropped coroutines.

    A full collection costs milliseconds per test on a big heap (tens on a loaded machine), so
    ``auto`` collects the young generations, where a test's own cycles usually are, and goes on
    to a full collection only when a task failed during the test or tasks were still open, and
    still are after that (``reread`` gives the counters again): a task of the test that is neither
    ended nor freed may hide a finding in an old generation. (A failed task whose record closed
    when it ended, not when freed, and that an old cycle still holds unretrieved, is found by the
    full collection at the session's end instead.) Returns whether a full one ran.
    """
    if policy == "never":
        return False
    if policy == "always" or before is None or after is None:
        gc.collect()
        return True
    gc.collect(1)
    if not _open_tasks(before, after):
        return False
    if reread is not None:
        after = reread()
        if not _open_tasks(before, after, failed_count=False):
            return False  # every task of the test ended and was freed by the young collection
    gc.collect()
    return True


def _open_tasks(before: tuple[int, int, int], after: tuple[int, int, int],
                failed_count: bool = True) -> bool:
    """(created, closed, failed) counters: some task created since ``before`` is not closed yet
    (or, with ``failed_count``, one failed: its exception may be unretrieved)."""
    return (failed_count and after[2] > before[2]) or after[0] - before[0] > after[1] - before[1]


# -- text -----------------------------------------------------------------------------------------

def _short(frame: dict[str, Any] | None) -> str:
    if not frame:
        return "?"
    return f"{_sites.display_path(frame['file'])}:{frame['line']} in {frame['function']}"


def _user(frames: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [f for f in frames or () if not _sites.is_internal_file(f["file"])
            and not any(part in f["file"] for part in _PYTEST_PARTS)]


def _same_code(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """From the innermost frame outward, the frames of the same code base (the project, or one
    installed package): a chain of the user's own calls, without the framework's around it."""
    if not frames:
        return []
    root = _sites.code_base(frames[-1]["file"])
    out = [frames[-1]]
    for frame in reversed(frames[:-1]):
        if _sites.code_base(frame["file"]) != root:
            break
        out.append(frame)
    out.reverse()
    return out


def describe(finding: Finding, index: int) -> str:
    """One finding for a failure message: the core's paragraph, then the user's lines."""
    lines = [f"{index}. [{finding.kind}] {finding.message}"]
    task = finding.task or {}
    details: list[str] = []
    creation = _same_code(_user(task.get("creation_stack")))
    if len(creation) > 1:
        details.append("created via: " + " <- ".join(_short(f) for f in reversed(creation[-4:])))
    exc = finding.data.get("exception")
    if exc:
        frames = _user(exc.get("traceback"))
        if len(frames) > 1:
            details.append(f"{exc['type']} raised at:")
            details.extend(f"    {_short(f)}" for f in frames[-5:])
    if finding.kind in ("blocked-loop", "leaked-task", "orphaned-task", "slow-cancel",
                        "destroyed-pending"):
        frames = _same_code(_user(finding.data.get("stack")))
        if len(frames) > 1 and finding.kind == "blocked-loop":
            details.append("blocking code (innermost last):")
            details.extend(f"    {_short(f)}" for f in frames[-6:])
        elif len(frames) > 1:
            details.append("suspended in: " + " -> ".join(_short(f) for f in frames[-4:]))
    coroutine = finding.data.get("coroutine")
    if coroutine and coroutine.get("origin"):
        origin = _same_code(_user(coroutine["origin"]))
        if len(origin) > 1:
            details.append("created via: " + " <- ".join(_short(f) for f in reversed(origin[-4:])))
    cancel = finding.data.get("cancel")
    if cancel and cancel.get("requested_at"):
        details.append(f"cancel() requested at {_short(cancel['requested_at'])}")
    lines.extend("   " + line for line in details)
    return "\n".join(lines)


def headline(findings: list[Finding]) -> str:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.kind] = counts.get(finding.kind, 0) + 1
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    first = findings[0]
    where = ""
    task = first.task or {}
    frame = task.get("created_at") or first.data.get("blocked_at") or (
        (first.data.get("coroutine") or {}).get("created_at"))
    if frame:
        where = f" ({_short(frame)})"
    return f"taskwatch: {kinds}{where}"


def failure_text(nodeid: str, findings: list[Finding], phase: str, allow_hint: bool = True) -> str:
    n = len(findings)
    head = (f"taskwatch: {n} finding{'s' if n != 1 else ''} in {nodeid} "
            f"(seen {'during the test' if phase == 'call' else 'by the end of its teardown'}):")
    parts = [head, ""]
    for index, finding in enumerate(findings, 1):
        parts.append(describe(finding, index))
        parts.append("")
    if allow_hint:
        kinds = sorted({f.kind for f in findings})
        parts.append("Intended? @pytest.mark.taskwatch(allow=[" + ", ".join(repr(k) for k in kinds)
                     + "]) on the test, or ignore=[a file or coroutine name]; more in pytest --help.")
    return "\n".join(parts).rstrip() + "\n"
