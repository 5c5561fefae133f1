"""The SDK set-up of ``python -m taskwatch --otel``.

When the program has no TracerProvider / MeterProvider of its own when the session starts, the
session builds them from the standard ``OTEL_*`` variables (exporter, OTLP protocol, endpoint,
headers, service name, resource attributes, sampler, batch sizes) and makes them the *global*
providers, as ``opentelemetry-instrument`` does: the spans the program opens itself, and those of
its instrumentation (a framework's request spans), are exported with taskwatch's, in the same
traces. OpenTelemetry sets a global provider only once: a program that sets its own later is
refused by OpenTelemetry (it logs "Overriding of current TracerProvider is not allowed", the
program goes on), exactly as under ``opentelemetry-instrument``. ``OTEL_TRACES_EXPORTER=none``
(``OTEL_METRICS_EXPORTER=none``) leaves that global provider unset: taskwatch then follows the
program's own, when it sets one. Only public OpenTelemetry API and SDK names are used here.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

logger = logging.getLogger("taskwatch")


def _env_list(name: str, default: str) -> list[str]:
    return [v.strip().lower() for v in os.environ.get(name, default).split(",") if v.strip()]


def _protocol(signal: str) -> str:
    return (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()


def _disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


# The program a ``python -m taskwatch`` session runs, as its command line named it: (path or
# module, is a module). Set by the session before it starts taskwatch (``sys.argv`` is still the
# session's own then); None elsewhere: the program is ``sys.argv[0]``.
_session_program: tuple[str, bool] | None = None


def set_session_program(program: str, module: bool) -> None:
    global _session_program
    _session_program = (program, module)


def _program() -> tuple[str, bool]:
    """The program's path, or its ``-m`` module name (then True)."""
    if _session_program is not None:
        return _session_program
    argv = sys.argv
    return (argv[0] if argv and argv[0] else ""), False


def _service_name() -> str:
    """The program's name (``app`` for ``app.py``, the module for ``-m pkg.mod``): better than
    the SDK's ``unknown_service``."""
    program, module = _program()
    if module:
        return program
    base = os.path.splitext(os.path.basename(program))[0]
    if base in ("", "-c", "-m", "__main__"):
        return "unknown_service:taskwatch"
    return base


def resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    res = Resource.create()
    name = str(res.attributes.get(SERVICE_NAME) or "")
    if not name or name.startswith("unknown_service"):
        res = res.merge(Resource({SERVICE_NAME: _service_name()}))
    return res


def span_exporters() -> list[Any]:
    out = []
    for name in _env_list("OTEL_TRACES_EXPORTER", "otlp"):
        if name == "none":
            return []
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = _protocol("TRACES")
            try:
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
                elif protocol in ("http/protobuf", "http"):
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                else:
                    logger.warning("taskwatch: OTLP protocol %r is not supported for traces "
                                   "(use http/protobuf or grpc); no spans exported", protocol)
                    continue
            except ImportError:
                _missing(protocol)
                continue
            out.append(OTLPSpanExporter())
        else:
            logger.warning("taskwatch: OTEL_TRACES_EXPORTER=%s is not supported by the taskwatch "
                           "session (otlp, console, none)", name)
    return out


def metric_exporters() -> list[Any]:
    out = []
    for name in _env_list("OTEL_METRICS_EXPORTER", "otlp"):
        if name == "none":
            return []
        if name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            out.append(ConsoleMetricExporter())
        elif name == "otlp":
            protocol = _protocol("METRICS")
            try:
                if protocol == "grpc":
                    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                        OTLPMetricExporter,
                    )
                elif protocol in ("http/protobuf", "http"):
                    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                        OTLPMetricExporter,
                    )
                else:
                    logger.warning("taskwatch: OTLP protocol %r is not supported for metrics", protocol)
                    continue
            except ImportError:
                _missing(protocol)
                continue
            out.append(OTLPMetricExporter())
        else:
            logger.warning("taskwatch: OTEL_METRICS_EXPORTER=%s is not supported by the taskwatch "
                           "session (otlp, console, none)", name)
    return out


_warned: set[str] = set()


def _missing(protocol: str) -> None:
    package = ("opentelemetry-exporter-otlp-proto-grpc" if protocol == "grpc"
               else "opentelemetry-exporter-otlp-proto-http (pip install 'taskwatch[otlp]')")
    if protocol not in _warned:
        _warned.add(protocol)
        logger.warning("taskwatch: --otel needs %s to export over OTLP/%s", package, protocol)


class SessionSdk:
    """Providers built on first use, for a session whose program set none of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracer_provider: Any = None
        self._meter_provider: Any = None
        self._tried_traces = False
        self._tried_metrics = False
        self._resource: Any = None

    def _res(self) -> Any:
        if self._resource is None:
            self._resource = resource()
        return self._resource

    def tracer_provider(self) -> Any:
        if self._tried_traces:
            return self._tracer_provider
        with self._lock:
            if not self._tried_traces:
                try:
                    self._tracer_provider = self._make_tracer_provider()
                except Exception:
                    logger.exception("taskwatch: could not set up OpenTelemetry tracing")
                self._tried_traces = True
        return self._tracer_provider

    def _make_tracer_provider(self) -> Any:
        if _disabled():
            return None
        exporters = span_exporters()
        if not exporters:
            return None
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=self._res())
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return provider

    def meter_provider(self) -> Any:
        if self._tried_metrics:
            return self._meter_provider
        with self._lock:
            if not self._tried_metrics:
                try:
                    self._meter_provider = self._make_meter_provider()
                except Exception:
                    logger.exception("taskwatch: could not set up OpenTelemetry metrics")
                self._tried_metrics = True
        return self._meter_provider

    def _make_meter_provider(self) -> Any:
        if _disabled():
            return None
        exporters = metric_exporters()
        if not exporters:
            return None
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers = [PeriodicExportingMetricReader(exporter) for exporter in exporters]
        return MeterProvider(resource=self._res(), metric_readers=readers)

    def set_globals(self) -> None:
        """At the session's start: where the program has no global TracerProvider /
        MeterProvider, build them from ``OTEL_*`` and make them the global ones. Never raises."""
        if _disabled():
            return
        try:
            from opentelemetry import trace

            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                provider = self.tracer_provider()
                if provider is not None:
                    trace.set_tracer_provider(provider)
        except Exception:
            logger.exception("taskwatch: could not set up OpenTelemetry tracing")
        try:
            from opentelemetry import metrics

            if api_meter_provider(metrics.get_meter_provider()):
                provider = self.meter_provider()
                if provider is not None:
                    metrics.set_meter_provider(provider)
        except Exception:
            logger.exception("taskwatch: could not set up OpenTelemetry metrics")

    def shutdown(self) -> None:
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    pass


def api_meter_provider(provider: Any) -> bool:
    """True for the metrics API's own providers (the proxy that stands in until a provider is
    set, or the no-op one): none of the program's. Told by module, the API's classes not being
    public names."""
    module = type(provider).__module__ or ""
    return module == "opentelemetry.metrics" or module.startswith("opentelemetry.metrics.")
