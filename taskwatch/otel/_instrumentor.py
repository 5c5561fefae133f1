"""The instrumentor ``opentelemetry-instrument`` finds through the ``opentelemetry_instrumentor``
entry point, in opentelemetry-python-contrib's shape."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ._wiring import disable, enable, set_providers

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

        from .._core import _hooks

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

        from .._core import _hooks

        if self._installed_by_us:
            taskwatch.uninstall()
            self._installed_by_us = False
            return
        state = _hooks.current()
        if state is not None:
            disable(state)
