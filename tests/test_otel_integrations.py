"""taskwatch among OpenTelemetry's own pieces: opentelemetry-instrument (the entry point and
OTEL_PYTHON_DISABLED_INSTRUMENTATIONS), the global providers, and
opentelemetry-instrumentation-asyncio (one span per task, the user's names and lines)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.trace import StatusCode  # noqa: E402

import taskwatch  # noqa: E402
import taskwatch.otel as tw_otel  # noqa: E402

from .conftest import here, run  # noqa: E402
from .test_otel import Pipeline, assert_no_holes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP = textwrap.dedent("""
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # after taskwatch started: it follows the global provider
    tracer = trace.get_tracer("app")

    async def charge():
        await asyncio.sleep(0)
        raise ValueError("declined")

    async def main():
        with tracer.start_as_current_span("POST /pay"):
            task = asyncio.create_task(charge())
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    import taskwatch
    spans = exporter.get_finished_spans()
    ids = {s.context.span_id: s.name for s in spans}
    print(json.dumps({
        "installed": taskwatch.is_installed(),
        "spans": {s.name: ids.get(s.parent.span_id) if s.parent else None for s in spans},
        "status": {s.name: s.status.status_code.name for s in spans},
    }))
""")


def _fake_distribution(tmp_path):
    """The entry point pyproject.toml declares, for a checkout that is not pip-installed."""
    site = tmp_path / "site"
    dist = site / "taskwatch-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: taskwatch\nVersion: 0.1.0\n"
                                   "Provides-Extra: instruments\n")  # as the real one declares
    (dist / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\ntaskwatch = taskwatch.otel:TaskwatchInstrumentor\n")
    return str(site)


def _run_instrumented(tmp_path, **env_extra):
    tool = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    if not os.path.exists(tool):
        pytest.skip("opentelemetry-instrumentation is not installed")
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKWATCH_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([_fake_distribution(tmp_path), ROOT])
    env["OTEL_TRACES_EXPORTER"] = "none"
    env["OTEL_METRICS_EXPORTER"] = "none"
    env["OTEL_LOGS_EXPORTER"] = "none"
    env["TASKWATCH_LOG"] = "false"
    env.update(env_extra)
    proc = subprocess.run([tool, sys.executable, str(app)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_opentelemetry_instrument_turns_taskwatch_on(tmp_path):
    out = _run_instrumented(tmp_path)
    assert out["installed"] is True
    assert out["spans"]["__main__.charge"] == "POST /pay"
    assert out["status"]["__main__.charge"] == "ERROR"


def test_disabled_instrumentations_turn_it_off(tmp_path):
    out = _run_instrumented(tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="requests,taskwatch")
    assert out["installed"] is False
    assert list(out["spans"]) == ["POST /pay"]


def test_instrumentor_in_process(watch, loop_kind):
    pipe = Pipeline()
    instrumentor = tw_otel.TaskwatchInstrumentor()
    assert instrumentor.instrumentation_dependencies() == ()
    instrumentor.instrument(tracer_provider=pipe.provider, meter_provider=pipe.meter_provider,
                            spans="all", log=False, watchdog=False)
    try:
        assert taskwatch.is_installed()

        async def job():
            return 3

        async def main():
            return await asyncio.create_task(job())

        assert run(main(), loop_kind) == 3
    finally:
        instrumentor.uninstrument()
        tw_otel.set_providers(None, None)
    assert not taskwatch.is_installed()
    assert pipe.one(".job").parent.span_id == pipe.one(".main").context.span_id


def test_instrumentor_on_an_installed_taskwatch(watch):
    pipe = Pipeline()
    watch(watchdog=False)  # installed without otel (e.g. by `python -m taskwatch`)
    instrumentor = tw_otel.TaskwatchInstrumentor()
    instrumentor.instrument(tracer_provider=pipe.provider)
    try:
        async def fails():
            raise OSError("disk")

        async def main():
            await asyncio.gather(asyncio.create_task(fails()), return_exceptions=True)

        run(main())
        assert pipe.one(".fails").status.status_code is StatusCode.ERROR
    finally:
        instrumentor.uninstrument()
        tw_otel.set_providers(None, None)
    assert taskwatch.is_installed()  # it was not ours to uninstall
    assert not tw_otel.is_enabled()


def test_coexists_with_opentelemetry_instrumentation_asyncio(watch, loop_kind, monkeypatch):
    """Both run, neither touches the other (taskwatch reads nothing of that instrumentation's):
    its span for a listed coroutine nests under taskwatch's live span of the task, creation
    sites still name the program's line (not the instrumentation's wrapper), and a task that is
    not interesting gets no span of taskwatch's."""
    module = pytest.importorskip("opentelemetry.instrumentation.asyncio")
    pipe = Pipeline()
    tracer = pipe.tracer
    monkeypatch.setenv("OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE", "fetch,ping")
    instrumentor = module.AsyncioInstrumentor()
    instrumentor.instrument(tracer_provider=pipe.provider)
    lines = {}
    try:
        tw_otel.set_providers(pipe.provider, pipe.meter_provider)
        watch(otel=True, watchdog=False)  # spans="interesting"

        async def fetch():
            await asyncio.sleep(0)
            with tracer.start_as_current_span("db.query"):
                pass

        async def ping():  # traced by name in opentelemetry-instrumentation-asyncio's list
            return "pong"

        async def other():  # in nobody's list, not interesting: no span at all
            return None

        async def main():
            with tracer.start_as_current_span("GET /"):
                lines["fetch"] = here() + 1
                await asyncio.create_task(fetch())
            lines["ping"] = here() + 1
            await asyncio.create_task(ping())
            await asyncio.gather(other(), asyncio.create_task(other()))

        run(main(), loop_kind)
    finally:
        instrumentor.uninstrument()
        taskwatch.uninstall()
        tw_otel.set_providers(None, None)
    spans = pipe.spans()
    ours = pipe.one(".fetch")  # created under "GET /": taskwatch's live span
    assert ours.attributes["taskwatch.creation.line.number"] == lines["fetch"]
    assert ours.attributes["taskwatch.creation.file.path"] == __file__
    assert ours.parent.span_id == next(s for s in spans if s.name == "GET /").context.span_id
    theirs = next(s for s in spans if s.name == "asyncio coro-fetch")
    assert theirs.parent.span_id == ours.context.span_id
    assert next(s for s in spans if s.name == "db.query").parent.span_id in (
        ours.context.span_id, theirs.context.span_id)
    assert_no_holes(spans)
    assert [s.name for s in spans if s.name == "asyncio coro-ping"]  # theirs, as listed
    assert not pipe.named(".ping") and not pipe.named(".other")  # quick and clean: not ours
    assert instrumentor.is_instrumented_by_opentelemetry is False  # uninstrumented as usual


def test_core_does_not_import_opentelemetry():
    code = ("import sys, asyncio, taskwatch; taskwatch.install(log=False)\n"
            "async def main(): await asyncio.sleep(0)\n"
            "asyncio.run(main()); taskwatch.report(); taskwatch.uninstall()\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TASKWATCH_OTEL", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
