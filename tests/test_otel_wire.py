"""On the wire: spans sent by the real OTLP/HTTP exporter to a receiver on 127.0.0.1 (an ephemeral
port, started by the test), decoded with opentelemetry-proto; and the ``python -m taskwatch --otel``
session, which sets up the SDK from the OTEL_* variables when the program configures none."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
trace_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
metrics_pb2 = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402

import taskwatch  # noqa: E402
import taskwatch.otel as tw_otel  # noqa: E402

from .conftest import here, run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Receiver:
    """A minimal OTLP/HTTP receiver: stores each POSTed protobuf body by path."""

    def __init__(self, delay: float = 0.0) -> None:
        received: list[tuple[str, bytes]] = []
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if delay:
                    time.sleep(delay)
                with lock:
                    received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.lock = lock
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def spans(self) -> list[tuple[dict, object]]:
        """(resource attributes, span) for every span received on /v1/traces."""
        out = []
        with self.lock:
            bodies = [b for p, b in self.received if p == "/v1/traces"]
        for body in bodies:
            request = trace_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            for rs in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append((resource, span, ss.scope.name))
        return out

    def metric_names(self) -> set[str]:
        names = set()
        with self.lock:
            bodies = [b for p, b in self.received if p == "/v1/metrics"]
        for body in bodies:
            request = metrics_pb2.ExportMetricsServiceRequest()
            request.ParseFromString(body)
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    names.update(m.name for m in sm.metrics)
        return names


def _value(v: object) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span: object) -> dict:
    return {kv.key: _value(kv.value) for kv in span.attributes}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_spans_over_otlp_http(watch, receiver, loop_kind):
    provider = TracerProvider()
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces", timeout=10))
    provider.add_span_processor(processor)
    tw_otel.set_providers(provider)
    tracer = provider.get_tracer("app")
    lines = {}
    try:
        watch(otel=True, watchdog=False)

        async def notify(user):
            await asyncio.sleep(0.02)
            raise TimeoutError(f"mail server slow for {user}")

        async def main():
            with tracer.start_as_current_span("POST /signup"):
                lines["create"] = here() + 1
                task = asyncio.create_task(notify("ada"), name="notify-ada")
            await asyncio.gather(task, return_exceptions=True)

        run(main(), loop_kind)
        assert provider.force_flush(10_000)
    finally:
        taskwatch.uninstall()
        tw_otel.set_providers(None, None)
        provider.shutdown()
    received = receiver.spans()
    by_name = {span.name: (resource, span, scope) for resource, span, scope in received}
    _, request, _ = by_name["POST /signup"]
    resource, task, scope = by_name[f"{__name__}.test_spans_over_otlp_http.<locals>.notify"]
    assert scope == "taskwatch"
    assert task.kind == task.SPAN_KIND_INTERNAL
    assert task.parent_span_id == request.span_id and task.trace_id == request.trace_id
    assert task.status.code == task.status.STATUS_CODE_ERROR
    assert task.status.message == "mail server slow for ada"
    a = attrs(task)
    assert a["taskwatch.task.name"] == "notify-ada"
    assert a["taskwatch.creation.line.number"] == lines["create"]
    assert a["code.file.path"] == __file__
    assert a["error.type"] == "TimeoutError"
    (event,) = [e for e in task.events if e.name == "exception"]
    assert attrs(event)["exception.type"] == "TimeoutError"
    assert task.start_time_unix_nano < task.end_time_unix_nano
    assert task.end_time_unix_nano - task.start_time_unix_nano >= 15_000_000  # slept 20 ms


SESSION_APP = textwrap.dedent("""
    import asyncio, time

    async def fetch(i):
        await asyncio.sleep(0.01)
        if i == 2:
            raise ConnectionError("refused")

    async def block():
        time.sleep(0.3)

    async def main():
        await asyncio.gather(*(asyncio.create_task(fetch(i)) for i in range(4)),
                             return_exceptions=True)
        await asyncio.create_task(block())
        await asyncio.sleep(0.1)

    asyncio.run(main())
