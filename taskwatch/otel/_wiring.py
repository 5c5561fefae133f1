"""Switching OpenTelemetry on and off for an installed taskwatch, and the providers it exports to."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from .._core import _guard, _sites, _task
from . import _metrics as _otel_metrics, _sdk as _otel_sdk
from ._spans import TaskSpans

if TYPE_CHECKING:
    from .._core._probe import Probe
    from .._core._state import State


_SESSION_ENV = "TASKWATCH_SESSION"
_lock = threading.RLock()


class _Providers:
    """Where taskwatch's spans and metrics go: providers given explicitly, else the global ones,
    else (in a ``python -m taskwatch --otel`` session) the SDK set up from ``OTEL_*``."""

    def __init__(self) -> None:
        self.tracer_provider: Any = None
        self.meter_provider: Any = None
        self.session: _otel_sdk.SessionSdk | None = None
        self.generation = 0  # bumped when the explicit providers change
        try:
            from opentelemetry.trace import ProxyTracerProvider

            self._proxy_tracer: Any = ProxyTracerProvider
        except ImportError:  # pragma: no cover
            self._proxy_tracer = ()

    def tracer(self) -> tuple[Any, bool]:
        """The TracerProvider to export to now (or None), and whether that can no longer change
        (an explicit one, or the global one once set: OpenTelemetry sets it only once)."""
        provider = self.tracer_provider
        if provider is not None:
            return provider, True
        provider = trace.get_tracer_provider()
        if isinstance(provider, self._proxy_tracer):  # the program set none (yet)
            session = self.session
            return (session.tracer_provider() if session is not None else None), False
        return provider, True

    def meter(self) -> Any:
        provider = self.meter_provider
        if provider is not None:
            return provider
        provider = metrics.get_meter_provider()
        if _is_proxy_meter_provider(provider):
            session = self.session
            if session is not None:
                own = session.meter_provider()
                if own is not None:
                    return own
        return provider  # the API's proxy: real as soon as the program sets a provider


def _is_proxy_meter_provider(provider: Any) -> bool:
    return _otel_sdk.api_meter_provider(provider)


_providers = _Providers()
_active: _Enabled | None = None


def set_providers(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Export to these providers instead of the global ones (None: back to the global provider).

    Takes effect for the next span; metrics move to the new meter provider at the next loop.
    """
    with _lock:
        _providers.tracer_provider = tracer_provider
        _providers.meter_provider = meter_provider
        _providers.generation += 1
        enabled = _active
        if enabled is not None:
            enabled.rebind_metrics()


class _Enabled:
    """OpenTelemetry switched on for one installed State: the state's instrument (see
    taskwatch._core._instruments). Its hooks never raise: an error is counted and the next task,
    loop or finding is exported again."""

    def __init__(self, state: State) -> None:
        self.state = state
        spans = self.spans = TaskSpans(state, _providers, None)
        self.metrics: _otel_metrics.TaskMetrics | None = None
        self.meter_provider: Any = None
        self.finding = spans.on_finding
        self.stats = spans.stats
        self.task_ended = spans.on_end  # metrics count every task's end, spans or not
        if not spans.none:
            self.task_created = spans.on_create_all if spans.all else spans.on_create_interesting
            self.task_gate = spans.c_gate
            if sys.version_info >= (3, 12):  # Task.get_context(): the span current in the task
                self.task_cancelled = self._task_cancelled

    def loop_attached(self, probe: Probe, loop: Any) -> None:
        spans = self.spans
        if self.metrics is None:
            self.rebind_metrics()
        try:
            if not spans.none:
                spans.get_backend()
        except BaseException:
            _guard.internal_error("OpenTelemetry tracer provider")

    def _task_cancelled(self, task: Any, rec: Any) -> None:
        """A ``taskwatch.cancel`` event on the span current in the cancelled task."""
        try:
            self.spans.on_cancel(task, rec)
        except BaseException:
            _guard.internal_error("OpenTelemetry cancel")

    def rebind_metrics(self) -> None:
        try:
            provider = _providers.meter()
            if provider is None or provider is self.meter_provider:
                return
            _otel_metrics.detach(self.metrics, self.state)
            self.metrics = _otel_metrics.attach(provider, self.state)
            self.meter_provider = provider
            self.spans.set_metrics(self.metrics)
        except BaseException:
            _guard.internal_error("OpenTelemetry metrics")

    def stop(self) -> None:
        spans = self.spans
        spans.close()
        spans.set_metrics(None)
        _otel_metrics.detach(self.metrics, self.state)


def enable(state: State) -> None:
    """Start exporting for ``state`` (called by ``install(otel=True)``)."""
    global _active
    with _lock:
        if _active is not None:
            if _active.state is state:
                return
            disable(_active.state)
        if os.environ.get(_SESSION_ENV) == "1" and _providers.session is None:
            _providers.session = _otel_sdk.SessionSdk()
            # the program's own spans (and its instrumentation's) go where taskwatch's go
            _providers.session.set_globals()
        _sites.add_internal_path(os.sep + "wrapt" + os.sep)  # opentelemetry-instrumentation's wrappers
        state.precise_ends = True  # loops attached from now on close records when tasks end
        _task.seen_hooks = True  # ... or when first seen done (the pure-Python Task's methods)
        enabled = _Enabled(state)
        _active = enabled
        state.instruments.add(enabled)  # the live loops' hot paths get its per-task hooks
        for probe in state.live_probes():
            loop = probe.loop_ref()
            if loop is not None:
                enabled.loop_attached(probe, loop)


def disable(state: State) -> None:
    """Stop exporting (called by ``uninstall()``): the spans of tasks still running are exported."""
    global _active
    with _lock:
        enabled = _active
        if enabled is None or enabled.state is not state:
            return
        _active = None
        state.instruments.remove(enabled)  # and the loops' hot paths drop its per-task hooks
        try:
            enabled.stop()
        except BaseException:
            _guard.internal_error("OpenTelemetry disable")


def is_enabled() -> bool:
    return _active is not None


# ---------------------------------------------------------------------------------------------
# opentelemetry-instrument: the `taskwatch` instrumentor entry point
