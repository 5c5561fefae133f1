"""The ``opentelemetry_instrumentor`` entry point as opentelemetry-instrument needs it (issue 17).

Before it loads an instrumentor, opentelemetry-instrument checks the libraries that the
instrumentor's distribution lists in its ``instruments`` extra, the convention of every
opentelemetry-python-contrib instrumentation. opentelemetry-instrumentation < 0.49 reads that
extra through pkg_resources, which raises UnknownExtra for a distribution without it: the
auto-instrumentation then stops, so neither taskwatch nor any instrumentor listed after it was
loaded. pyproject.toml declares the extra, empty (asyncio is in the standard library).

These tests read the installed distribution's metadata (``pip install -e .`` writes it): after a
change to pyproject.toml, install again.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ENTRY_POINT = "taskwatch.otel:TaskwatchInstrumentor"

# the instrumentor of another distribution, listed after taskwatch's: it must still be loaded
PROBE = textwrap.dedent("""
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    loaded = False


    class ProbeInstrumentor(BaseInstrumentor):
        def instrumentation_dependencies(self):
            return ()

        def _instrument(self, **kwargs):
            global loaded
            loaded = True

        def _uninstrument(self, **kwargs):
            pass
""")

APP = textwrap.dedent("""
    import asyncio, json, sys

    async def child():
        await asyncio.sleep(0)
        return 1

    async def main():
        return await asyncio.create_task(child())

    result = asyncio.run(main())
    import taskwatch
    from taskwatch.otel import TaskwatchInstrumentor
    probe = sys.modules.get("twprobe_instrumentor")
    print(json.dumps({
        "result": result,
        "installed": taskwatch.is_installed(),
        "instrumented": TaskwatchInstrumentor().is_instrumented_by_opentelemetry,
        "probe": bool(probe is not None and probe.loaded),
    }))
""")


def _distribution() -> importlib.metadata.Distribution:
    try:
        dist = importlib.metadata.distribution("taskwatch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("taskwatch is not installed as a distribution (pip install -e .)")
    eps = [ep for ep in dist.entry_points if ep.group == "opentelemetry_instrumentor"]
    assert [(ep.name, ep.value) for ep in eps] == [("taskwatch", ENTRY_POINT)], (
        f"the installed taskwatch ({dist.version}) lacks the opentelemetry_instrumentor entry "
        "point of pyproject.toml: pip install -e . again")
    return dist


def _instruments_requirements(dist: importlib.metadata.Distribution) -> list[str]:
    """The Requires-Dist lines that only the ``instruments`` extra pulls in."""
    from packaging.requirements import Requirement  # pytest's own dependency

    found = []
    for line in dist.requires or []:
        marker = Requirement(line).marker
        if marker is not None and marker.evaluate({"extra": "instruments"}) \
                and not marker.evaluate({"extra": ""}):
            found.append(line)
    return found


def test_distribution_offers_the_instruments_extra():
    dist = _distribution()
    extras = dist.metadata.get_all("Provides-Extra") or []
    assert "instruments" in extras, (
        f"taskwatch's metadata has no 'instruments' extra (Provides-Extra: {extras}): "
        "opentelemetry-instrument (opentelemetry-instrumentation < 0.49) fails on its "
        "entry point with UnknownExtra. Declare it in pyproject.toml, then pip install -e . again")
    # what the instrumentor itself declares (contrib keeps both the same): nothing, so that
    # opentelemetry-instrument never skips taskwatch for a missing library
    from taskwatch.otel import TaskwatchInstrumentor

    assert tuple(TaskwatchInstrumentor().instrumentation_dependencies()) == ()
    assert _instruments_requirements(dist) == []


def test_opentelemetry_instrumentation_finds_no_conflict():
    """opentelemetry-instrument's own check of the entry point's distribution, in process."""
    if importlib.util.find_spec("opentelemetry.instrumentation") is None:
        pytest.skip("opentelemetry-instrumentation is not installed")
    _distribution()
    deps = importlib.import_module("opentelemetry.instrumentation.dependencies")
    if hasattr(deps, "get_distribution"):  # < 0.49: pkg_resources' distributions
        dist = deps.get_distribution("taskwatch")
    else:
        dist = importlib.metadata.distribution("taskwatch")
    assert deps.get_dist_dependency_conflicts(dist) is None


def _copy_metadata(dist: importlib.metadata.Distribution, site: str) -> None:
    """taskwatch's installed metadata, as it is, into a directory of its own."""
    meta = os.path.join(site, f"taskwatch-{dist.version}.dist-info")
    os.makedirs(meta)
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")  # dist-info, egg-info
    assert text, "the installed taskwatch has no METADATA"
    with open(os.path.join(meta, "METADATA"), "w") as f:
        f.write(text)
    with open(os.path.join(meta, "entry_points.txt"), "w") as f:
        f.write(dist.read_text("entry_points.txt") or "")


def _probe_distribution(site: str) -> None:
    meta = os.path.join(site, "twprobe_instrumentor-1.0.dist-info")
    os.makedirs(meta)
    with open(os.path.join(meta, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: twprobe-instrumentor\nVersion: 1.0\n"
                "Provides-Extra: instruments\n")
    with open(os.path.join(meta, "entry_points.txt"), "w") as f:
        f.write("[opentelemetry_instrumentor]\ntwprobe = twprobe_instrumentor:ProbeInstrumentor\n")
    with open(os.path.join(site, "twprobe_instrumentor.py"), "w") as f:
        f.write(PROBE)


def test_opentelemetry_instrument_loads_taskwatch_and_the_instrumentors_after_it(tmp_path):
    """``opentelemetry-instrument python app.py``: taskwatch is on inside the app, and an
    instrumentor listed after taskwatch's entry point is loaded too.

    Entry points are listed in sys.path order, so taskwatch's installed metadata is copied into a
    directory put on PYTHONPATH before the probe's (the copy hides the installed one: the first
    distribution of a name wins); the code imported is the installed taskwatch.
    """
    if importlib.util.find_spec("opentelemetry.instrumentation") is None:
        pytest.skip("opentelemetry-instrumentation is not installed")
    dist = _distribution()
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    _copy_metadata(dist, first)
    _probe_distribution(second)
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASKWATCH_", "OTEL_")) and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([first, second])
    env["OTEL_TRACES_EXPORTER"] = "none"
    env["OTEL_METRICS_EXPORTER"] = "none"
    env["OTEL_LOGS_EXPORTER"] = "none"
    env["TASKWATCH_LOG"] = "false"
    # what the opentelemetry-instrument script runs (its path varies: venv, --user, system)
    tool = "import sys; from opentelemetry.instrumentation.auto_instrumentation import run; " \
           "sys.exit(run())"
    proc = subprocess.run([sys.executable, "-c", tool, sys.executable, str(app)], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    out = json.loads(lines[-1])
    assert out == {"result": 1, "installed": True, "instrumented": True, "probe": True}, proc.stderr
    assert "Instrumenting of taskwatch failed" not in proc.stderr
    assert "Failed to auto initialize" not in proc.stderr
