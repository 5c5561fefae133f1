"""An aiohttp app with taskwatch in its startup: findings in the log, a live report on /debug.

Run it:

    python integrations/aiohttp/aiohttp_app.py --port 8080
    curl localhost:8080/orders/42
    curl localhost:8080/debug/taskwatch      # the JSON report (findings, stats)
    curl localhost:8080/debug/tasks          # the live task tree

Ctrl-C stops it; the exit summary goes to stderr (and to TASKWATCH_REPORT as JSON, if set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator

from aiohttp import web

import taskwatch

ORDERS = web.AppKey("orders", dict)
AUDIT = web.AppKey("audit", asyncio.Queue)


async def get_order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    orders = request.app[ORDERS]
    order = orders.setdefault(order_id, {"id": order_id, "status": "new"})
    # Background work done right: a queue drained by one long-lived worker the app owns
    # (not a fire-and-forget create_task whose errors nobody would see).
    request.app[AUDIT].put_nowait(f"read order {order_id}")
    await asyncio.sleep(0)
    return web.json_response(order)


async def debug_report(request: web.Request) -> web.Response:
    if not taskwatch.is_installed():
        return web.json_response({"error": "taskwatch is not installed"}, status=503)
    return web.json_response(taskwatch.report())


async def debug_tasks(request: web.Request) -> web.Response:
    if not taskwatch.is_installed():
        return web.Response(text="taskwatch is not installed", status=503)
    return web.Response(text=taskwatch.dump())


async def audit_worker(queue: asyncio.Queue[str]) -> None:
    log = logging.getLogger("app.audit")
    while True:
        entry = await queue.get()
        log.info("audit: %s", entry)
        queue.task_done()


async def background(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: start the worker with the app, cancel *and await* it on shutdown."""
    worker = asyncio.create_task(audit_worker(app[AUDIT]), name="audit-worker")
    yield
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


def make_app() -> web.Application:
    app = web.Application()
    app[ORDERS] = {}
    app[AUDIT] = asyncio.Queue()
    app.cleanup_ctx.append(background)
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_get("/debug/taskwatch", debug_report)
    app.router.add_get("/debug/tasks", debug_tasks)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Before the event loop exists, so every task of the app is watched. Findings are logged to
    # the "taskwatch" logger as they happen; options also come from TASKWATCH_* variables.
    taskwatch.install(block_threshold=0.2)
    try:
        web.run_app(make_app(), host=args.host, port=args.port, print=lambda *a: print(*a, flush=True))
    finally:
        findings = taskwatch.findings()
        print(f"taskwatch: {len(findings)} finding(s) at exit", file=sys.stderr, flush=True)
        path = os.environ.get("TASKWATCH_REPORT")
        if path:
            import json

            with open(path, "w", encoding="utf-8") as handle:
                json.dump(taskwatch.report(), handle, indent=2, default=str)


if __name__ == "__main__":
    main()
