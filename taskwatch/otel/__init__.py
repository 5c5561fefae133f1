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

from typing import Any

__all__ = ["TaskwatchInstrumentor", "set_providers"]

# Names resolved on first use (PEP 562): importing this package, or its OpenTelemetry-free
# ``_sdk`` module from the CLI, must not import OpenTelemetry, which may not be installed.
_LAZY = {"TaskwatchInstrumentor": "_instrumentor", "set_providers": "_wiring", "enable": "_wiring",
         "disable": "_wiring", "is_enabled": "_wiring"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
