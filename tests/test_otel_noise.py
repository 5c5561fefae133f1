"""OpenTelemetry in a real trace viewer: no noise from a server's own machinery (issue 16).

A library's own tasks that the library cancels on its own close path are not interesting; a span
is never exported while its parent cannot be (the parent still running without a span: the child
waits for it, at most ``_HOLD_S``); the loop's main task does not become a trace (it would be one
span the length of the program, every interesting task of the program under it).
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.trace import StatusCode  # noqa: E402

import taskwatch  # noqa: E402
from taskwatch.otel import _spans as _otel_spans  # noqa: E402

from .conftest import run  # noqa: E402
from .test_otel import assert_no_holes, otel  # noqa: E402,F401


async def _fails():
    await asyncio.sleep(0)
    raise KeyError("gone")


def test_aiohttp_server_connections_export_nothing(otel, loop_kind):  # noqa: F811
    """A real aiohttp server and client on loopback, a new connection per request: aiohttp's
    connection tasks (cancelled by aiohttp when a connection closes, on 3.11) and the server's
    main task (longer than span_threshold) are not exported, while it runs nor at its end. A
    task the handler starts that fails is, and no span lacks its parent at any time."""
    web = pytest.importorskip("aiohttp.web")
    aiohttp = pytest.importorskip("aiohttp")
    otel.install(span_threshold=0.2)
    seen = {}
    started = []

    async def audit():
        await asyncio.sleep(0.01)
        raise ValueError("audit log full")

    async def hello(request):
        if request.query.get("audit"):
            started.append(asyncio.create_task(audit()))
        return web.Response(text="hi")

    async def main():
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        for query in ("", "", "?audit=1", ""):
            async with aiohttp.ClientSession() as session:  # a connection per request, closed
                async with session.get(f"http://127.0.0.1:{port}/{query}") as response:
                    assert await response.text() == "hi"
            await asyncio.sleep(0.05)
        await asyncio.gather(*started, return_exceptions=True)
        await asyncio.sleep(0.3)  # the server ran longer than span_threshold
        seen["running"] = otel.spans()
        await runner.cleanup()

    run(main(), loop_kind)
    running = seen["running"]
    assert_no_holes(running)  # nothing waits for a parent exported only at shutdown
    spans = otel.spans()
    assert [s.name for s in running] == [s.name for s in spans]  # nothing more at shutdown
    (failed,) = [s for s in spans if s.name.endswith(".<locals>.audit")]
    assert failed.status.status_code is StatusCode.ERROR
    # the failed task's own chain of aiohttp tasks (the request's, the connection's) may parent
    # it, exported for it; asyncio's accept task and the main task never are; nothing else is
    chain, span = [], failed
    while span.parent is not None:
        span = next(s for s in spans if s.context.span_id == span.parent.span_id)
        chain.append(span.name)
    assert set(chain) <= {"aiohttp.web_protocol.RequestHandler._handle_request",
                          "aiohttp.web_protocol.RequestHandler.start"}, chain
    assert len(spans) == 1 + len(chain), [s.name for s in spans]


def test_asyncio_accept_task_is_no_parent(otel, loop_kind):  # noqa: F811
    """A task created in a protocol's connection_made: on asyncio that runs in asyncio's own
    accept task, which is not exported as its parent (nor is the main task above it)."""
    otel.install(span_threshold=5.0)
    done = []

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            done.append(asyncio.ensure_future(_fails()))
            transport.close()

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while not done:
            await asyncio.sleep(0.01)
        await asyncio.gather(*done, return_exceptions=True)
        await asyncio.sleep(0.05)
        assert [s.name.rpartition(".")[2] for s in otel.spans()] == ["_fails"]
        writer.close()
        server.close()
        await server.wait_closed()

    run(main(), loop_kind)
    (span,) = otel.spans()
    assert span.parent is None
    assert span.status.status_code is StatusCode.ERROR


def test_a_child_waits_for_its_running_parent(otel, loop_kind):  # noqa: F811
    """A child that ends interesting while its parent task runs on without a span is exported
    when the parent ends, under the parent's span: never before its parent can be."""
    otel.install()
    seen = {}

    async def worker():
        await asyncio.gather(asyncio.create_task(_fails()), return_exceptions=True)
        await asyncio.sleep(0.2)
        seen["while"] = otel.spans()

    async def main():
        await asyncio.create_task(worker())
        seen["after"] = otel.spans()

    run(main(), loop_kind)
    assert seen["while"] == []  # its parent is still running
    names = [s.name.rpartition(".")[2] for s in seen["after"]]
    assert names == ["worker", "_fails"]  # the parent first, its child right after
    worker_span, child = seen["after"]
    assert child.parent.span_id == worker_span.context.span_id
    assert worker_span.parent is None  # the main task is nobody's parent span
    assert worker_span.attributes["taskwatch.task.outcome"] == "finished"
    assert child.status.status_code is StatusCode.ERROR
    assert [s.name for s in otel.spans()] == [s.name for s in seen["after"]]  # not main


