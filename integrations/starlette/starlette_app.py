"""A Starlette app served by uvicorn, with taskwatch in its startup (FastAPI: the same, see README).

Run it:

    python integrations/starlette/starlette_app.py --port 8000
    curl localhost:8000/orders/42
    curl localhost:8000/debug/taskwatch      # the JSON report (findings, stats)
    curl localhost:8000/debug/tasks          # the live task tree

Ctrl-C stops it; the exit summary goes to stderr (and to TASKWATCH_REPORT as JSON, if set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import taskwatch

log = logging.getLogger("app")


async def audit_worker(queue: asyncio.Queue[str]) -> None:
    while True:
        entry = await queue.get()
        log.info("audit: %s", entry)
        queue.task_done()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Start the app's background worker; cancel *and await* it at shutdown."""
    app.state.audit = asyncio.Queue()
    app.state.orders = {}
    worker = asyncio.create_task(audit_worker(app.state.audit), name="audit-worker")
    try:
        yield
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def get_order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    order = request.app.state.orders.setdefault(order_id, {"id": order_id, "status": "new"})
    # Background work done right: a queue drained by the worker the lifespan owns (not a
    # fire-and-forget create_task whose errors nobody would see).
    request.app.state.audit.put_nowait(f"read order {order_id}")
    return JSONResponse(order)


async def debug_report(request: Request) -> JSONResponse:
    if not taskwatch.is_installed():
        return JSONResponse({"error": "taskwatch is not installed"}, status_code=503)
    return JSONResponse(json.loads(json.dumps(taskwatch.report(), default=str)))


async def debug_tasks(request: Request) -> PlainTextResponse:
    if not taskwatch.is_installed():
        return PlainTextResponse("taskwatch is not installed", status_code=503)
    return PlainTextResponse(taskwatch.dump())


app = Starlette(
    routes=[
        Route("/orders/{order_id}", get_order),
        Route("/debug/taskwatch", debug_report),
        Route("/debug/tasks", debug_tasks),
    ],
    lifespan=lifespan,
)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Before uvicorn creates its event loop (asyncio or uvloop): every task is watched.
    taskwatch.install(block_threshold=0.2)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        findings = taskwatch.findings()
        print(f"taskwatch: {len(findings)} finding(s) at exit", file=sys.stderr, flush=True)
        path = os.environ.get("TASKWATCH_REPORT")
        if path:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(taskwatch.report(), handle, indent=2, default=str)


if __name__ == "__main__":
    main()
