"""A Starlette service under uvicorn with timeout_graceful_shutdown: SIGTERM arrives while a long
request is in flight, uvicorn waits its grace period, then cancels the request (the client gets a
500) and finishes its shutdown; the process dies by the re-raised SIGTERM.

requires: starlette uvicorn
exit: -15 (uvicorn re-raises SIGTERM after its graceful shutdown)
drive: GET /health, &GET /long-export, GET /health
"""

import asyncio
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


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def long_export(request: Request) -> Response:
    print(f"handling {request.url.path}", file=sys.stderr, flush=True)
    chunks = []
    for n in range(100):
        await asyncio.sleep(0.1)  # far longer than the shutdown grace period
        chunks.append(f"row {n}\n")
    return PlainTextResponse("".join(chunks))


app = Starlette(routes=[Route("/health", health), Route("/long-export", long_export)])


def main() -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_level="info",
                            timeout_graceful_shutdown=0.5)
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
