"""An aiohttp service run by web.run_app() and stopped with SIGTERM while a slow request is still
being served: aiohttp's graceful shutdown lets the request finish (within shutdown_timeout) and
the client gets its whole answer; the process then exits with status 0.

requires: aiohttp
drive: GET /health, &GET /report, GET /health
"""

import asyncio
import os
import socket
import sys

from aiohttp import web


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def report(request: web.Request) -> web.Response:
    print(f"handling {request.path}", file=sys.stderr, flush=True)
    rows = []
    for month in range(1, 13):
        await asyncio.sleep(0.15)  # one query per month
        rows.append(f"2026-{month:02d},{month * 100}")
    return web.Response(text="\n".join(rows), content_type="text/csv")


async def on_shutdown(app: web.Application) -> None:
    print("shutting down", flush=True)


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/report", report)
    app.on_shutdown.append(on_shutdown)
    loop = None
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    web.run_app(app, sock=listener, print=None, access_log=None, shutdown_timeout=30, loop=loop)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
