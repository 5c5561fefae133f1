"""The framework guides' examples (integrations/): their apps run under taskwatch, their tests pass
with the pytest plugin, and the plugin catches a classic bug in a handler of each framework.

Skipped when the framework is not installed; the ``test`` extra installs them all, so CI runs them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .test_pytest_plugin import REPO, failed, line_of, passed, prepare, run

pytest_plugins = ["pytester"]


@pytest.fixture
def tw(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return prepare(pytester, monkeypatch)

INTEGRATIONS = Path(REPO) / "integrations"


def copy_example(pytester: pytest.Pytester, name: str) -> None:
    for file in (f"{name}_app.py", f"test_{name}_app.py"):
        shutil.copy(INTEGRATIONS / name / file, pytester.path / file)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback only)
        return response.read()


def serve_and_stop(script: Path, tmp_path: Path) -> tuple[str, dict]:
    """Run an example server, make a few requests, stop it with Ctrl-C; its output and report."""
    port = free_port()
    report = tmp_path / "report.json"
    log = tmp_path / "server.log"
    env = dict(os.environ, TASKWATCH_REPORT=str(report),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    for name in [n for n in env if n.startswith("TASKWATCH_") and n != "TASKWATCH_REPORT"]:
        del env[name]
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(script), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    order = json.loads(get(f"{base}/orders/7"))
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(log.read_text()) from None
                    time.sleep(0.1)
            assert order == {"id": "7", "status": "new"}
            live = json.loads(get(f"{base}/debug/taskwatch"))
            assert live["findings"] == [] and live["stats"]["tasks_created"] > 0, live
            assert "audit_worker" in get(f"{base}/debug/tasks").decode()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, output
    return output, json.loads(report.read_text())


# -- aiohttp --------------------------------------------------------------------------------------

AIOHTTP_BUG = '''
import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiohttp_app import make_app


async def send_receipt(order_id):
    raise ConnectionError(f"mail server down (order {order_id})")


async def create_order(request):
    asyncio.create_task(send_receipt(request.match_info["order_id"]))  # FIRE-AND-FORGET
    return web.json_response({"created": True})


@pytest.mark.asyncio
async def test_create_order():
    app = make_app()
    app.router.add_post("/orders/{order_id}", create_order)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/orders/1")
        assert response.status == 200
        await asyncio.sleep(0.05)
'''


def test_aiohttp_example_tests_pass_and_a_handler_bug_fails(tw: pytest.Pytester) -> None:
    pytest.importorskip("aiohttp")
    copy_example(tw, "aiohttp")
    tw.makepyfile(test_bug=AIOHTTP_BUG)
    # the example enables taskwatch with its marker; test_bug.py needs --taskwatch
    result = run(tw, "test_aiohttp_app.py")
    assert result.parseoutcomes() == {"passed": 3}, result.stdout.str()
    result.stdout.fnmatch_lines(["taskwatch: 3 tests watched, no findings"])
    result = run(tw, "--taskwatch")
    text = result.stdout.str()
    assert failed(result) == {"test_create_order"}, text
    assert len(passed(result)) == 3, text
    assert ("[unretrieved-exception] Task 'Task-" in text
            and f"test_bug.py:{line_of(AIOHTTP_BUG, 'FIRE-AND-FORGET')} in create_order" in text), text
    assert "ConnectionError: mail server down (order 1)" in text


def test_aiohttp_example_app_runs_under_taskwatch(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    output, report = serve_and_stop(INTEGRATIONS / "aiohttp" / "aiohttp_app.py", tmp_path)
    assert "taskwatch: 0 finding(s) at exit" in output
    assert report["findings"] == [] and report["stats"]["tasks_created"] >= 3


# -- Starlette / uvicorn --------------------------------------------------------------------------

STARLETTE_BUG = '''
import asyncio

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

try:
    import httpx2 as httpx
except ModuleNotFoundError:
    import httpx


async def refresh_cache(key):
    await asyncio.sleep(30)


async def read(request):
    asyncio.create_task(refresh_cache(request.path_params["key"]))  # NOT-AWAITED-TASK
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/items/{key}", read)])


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_read():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/items/a")).json() == {"ok": True}
'''


def test_starlette_example_tests_pass_and_a_handler_bug_fails(tw: pytest.Pytester) -> None:
    pytest.importorskip("starlette")
    if importlib.util.find_spec("httpx2") is None:
        pytest.importorskip("httpx")
    copy_example(tw, "starlette")
    tw.makepyfile(test_bug=STARLETTE_BUG)
    result = run(tw, "test_starlette_app.py", "-W", "ignore::DeprecationWarning")
    assert result.parseoutcomes() == {"passed": 3}, result.stdout.str()
    result.stdout.fnmatch_lines(["taskwatch: 3 tests watched, no findings"])
    result = run(tw, "--taskwatch", "-W", "ignore::DeprecationWarning")
    text = result.stdout.str()
    assert failed(result) == {"test_read"}, text
    assert len(passed(result)) == 3, text
    assert ("[leaked-task]" in text
            and f"test_bug.py:{line_of(STARLETTE_BUG, 'NOT-AWAITED-TASK')} in read" in text), text


def test_starlette_example_app_runs_under_uvicorn_and_taskwatch(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    output, report = serve_and_stop(INTEGRATIONS / "starlette" / "starlette_app.py", tmp_path)
    assert "taskwatch: 0 finding(s) at exit" in output
    assert "Application shutdown complete" in output
    assert report["findings"] == [] and report["stats"]["tasks_created"] >= 3
