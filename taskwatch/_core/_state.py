"""The installed state: options, one probe per loop, the findings store and the instruments.

There is at most one State, created by ``install()`` and dropped by ``uninstall()``; nothing else in
taskwatch is global and mutable (architecture principle 3).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref
from typing import Any

from . import _guard, _sites
from ._findings import Finding
from ._instruments import Instruments
from ._options import Options
from ._probe import Probe
from ._record import CANCELLED, FAILED, TaskRecord
from ._ticker import Ticker


def _gather_callback_code() -> Any:
    for const in asyncio.tasks.gather.__code__.co_consts:
        if getattr(const, "co_name", None) == "_done_callback":
            return const
    return None


class State:
    """Everything ``install()`` set up; ``uninstall()`` tears it down."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.kinds = options.active_kinds
        self.probes: weakref.WeakKeyDictionary[Any, Probe] = weakref.WeakKeyDictionary()
        # Counters of closed or collected loops, summed: nothing per loop outlives its loop.
        self.retired: collections.Counter[str] = collections.Counter()
        self.loop_kinds: set[str] = set()
        self.retired_lags: collections.deque[float] = collections.deque(maxlen=4096)
        self.retired_history: collections.deque[TaskRecord] = collections.deque(maxlen=options.history_size)
        self.late_counts: collections.Counter[str] = collections.Counter()
        self.findings: collections.deque[Finding] = collections.deque(maxlen=options.max_findings)
        self.counts: collections.Counter[str] = collections.Counter()
        self.dropped_findings = 0
        self.silenced = 0
        self.lock = threading.RLock()
        # The wings (logging, watchdog, OpenTelemetry, pytest) listen here; see _instruments.
        self.instruments = Instruments(self._sync_task_hooks)
        # taskwatch's own thread for deadlines (slow-cancel, orphans, the watchdog): never a timer
        # on the program's loop.
        self.ticker = Ticker()
        self.started_at = time.time()
        self.gather_callback_code = _gather_callback_code()
        # Spans need tasks' ends as they happen: with OpenTelemetry on, a task with a span gets a
        # done callback and any other is closed when first seen done (see _hotpath.on_release).
        # So do the timeline's slices.
        self.precise_ends = options.otel or options.recording
        self.timeline: Any = None  # the timeline wing, when it records (see _timeline)
        self.cpu: Any = None  # the CPU sampler, with ``cpu_sampling`` (see _watchdog/_cpu)
        self.block_stats: dict[str, Any] = {"blocks": 0, "max_block_s": 0.0, "delays": [],
                                            "starved_blocks": 0}
        self._ignore = [_parse_ignore(item) for item in options.ignore]

    # -- loops ----------------------------------------------------------------------------------
    def attach(self, loop: Any, inner_factory: Any) -> Probe | None:
        """Create the loop's probe (once). Returns None when the loop already has one."""
        with self.lock:
            if loop in self.probes:
                return None
            probe = Probe(loop, self, inner_factory)
            self.probes[loop] = probe
            self.loop_kinds.add(probe.loop_kind)
        weakref.finalize(loop, self.retire, probe)
        return probe

    def on_attach(self, probe: Probe, loop: Any) -> None:
        self.instruments.call("loop_attached", probe, loop)

    def _sync_task_hooks(self) -> None:
        """The instruments changed: give every live loop's hot path their per-task hooks."""
        with self.lock:
            probes = list(self.probes.values())
        hooks = self.instruments.task_hooks()
        for probe in probes:
            if not probe.closed:
                probe.set_task_hooks(*hooks)

    def retire(self, probe: Probe) -> None:
        """Fold a closed or collected loop's counters and history into the totals."""
        with self.lock:
            if probe.closed:
                return
            probe.closed = True
            self.retired.update(probe.stats())
            if probe.watchdog is not None:
                self.retired_lags.extend(probe.watchdog.lag_samples())
            history = self.retired_history
            if history.maxlen is not None:  # what the folding pushes out is dropped too
                over = len(history) + len(probe.history) - history.maxlen
                if over > 0:
                    self.late_counts["dropped_history"] += min(over, len(history))
            history.extend(probe.history)
            probe.history.clear()
            probe.retarget(self._late_close)  # its tasks may still be freed after the loop closed
        if probe.watchdog is not None:
            try:
                probe.watchdog.stop()
            except BaseException:
                _guard.internal_error("watchdog stop")

    def _late_close(self, rec: TaskRecord) -> None:
        """A task of a closed loop ended (freed after its loop closed): count it, keep its record.
        Runs from finalizers, so it takes no lock (the one stats() holds could be this thread's)."""
        late = self.late_counts
        late["tasks_finished"] += 1
        if rec.state == FAILED:
            late["tasks_failed"] += 1
        elif rec.state == CANCELLED:
            late["tasks_cancelled"] += 1
        history = self.retired_history
        if history.maxlen and len(history) == history.maxlen:
            late["dropped_history"] += 1
        history.append(rec)

    def find_live(self, task_id: int, include_closed: bool = False) -> tuple[TaskRecord, Any] | None:
        """A still-pending task and its record, by id: a scan of the loops' tasks, so only for
        rare paths (shutdown findings, spans that must be parented now)."""
        with self.lock:
            probes = list(self.probes.values())
        for probe in probes:
            loop = probe.loop_ref()
            if loop is None or (not include_closed and loop.is_closed()):
                continue
            try:
                tasks = asyncio.all_tasks(loop)
            except RuntimeError:
                continue
            for task in tasks:
                rec = getattr(task, "_tw_rec", None)
                if rec is not None and rec.id == task_id:
                    return rec, task
        return None

    def live_probes(self) -> list[Probe]:
        with self.lock:
            return [p for p in list(self.probes.values()) if not p.closed]

    # -- findings -------------------------------------------------------------------------------
    def emit(self, finding: Finding) -> None:
        """Store one finding and hand it to the instruments, unless its kind is off or its site
        is silenced."""
        try:
            if finding.kind not in self.kinds:
                return
            if self._silenced(finding):
                with self.lock:
                    self.silenced += 1
                return
            with self.lock:
                if len(self.findings) == self.findings.maxlen:
                    self.dropped_findings += 1
                self.findings.append(finding)
                self.counts[finding.kind] += 1
            self.instruments.call("finding", finding)
        except BaseException:
            _guard.internal_error("emit")

    def _silenced(self, finding: Finding) -> bool:
        frames = []
        if finding.site is not None:
            frames.append(finding.site)
        for item in finding.data.get("stack") or ():
            if isinstance(item, dict):
                frames.append(_sites.Frame(item["file"], item["line"], item["function"]))
        for path, line in self._ignore:
            for frame in frames[:1] if finding.kind != "blocked-loop" else frames:
                if frame.file.endswith(path) and (line is None or frame.line == line):
                    return True
        return False

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        totals: collections.Counter[str] = collections.Counter()
        lags: list[float] = []
        for probe in self.live_probes():
            totals.update(probe.stats())
            if probe.watchdog is not None:
                lags.extend(probe.watchdog.lag_samples())
        with self.lock:
            lags.extend(self.retired_lags)
        lags.sort()
        with self.lock:
            totals.update(self.retired)
            totals.update(self.late_counts)
            delays = sorted(self.block_stats["delays"])
            out: dict[str, Any] = {
                "tasks_created": totals["tasks_created"],
                "tasks_finished": totals["tasks_finished"],
                "tasks_failed": totals["tasks_failed"],
                "tasks_cancelled": totals["tasks_cancelled"],
                "blocks": self.block_stats["blocks"],
                "max_block_s": round(self.block_stats["max_block_s"], 6),
                "starved_blocks": self.block_stats["starved_blocks"],
                "p99_block_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 6)
                if delays else 0.0,
                "loop_lag_p99_s": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 6)
                if lags else 0.0,
                "loop_lag_max_s": round(lags[-1], 6) if lags else 0.0,
                "internal_errors": _guard.count,
                "dropped": self.dropped_findings + totals["dropped_history"],
                "dropped_findings": self.dropped_findings,
                "dropped_history": totals["dropped_history"],
                "silenced": self.silenced,
                "findings_by_kind": dict(sorted(self.counts.items())),
            }
        self.instruments.call("stats", out)
        out["internal_errors"] = _guard.count  # an instrument may have reported some just now
        return out

    def record_block(self, duration: float) -> None:
        with self.lock:
            stats = self.block_stats
            stats["blocks"] += 1
            stats["max_block_s"] = max(stats["max_block_s"], duration)
            delays = stats["delays"]
            if len(delays) >= 10_000:
                delays.pop(0)
            delays.append(duration)

    def count_starved_block(self) -> None:
        """A block the machine starved (no finding: see _blocks.starved)."""
        with self.lock:
            self.block_stats["starved_blocks"] += 1

    def loop_kind(self) -> str:
        """'uvloop', 'asyncio', or 'asyncio+uvloop' when the program ran both."""
        kinds = sorted(self.loop_kinds) or ["asyncio"]
        return "+".join(kinds)


def _parse_ignore(item: str) -> tuple[str, int | None]:
    path, sep, line = item.rpartition(":")
    if sep and line.isdigit() and path:
        return path, int(line)
    return item, None
