"""A Starlette service under uvicorn whose lifespan starts a metrics flusher and never stops it: the
flusher is still pending when the application's shutdown is complete; stopped with SIGTERM.

requires: starlette uvicorn
exit: -15 (uvicorn re-raises SIGTERM after its graceful shutdown)
drive: GET /health, GET /hit, GET /hit, GET /health
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
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


async def flush_metrics(counters: dict) -> None:
    while True:
        await asyncio.sleep(0.05)
        counters["flushes"] += 1  # sent to the metrics backend


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    app.state.counters = {"hits": 0, "flushes": 0}
    app.state.flusher = asyncio.create_task(flush_metrics(app.state.counters))  # BUG: leaked-task
    yield
    print(f"shutdown after {app.state.counters['hits']} hits", flush=True)


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def hit(request: Request) -> Response:
    request.app.state.counters["hits"] += 1
    return PlainTextResponse("counted")


app = Starlette(routes=[Route("/health", health), Route("/hit", hit)], lifespan=lifespan)


def main() -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_level="info")
    config.load()  # import the protocol implementations now, not on the event loop
    server = uvicorn.Server(config)
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(server.serve())
    else:
        asyncio.run(server.serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