""")


def _session_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKWATCH_", "OTEL_"))}
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


def test_session_sets_up_the_sdk_from_otel_variables(tmp_path, receiver):
    app = tmp_path / "checkout.py"
    app.write_text(SESSION_APP)
    env = _session_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                       OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
                       OTEL_BSP_SCHEDULE_DELAY="100")
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--otel", "--block-threshold", "0.1",
                           "--quiet-summary", str(app)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    received = receiver.spans()
    names = sorted({span.name for _r, span, _s in received})
    # main() ran 0.4 s, but the loop's main task is not a trace of its own
    assert names == ["__main__.block", "__main__.fetch", "taskwatch blocked-loop"]
    resource = received[0][0]
    assert resource["service.name"] == "checkout"
    assert resource["deployment.environment"] == "test"
    assert resource["telemetry.sdk.language"] == "python"
    spans = {span.span_id: span for _r, span, _s in received}
    fetch = next(s for s in spans.values() if s.name == "__main__.fetch")
    assert fetch.status.code == fetch.status.STATUS_CODE_ERROR
    assert not fetch.parent_span_id  # the main task's child: a root
    assert attrs(fetch)["taskwatch.parent_task.coroutine"] == "__main__.main"
    block = next(s for s in spans.values() if s.name == "taskwatch blocked-loop")
    assert spans[block.parent_span_id].name == "__main__.block"
    assert attrs(block)["taskwatch.block.duration"] >= 0.2
    for span in spans.values():  # no holes
        assert not span.parent_span_id or span.parent_span_id in spans
    assert {"taskwatch.task.created", "taskwatch.task.duration",
            "taskwatch.loop.block.duration"} <= receiver.metric_names()


OWN_SPANS_APP = textwrap.dedent("""
    import asyncio
    from opentelemetry import trace

    tracer = trace.get_tracer(__name__)

    async def charge(order):
        with tracer.start_as_current_span("charge card"):
            await asyncio.sleep(0.01)
        raise ConnectionError("payment gateway down")

    async def handle(order):
        with tracer.start_as_current_span("POST /orders"):
            task = asyncio.create_task(charge(order))
            try:
                await task
            except ConnectionError:
                pass

    async def main():
        await handle(1)

    asyncio.run(main())
    print("served")
""")


def test_session_exports_the_programs_own_spans(tmp_path, receiver):
    """A program that configures no SDK: the session sets up the *global* providers from OTEL_*,
    so the spans the program opens itself are exported, and taskwatch's task spans nest with
    them (the task under the request span current where it was created, the program's span
    opened inside the task under the task's span), in one trace."""
    app = tmp_path / "shop.py"
    app.write_text(OWN_SPANS_APP)
    env = _session_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_METRICS_EXPORTER="none",
                       OTEL_BSP_SCHEDULE_DELAY="100")
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--otel", "--quiet-summary",
                           "--no-watchdog", str(app)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "served\n"
    received = receiver.spans()
    by_name = {span.name: (resource, span, scope) for resource, span, scope in received}
    assert {"POST /orders", "charge card", "__main__.charge"} <= set(by_name), sorted(by_name)
    resource, request, scope = by_name["POST /orders"]
    assert scope == "__main__" and resource["service.name"] == "shop"
    _, task, task_scope = by_name["__main__.charge"]
    _, inner, _ = by_name["charge card"]
    assert task_scope == "taskwatch"
    assert task.parent_span_id == request.span_id and task.trace_id == request.trace_id
    assert inner.parent_span_id == task.span_id and inner.trace_id == request.trace_id
    assert task.status.code == task.status.STATUS_CODE_ERROR
    spans = {span.span_id: span for _r, span, _s in received}
    for span in spans.values():  # no holes
        assert not span.parent_span_id or span.parent_span_id in spans


def test_session_with_the_programs_own_provider(tmp_path, receiver):
    """A program that sets its own TracerProvider after the session set up the global one: as
    under opentelemetry-instrument, OpenTelemetry refuses it with a warning and the program runs
    on; every span goes to the session's pipeline. With OTEL_TRACES_EXPORTER=none the session
    sets no global TracerProvider: the program's is kept and taskwatch's spans go there."""
    app = tmp_path / "own.py"
    app.write_text(textwrap.dedent("""
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        async def fails():
            raise KeyError("k")

        async def main():
            await asyncio.gather(asyncio.create_task(fails()), return_exceptions=True)

        asyncio.run(main())
        print(sorted(s.name for s in exporter.get_finished_spans()))
    """))
    env = _session_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_METRICS_EXPORTER="none",
                       OTEL_BSP_SCHEDULE_DELAY="100")
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--otel", "--quiet-summary", str(app)],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Overriding of current TracerProvider is not allowed" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "__main__.fails" in {span.name for _r, span, _s in receiver.spans()}

    env["OTEL_TRACES_EXPORTER"] = "none"
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--otel", "--quiet-summary", str(app)],
                          env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Overriding" not in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "['__main__.fails']"


def test_unreachable_endpoint_never_slows_the_program(tmp_path):
    """Nothing listens: the program runs at its speed and memory stays bounded by the queue (the
    SDK drops what does not fit, and says so itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: connection refused
    app = tmp_path / "busy.py"
    app.write_text(textwrap.dedent("""
        import asyncio, time

        async def fails(i):
            raise ValueError(i)

        async def main():
            t0 = time.perf_counter()
            for _ in range(20):
                await asyncio.gather(*(asyncio.create_task(fails(i)) for i in range(100)),
                                     return_exceptions=True)
            print("elapsed", time.perf_counter() - t0)

        asyncio.run(main())
    """))
    report = tmp_path / "report.json"
    env = _session_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                       OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_MAX_QUEUE_SIZE="64",
                       OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16", OTEL_BSP_SCHEDULE_DELAY="50",
                       OTEL_METRICS_EXPORTER="none")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--otel", "--json", str(report),
                           "--quiet-summary", "--no-watchdog", str(app)], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60
    elapsed = float(proc.stdout.split("elapsed")[1])
    assert elapsed < 10  # 2,000 failing tasks; exporting never waited on the endpoint
    stats = json.loads(report.read_text())["stats"]
    assert stats["spans_exported"] >= 2000
