"""OpenTelemetry for taskwatch: tasks, cancellations, errors and blocked loops in your traces.

    import taskwatch
    taskwatch.install(otel=True)                  # the global TracerProvider / MeterProvider

or ``python -m taskwatch --otel app.py`` (when the program has no provider of its own at the
session's start, sets up the global TracerProvider / MeterProvider from the ``OTEL_*`` variables,
as ``opentelemetry-instrument`` does, so the program's own spans are exported too), or ``opentelemetry-instrument python app.py`` (the
``taskwatch`` instrumentor; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=taskwatch`` turns it off).

Each exported task is an INTERNAL span named after its coroutine, child of the span that was
current where the task was created (a request's span, or the creating task's), and current inside
the task, so the spans you open there nest under it. Failures set status ERROR with an
``exception`` event; cancellations add a ``taskwatch.cancel`` event naming the canceller, its line
and message; findings are ``taskwatch.finding`` events (or a short child span once the task's span
has ended); a blocked loop is a ``taskwatch blocked-loop`` span with the block's exact start and
end, under the task that blocked. ``spans="interesting"`` (the default) exports the tasks that
failed, were cancelled, blocked the loop, ran longer than ``span_threshold``, had a finding, or
were created under a recording span; ``"all"`` exports every task; ``"none"`` only metrics.
Metrics: ``taskwatch.task.created``, ``.active``, ``.finished`` (by ``taskwatch.task.outcome``),
``taskwatch.task.duration``, ``taskwatch.loop.block.duration``, ``taskwatch.findings`` (by kind).

See integrations/otel/README.md for the attribute list, Jaeger and the Collector.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from . import _guard, _otel_metrics, _otel_sdk, _sites, _task
from ._otel_spans import TaskSpans

if TYPE_CHECKING:
    from ._probe import Probe
    from ._state import State

__all__ = ["TaskwatchInstrumentor", "set_providers"]

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
    """OpenTelemetry switched on for one installed State."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.spans = TaskSpans(state, _providers, None)
        self.metrics: _otel_metrics.TaskMetrics | None = None
        self.meter_provider: Any = None
        self.state_stats = self.spans.stats

    def on_attach(self, probe: Probe, loop: Any) -> None:
        spans = self.spans
        if self.metrics is None:
            self.rebind_metrics()
        try:
            if not spans.none:
                spans.get_backend()
        except BaseException:
            _guard.internal_error("OpenTelemetry tracer provider")
        if not spans.none:
            probe.gate = spans.c_gate()
            probe.on_create = spans.on_create_all if spans.all else spans.on_create_interesting
        probe.on_end = spans.on_end
        if not spans.none and sys.version_info >= (3, 12):  # Task.get_context()
            probe.on_cancel = _cancel_hook(probe, spans)

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
        for probe in self.state.live_probes():
            if probe.gate is not None and probe.gate[0] is spans:
                probe.gate = None
            if getattr(probe.on_end, "__self__", None) is spans:
                probe.on_end = None
            if getattr(probe.on_create, "__self__", None) is spans:
                probe.on_create = None
            if getattr(vars(probe).get("on_cancel"), "spans", None) is spans:
                del probe.on_cancel
        spans.close()
        spans.set_metrics(None)
        _otel_metrics.detach(self.metrics, self.state)


class _cancel_hook:
    """Stands in for ``Probe.on_cancel`` on one probe (an instance attribute, removed by
    ``_Enabled.stop``): records the cancel() as before, then lets the task spans put a
    ``taskwatch.cancel`` event on the span current in the cancelled task."""

    __slots__ = ("probe", "spans")

    def __init__(self, probe: Probe, spans: TaskSpans) -> None:
        self.probe = probe
        self.spans = spans

    def __call__(self, task: Any, msg: Any, frame: Any, via: int | None) -> None:
        probe = self.probe
        rec = getattr(task, "_tw_rec", None)
        before = len(rec.cancels or ()) if rec is not None else 0
        type(probe).on_cancel(probe, task, msg, frame, via)
        if rec is not None and len(rec.cancels or ()) > before:
            try:
                self.spans.on_cancel(task, rec)
            except BaseException:
                _guard.internal_error("OpenTelemetry cancel")


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
        state.listeners.append(enabled.spans.on_finding)
        state.attach_listeners.append(enabled.on_attach)
        hooks = getattr(state, "stats_hooks", None)
        if hooks is not None:
            hooks.append(enabled.state_stats)
        for probe in state.live_probes():
            loop = probe.loop_ref()
            if loop is not None:
                try:
                    enabled.on_attach(probe, loop)
                except BaseException:
                    _guard.internal_error("OpenTelemetry attach")