def test_a_child_waits_at_most_hold_seconds(otel, loop_kind, monkeypatch):  # noqa: F811
    """A parent that runs on for long: its child does not wait for it beyond _HOLD_S, it goes
    out as a root (still naming its parent task), and the parent, not interesting, is not
    exported at its end."""
    monkeypatch.setattr(_otel_spans, "_HOLD_S", 0.1)
    otel.install(span_threshold=5.0)
    seen = {}

    async def worker():
        await asyncio.gather(asyncio.create_task(_fails()), return_exceptions=True)
        assert otel.spans() == []
        deadline = time.monotonic() + 5.0
        while not otel.spans() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        seen["while"] = otel.spans()

    async def main():
        await asyncio.create_task(worker())

    run(main(), loop_kind)
    (child,) = seen["while"]
    assert child.name.endswith("._fails")
    assert child.parent is None
    assert child.attributes["taskwatch.parent_task.coroutine"].endswith(".worker")
    assert [s.name for s in otel.spans()] == [child.name]


def test_main_task_is_not_a_trace(otel, loop_kind):  # noqa: F811
    """The main task ran longer than span_threshold and was cancelled: no span. Its failing
    child is exported at once, as a root (it does not wait for the main task)."""
    otel.install(span_threshold=0.1)
    seen = {}

    async def main():
        await asyncio.gather(asyncio.create_task(_fails()), return_exceptions=True)
        seen["child"] = otel.spans()
        await asyncio.sleep(0.2)
        asyncio.current_task().cancel()
        await asyncio.sleep(1)

    with pytest.raises(asyncio.CancelledError):
        run(main(), loop_kind)
    (child,) = seen["child"]
    assert child.parent is None
    assert child.attributes["taskwatch.parent_task.coroutine"].endswith(".main")
    assert [s.name for s in otel.spans()] == [child.name]


def test_main_task_that_fails_is_exported(otel, loop_kind):  # noqa: F811
    otel.install()

    async def main():
        await asyncio.sleep(0)
        raise LookupError("config missing")

    with pytest.raises(LookupError):
        run(main(), loop_kind)
    (span,) = otel.spans()
    assert span.name.endswith(".main")
    assert span.status.status_code is StatusCode.ERROR


def test_main_task_in_run_until_complete_is_not_a_trace(otel, loop_kind):  # noqa: F811
    """The same for a loop run by hand: run_until_complete(coroutine)."""
    otel.install(span_threshold=0.05)
    if loop_kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()

    async def main():
        await asyncio.sleep(0.1)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert otel.spans() == []


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout")
def test_a_library_cancel_of_a_program_task_is_still_interesting(otel, loop_kind):  # noqa: F811
    """Only a library's own task cancelled by library code is left out: the program's task
    cut short by a timeout keeps its span and its cancel event."""
    otel.install(span_threshold=5.0)

    async def slow():
        await asyncio.sleep(5)

    async def main():
        task = asyncio.create_task(slow())
        try:
            await asyncio.wait_for(task, 0.05)  # asyncio (library code) cancels the program's task
        except asyncio.TimeoutError:
            pass

    run(main(), loop_kind)
    (span,) = otel.spans()
    assert span.name.endswith(".slow")
    assert span.attributes["taskwatch.task.outcome"] == "cancelled"
    assert [e.name for e in span.events] == ["taskwatch.cancel"]


def test_uninstall_exports_what_waits_for_a_running_parent(otel, loop_kind):  # noqa: F811
    """Uninstalled while the parent still runs: its child that waited for it is not lost."""
    otel.install()
    seen = {}

    async def worker():
        await asyncio.gather(asyncio.create_task(_fails()), return_exceptions=True)
        seen["before"] = otel.spans()
        taskwatch.uninstall()
        await asyncio.sleep(0)

    async def main():
        await asyncio.create_task(worker())

    run(main(), loop_kind)
    assert seen["before"] == []
    (child,) = otel.spans()
    assert child.name.endswith("._fails") and child.parent is None
