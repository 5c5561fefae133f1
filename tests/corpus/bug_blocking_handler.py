"""A Starlette service under uvicorn whose async export endpoint calls a blocking function, which
holds the event loop for every other request; stopped with SIGTERM.

requires: starlette uvicorn
exit: -15 (uvicorn re-raises SIGTERM after its graceful shutdown)
drive: GET /health, GET /items/1, GET /export, GET /items/2, GET /health
"""

import asyncio
import os
import sys
import time

# Starlette runs on anyio, which imports its asyncio backend on first use: done at startup
# instead, not as a step of tens of milliseconds on the event loop
import anyio._backends._asyncio  # noqa: F401
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

ITEMS = {i: {"id": i, "name": f"item-{i}"} for i in range(1, 10)}


def render_csv() -> str:
    time.sleep(0.6)  # BUG: blocked-loop (the legacy report library is synchronous)
    return "".join(f"{item['id']},{item['name']}\n" for item in ITEMS.values())


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def get_item(request: Request) -> Response:
    await asyncio.sleep(0.01)
    return JSONResponse(ITEMS[request.path_params["item_id"]])


async def export(request: Request) -> Response:
    return PlainTextResponse(render_csv(), media_type="text/csv")


app = Starlette(routes=[
    Route("/health", health),
    Route("/items/{item_id:int}", get_item),
    Route("/export", export),
])


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
