"""One real-framework server for ``python -m benchmarks.servers``: run in its own process.

``python -m benchmarks._servers_app APP MODE --port P`` serves on 127.0.0.1 (loopback only) with
uvloop, and prints ``READY <port>`` once it accepts connections. It serves until SIGTERM/SIGINT.

APP:
  aiohttp    an ``aiohttp.web`` application (AppRunner + TCPSite).
  starlette  a Starlette application under uvicorn (httptools when installed, else h11).

Both apps answer ``GET /item/{n}`` the same way: the handler builds a small dict (a little work),
spawns two tasks with ``asyncio.create_task`` (one awaits ``asyncio.sleep(0)`` first, one returns at
once), gathers them and returns a JSON body of about 200 bytes. ``GET /_stats`` answers JSON:
the process's garbage-collector counts, requests served and, with taskwatch, its task counter
(the proof that taskwatch was active); the driver reads it before and after its measured window.

MODE (what is switched on before the loop exists):
  plain, plain2        nothing (plain2 is the same server again: the noise control)
  taskwatch            ``taskwatch.install()``
  nowatchdog           ``taskwatch.install(watchdog=False)``
  tw-nogc              ``taskwatch.install()``, then taskwatch's gc callback taken off ``gc.callbacks``
  tw-python            ``taskwatch.install(speedups=False)`` (the pure-Python hot path)
  recorder             ``taskwatch.install(flight_recorder=<a temporary folder>)``: the timeline's
                       ring on (each task end recorded), dumps only on blocks of 1 s
  cpu                  ``taskwatch.install(cpu_sampling=0.001)``: CPU shares sampled every 1 ms
                       (Python 3.13+)
  factory-pass         a pass-through task factory: ``asyncio.Task(coro, loop=loop, **kw)``
  factory-subclass     a factory building a C Task subclass with ``__slots__`` (no overrides)
  factory-ctx          a factory that copies the context, sets one ContextVar in it, builds a Task
                       (the per-task work of a lineage ContextVar, nothing else)
  factory-done         a pass-through factory that keeps each task in a dict until a done callback
                       (the dict's own ``pop``, in a fixed context) takes it out: the least a design
                       without a Task subclass needs to see every task's end
  thread-50hz          no taskwatch; a daemon thread that takes the GIL 50 times a second and reads
                       ``sys._current_frames()`` (the floor of any GIL-taking watchdog thread)
The extra modes exist to split taskwatch's cost (``--modes`` of the driver).

A mode may end in ``@DIR`` (taskwatch is then imported from DIR: a patched copy measured against
the installed one in the same run) and in ``#NAME=VALUE`` (an environment variable for that
server only), e.g. ``nowatchdog@/tmp/twcopy#TWX=noctx``; the driver applies both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import gc
import json
import os
import signal
import sys
import threading
import time
from typing import Any

HOST = "127.0.0.1"  # loopback only, by design
_requests = 0


# -- the request's work -----------------------------------------------------------------------


async def _lookup(n: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"id": n, "name": f"item-{n}", "tags": ["a", "b", "c"][: n % 3 + 1]}


async def _price(n: int) -> float:
    return round(n * 1.07, 2)


async def work(n: int) -> bytes:
    """What both handlers do: a little work and two tasks per request."""
    global _requests
    meta = {"served_by": "bench", "version": 3, "query": n, "limits": [n % 7, n % 11, n % 13]}
    a = asyncio.create_task(_lookup(n))
    b = asyncio.create_task(_price(n))
    item, price = await asyncio.gather(a, b)
    item["price"] = price
    item["meta"] = meta
    _requests += 1
    return json.dumps(item).encode()


def stats() -> bytes:
    doc: dict[str, Any] = {"requests": _requests, "gc": [g["collections"] for g in gc.get_stats()],
                           "pid": os.getpid(), "threads": threading.active_count(),
                           "python": sys.version.split()[0]}
    try:
        import taskwatch

        if taskwatch.is_installed():
            report = taskwatch.report()
            doc["tasks_created"] = report["stats"]["tasks_created"]
            doc["cpu_samples"] = report.get("cpu", {}).get("samples")
    except ImportError:
        pass
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    doc["loop"] = type(loop).__module__ + "." + type(loop).__name__
    doc["factory"] = None if factory is None else getattr(factory, "__qualname__", repr(factory))
    return json.dumps(doc).encode()


# -- the two apps -------------------------------------------------------------------------------


def aiohttp_app() -> Any:
    from aiohttp import web

    async def item(request: web.Request) -> web.Response:
        body = await work(int(request.match_info["n"]))
        return web.Response(body=body, content_type="application/json")

    async def stats_view(request: web.Request) -> web.Response:
        return web.Response(body=stats(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/item/{n}", item)
    app.router.add_get("/_stats", stats_view)
    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def item(request: Any) -> Response:
        body = await work(int(request.path_params["n"]))
        return Response(body, media_type="application/json")

    async def stats_view(request: Any) -> Response:
        return Response(stats(), media_type="application/json")

    return Starlette(routes=[Route("/item/{n:int}", item), Route("/_stats", stats_view)])


async def serve_aiohttp(app: Any, port: int, ready: Any) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    ready(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def serve_starlette(app: Any, port: int, ready: Any) -> None:
    import uvicorn

    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    config = uvicorn.Config(app, host=HOST, port=port, loop="none", http=http,
                            lifespan="off", access_log=False, log_level="warning", backlog=1024)
    class Server(uvicorn.Server):
        def capture_signals(self) -> Any:  # ours below: a clean exit (profile dump), no re-raise
            return contextlib.nullcontext()

    server = Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, setattr, server, "should_exit", True)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    ready(server.servers[0].sockets[0].getsockname()[1], http)
    await task


# -- modes ---------------------------------------------------------------------------------------

_VAR: contextvars.ContextVar[Any] = contextvars.ContextVar("bench_lineage")


def switch_on(mode: str) -> Any:
    """Switch the mode on before any loop exists; returns a per-loop setup (or None)."""
    if mode in ("plain", "plain2"):
        return None
    if mode in ("taskwatch", "nowatchdog", "tw-nogc", "tw-python", "recorder", "cpu"):
        import taskwatch

        opts: dict[str, Any] = {}
        if mode == "recorder":
            import tempfile

            opts["flight_recorder"] = tempfile.mkdtemp(prefix="taskwatch-bench-")
        if mode == "nowatchdog":
            opts["watchdog"] = False
        if mode == "cpu":  # BENCH_CPU_INTERVAL (seconds) for another interval
            opts["cpu_sampling"] = float(os.environ.get("BENCH_CPU_INTERVAL", "0.001"))
        if mode == "tw-python":
            opts["speedups"] = False
        taskwatch.install(**opts)
        if mode == "tw-nogc":
            from taskwatch._watchdog import _watch as _watchdog

            if _watchdog._gc_callback in gc.callbacks:
                gc.callbacks.remove(_watchdog._gc_callback)
        return None
    if mode == "factory-pass":
        def factory(loop: Any, coro: Any, **kw: Any) -> Any:
            if kw.get("eager_start", 0) is None:
                del kw["eager_start"]
            return asyncio.Task(coro, loop=loop, **kw)
        return factory
    if mode == "factory-subclass":
        class Task(asyncio.Task):  # type: ignore[misc]
            __slots__ = ("_rec", "_rel")

        def factory(loop: Any, coro: Any, **kw: Any) -> Any:
            if kw.get("eager_start", 0) is None:
                del kw["eager_start"]
            return Task(coro, loop=loop, **kw)
        return factory
    if mode == "factory-done":
        live: dict[Any, None] = {}
        pop, done_ctx = live.pop, contextvars.Context()

        def factory(loop: Any, coro: Any, **kw: Any) -> Any:
            if kw.get("eager_start", 0) is None:
                del kw["eager_start"]
            task = asyncio.Task(coro, loop=loop, **kw)
            if not task.done():  # an eager task may be done already
                live[task] = None
                task.add_done_callback(pop, context=done_ctx)
            return task
        return factory
    if mode == "factory-ctx":
        copy_context, set_var = contextvars.copy_context, _VAR.set

        def factory(loop: Any, coro: Any, context: Any = None, **kw: Any) -> Any:
            if kw.get("eager_start", 0) is None:
                del kw["eager_start"]
            if context is None:
                context = copy_context()
                context.run(set_var, object())
            return asyncio.Task(coro, loop=loop, context=context, **kw)
        return factory
    if mode == "thread-50hz":
        def look() -> None:
            while True:
                time.sleep(0.02)
                frames = sys._current_frames()
                del frames
        threading.Thread(target=look, daemon=True, name="bench-50hz").start()
        return None
    raise SystemExit(f"unknown mode {mode!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("app", choices=("aiohttp", "starlette"))
    ap.add_argument("mode")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    source = os.environ.get("BENCH_TASKWATCH_FROM")
    if source:  # a patched copy of taskwatch, ahead of the checkout on sys.path
        sys.path.insert(0, source)
    factory = switch_on(args.mode)
    if source:
        import taskwatch

        if not taskwatch.__file__.startswith(os.path.abspath(source)):
            raise SystemExit(f"taskwatch came from {taskwatch.__file__}, not {source}")
    import uvloop

    # imports and app construction before the loop runs (not a "blocked loop" at start-up)
    app = aiohttp_app() if args.app == "aiohttp" else starlette_app()
    if args.app == "starlette":
        import uvicorn  # noqa: F401
        import uvicorn.protocols.http.h11_impl  # noqa: F401
        try:
            import uvicorn.protocols.http.httptools_impl  # noqa: F401
        except ImportError:
            pass
    profile_to = os.environ.get("BENCH_PROFILE")

    def ready(port: int, http: str = "") -> None:
        print(f"READY {port} {http}".strip(), flush=True)

    async def main_coro() -> None:
        if factory is not None:
            asyncio.get_running_loop().set_task_factory(factory)
        if args.app == "aiohttp":
            await serve_aiohttp(app, args.port, ready)
        else:
            await serve_starlette(app, args.port, ready)

    profiler = None
    if profile_to:  # the driver's --profile: call counts of the request path (distorts times)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main_coro())
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)


if __name__ == "__main__":
    main()