def disable(state: State) -> None:
    """Stop exporting (called by ``uninstall()``): the spans of tasks still running are exported."""
    global _active
    with _lock:
        enabled = _active
        if enabled is None or enabled.state is not state:
            return
        _active = None
        for listeners, item in ((state.listeners, enabled.spans.on_finding),
                                (state.attach_listeners, enabled.on_attach),
                                (getattr(state, "stats_hooks", None), enabled.state_stats)):
            if listeners is not None and item in listeners:
                listeners.remove(item)
        try:
            enabled.stop()
        except BaseException:
            _guard.internal_error("OpenTelemetry disable")


def is_enabled() -> bool:
    return _active is not None


# ---------------------------------------------------------------------------------------------
# opentelemetry-instrument: the `taskwatch` instrumentor entry point

try:
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
except ImportError:  # opentelemetry-instrumentation is not installed: same shape, no extras

    class BaseInstrumentor:  # type: ignore[no-redef]
        _instance: Any = None
        _is_instrumented_by_opentelemetry = False

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            if cls._instance is None:
                cls._instance = object.__new__(cls)
            return cls._instance

        @property
        def is_instrumented_by_opentelemetry(self) -> bool:
            return self._is_instrumented_by_opentelemetry

        def instrument(self, **kwargs: Any) -> Any:
            if self._is_instrumented_by_opentelemetry:
                return None
            kwargs.pop("skip_dep_check", None)
            kwargs.pop("raise_exception_on_conflict", None)
            result = self._instrument(**kwargs)  # type: ignore[attr-defined]
            self._is_instrumented_by_opentelemetry = True
            return result

        def uninstrument(self, **kwargs: Any) -> Any:
            if self._is_instrumented_by_opentelemetry:
                result = self._uninstrument(**kwargs)  # type: ignore[attr-defined]
                self._is_instrumented_by_opentelemetry = False
                return result
            return None


class TaskwatchInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Turns taskwatch on with OpenTelemetry export, the way every instrumentation is turned on.

        TaskwatchInstrumentor().instrument()                      # or opentelemetry-instrument
        TaskwatchInstrumentor().instrument(spans="all", tracer_provider=provider)

    Keyword arguments other than ``tracer_provider`` / ``meter_provider`` are taskwatch options
    (``TASKWATCH_*`` variables apply too). If taskwatch is already installed, OpenTelemetry is
    switched on for it.
    """

    _installed_by_us = False

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # asyncio is in the standard library; uvloop is optional

    def _instrument(self, **kwargs: Any) -> None:
        import taskwatch

        from . import _hooks

        tracer_provider = kwargs.pop("tracer_provider", None)
        meter_provider = kwargs.pop("meter_provider", None)
        if tracer_provider is not None or meter_provider is not None:
            set_providers(tracer_provider, meter_provider)
        state = _hooks.current()
        if state is not None:
            enable(state)
            self._installed_by_us = False
            return
        options = dict(kwargs)
        options["otel"] = True
        taskwatch.install(**options)
        self._installed_by_us = taskwatch.is_installed()

    def _uninstrument(self, **kwargs: Any) -> None:
        import taskwatch

        from . import _hooks

        if self._installed_by_us:
            taskwatch.uninstall()
            self._installed_by_us = False
            return
        state = _hooks.current()
        if state is not None:
            disable(state)
