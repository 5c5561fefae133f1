"""A Starlette service run by uvicorn in-process, stopped with SIGTERM (as Docker or systemd do).

A lifespan starts an audit worker fed by a queue and stops it on shutdown; endpoints are async and
sync (threadpool); a background task runs after a response; a slow request is still in flight at
SIGTERM, and uvicorn lets it finish before shutting down.

requires: starlette uvicorn
exit: -15 (uvicorn re-raises SIGTERM after its graceful shutdown)
drive: GET /health, GET /items/1, GET /items/2, GET /items/3, GET /items/99, POST /audit,
       POST /audit, POST /audit, GET /report, GET /export, &GET /summary, GET /health
"""

import asyncio
import contextlib
import os
import sys

# Starlette runs on anyio, which imports its asyncio backend on first use: done at startup
# instead, not as a step of tens of milliseconds on the event loop
import anyio._backends._asyncio  # noqa: F401
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

ITEMS = {i: {"id": i, "name": f"item-{i}"} for i in range(1, 10)}


async def audit_worker(queue: asyncio.Queue, audited: list) -> None:
    while True:
        event = await queue.get()
        await asyncio.sleep(0.005)  # write it to the audit store
        audited.append(event)
        queue.task_done()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.queue = asyncio.Queue()
    app.state.audited = []
    worker = asyncio.create_task(audit_worker(app.state.queue, app.state.audited), name="audit")
    try:
        yield
    finally:
        await app.state.queue.join()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        print(f"shutdown: audited {len(app.state.audited)} events", flush=True)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def get_item(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    await asyncio.sleep(0.01)
    if item_id not in ITEMS:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(ITEMS[item_id])


async def post_audit(request: Request) -> Response:
    queue = request.app.state.queue
    return JSONResponse({"queued": True}, status_code=202,
                        background=BackgroundTask(queue.put, {"path": request.url.path}))


def report(request: Request) -> Response:  # sync: starlette runs it in its threadpool
    return JSONResponse({"items": len(ITEMS)})


def render_csv() -> str:
    return "".join(f"{item['id']},{item['name']}\n" for item in ITEMS.values())


async def summary(request: Request) -> Response:
    print(f"handling {request.url.path}", file=sys.stderr, flush=True)
    totals = {}
    for item_id in ITEMS:
        await asyncio.sleep(0.2)  # one aggregate query per item
        totals[item_id] = item_id * 10
    return JSONResponse({"total": sum(totals.values())})


async def export(request: Request) -> Response:
    body = await asyncio.to_thread(render_csv)
    return PlainTextResponse(body, media_type="text/csv")


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/items/{item_id:int}", get_item),
        Route("/audit", post_audit, methods=["POST"]),
        Route("/report", report),
        Route("/export", export),
        Route("/summary", summary),
    ],
    lifespan=lifespan,
)


def main() -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_level="info")
    config.load()  # import the protocol implementations now, not on the event loop
    server = uvicorn.Server(config)
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())
    print("stopped", flush=True)  # not reached: uvicorn re-raises SIGTERM after a clean shutdown
    sys.exit(0)


if __name__ == "__main__":
    main()
