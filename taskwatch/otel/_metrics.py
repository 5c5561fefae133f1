"""OpenTelemetry metrics: tasks created, active and finished by outcome, task durations, loop blocks
and findings by kind, under ``taskwatch.``.

Counts are observed from the probes' own counters when the metric reader collects, so they cost the
task hot path nothing; only the task duration histogram is recorded per task (with no
MeterProvider set that is the API's no-op, a few tens of nanoseconds).
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation

from .._core._record import CANCELLED, FAILED, FINISHED
from .._version import VERSION

if TYPE_CHECKING:
    from .._core._findings import Finding
    from .._core._state import State

OUTCOME = "taskwatch.task.outcome"
KIND = "taskwatch.finding.kind"
TASK_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0,
                300.0, 1800.0)
BLOCK_BUCKETS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

_lock = threading.Lock()
# One set of instruments per MeterProvider, for as long as the provider lives: the API cannot
# remove an instrument, so a later install() reuses them and they observe whichever State is current.
_by_provider: weakref.WeakKeyDictionary[Any, TaskMetrics] = weakref.WeakKeyDictionary()
_by_id: dict[int, tuple[Any, TaskMetrics]] = {}  # providers that cannot be weakly referenced


class TaskMetrics:
    """The instruments on one MeterProvider, observing one State at a time."""

    def __init__(self, meter_provider: Any) -> None:
        self.state: State | None = None
        meter = meter_provider.get_meter("taskwatch", VERSION)
        meter.create_observable_counter(
            "taskwatch.task.created", callbacks=[self._created], unit="{task}",
            description="Tasks created on the watched event loops.")
        meter.create_observable_counter(
            "taskwatch.task.finished", callbacks=[self._finished], unit="{task}",
            description="Tasks that ended, by outcome (finished, failed, cancelled).")
        meter.create_observable_up_down_counter(
            "taskwatch.task.active", callbacks=[self._active], unit="{task}",
            description="Tasks created and not yet ended.")
        self.duration = _histogram(
            meter, "taskwatch.task.duration", "Time from a task's creation to its end.",
            TASK_BUCKETS)
        self.blocks = _histogram(
            meter, "taskwatch.loop.block.duration",
            "How long one step of the event loop ran (blocked-loop findings).", BLOCK_BUCKETS)
        self.findings = meter.create_counter(
            "taskwatch.findings", unit="{finding}", description="Findings raised, by kind.")
        # what the task hot path calls: record_duration(seconds, outcomes[state])
        self.outcomes = {FINISHED: {OUTCOME: FINISHED}, FAILED: {OUTCOME: FAILED},
                         CANCELLED: {OUTCOME: CANCELLED}}
        self.record_duration = self.duration.record
        # On the API's own provider (none set yet) the instruments record nothing until the
        # program sets one: the task hot path then skips recording (see TaskSpans.set_metrics).
        from ._sdk import api_meter_provider

        self.on_api_provider = api_meter_provider(meter_provider)
        self._kinds: dict[str, dict[str, str]] = {}

    # -- recorded ---------------------------------------------------------------------------------
    def task_ended(self, duration: float, state: str) -> None:
        self.record_duration(duration, self.outcomes.get(state) or {OUTCOME: state})

    def finding(self, finding: Finding) -> None:
        attrs = self._kinds.get(finding.kind)
        if attrs is None:
            attrs = self._kinds[finding.kind] = {KIND: finding.kind}
        self.findings.add(1, attrs)
        if finding.kind == "blocked-loop":
            duration = finding.data.get("duration_s")
            if duration is not None:
                self.blocks.record(float(duration))

    # -- observed ---------------------------------------------------------------------------------
    def _totals(self) -> dict[str, int] | None:
        state = self.state
        if state is None:
            return None
        totals = {"created": 0, "finished": 0, "failed": 0, "cancelled": 0, "active": 0}
        with state.lock:
            sums = collections.Counter(state.retired)
        for probe in state.live_probes():
            sums.update(probe.stats())
        totals["created"] = sums["tasks_created"]
        totals["finished"] = sums["tasks_finished"]
        totals["failed"] = sums["tasks_failed"]
        totals["cancelled"] = sums["tasks_cancelled"]
        totals["active"] = max(0, sums["tasks_created"] - sums["tasks_finished"])
        return totals

    def _created(self, _options: CallbackOptions) -> Iterable[Observation]:
        totals = self._totals()
        return [] if totals is None else [Observation(totals["created"])]

    def _finished(self, _options: CallbackOptions) -> Iterable[Observation]:
        totals = self._totals()
        if totals is None:
            return []
        ok = totals["finished"] - totals["failed"] - totals["cancelled"]
        return [Observation(max(0, ok), {OUTCOME: FINISHED}),
                Observation(totals["failed"], {OUTCOME: FAILED}),
                Observation(totals["cancelled"], {OUTCOME: CANCELLED})]

    def _active(self, _options: CallbackOptions) -> Iterable[Observation]:
        totals = self._totals()
        return [] if totals is None else [Observation(totals["active"])]


def _histogram(meter: Any, name: str, description: str, buckets: tuple[float, ...]) -> Any:
    try:
        return meter.create_histogram(name, unit="s", description=description,
                                      explicit_bucket_boundaries_advisory=list(buckets))
    except TypeError:  # API before explicit_bucket_boundaries_advisory (1.23)
        return meter.create_histogram(name, unit="s", description=description)


def attach(meter_provider: Any, state: State) -> TaskMetrics:
    """The instruments on ``meter_provider`` (made once), now observing ``state``."""
    with _lock:
        try:
            metrics = _by_provider.get(meter_provider)
            if metrics is None:
                metrics = _by_provider[meter_provider] = TaskMetrics(meter_provider)
        except TypeError:
            entry = _by_id.get(id(meter_provider))
            if entry is None or entry[0] is not meter_provider:
                entry = _by_id[id(meter_provider)] = (meter_provider, TaskMetrics(meter_provider))
            metrics = entry[1]
    metrics.state = state
    return metrics


def detach(metrics: TaskMetrics | None, state: State) -> None:
    if metrics is not None and metrics.state is state:
        metrics.state = None
