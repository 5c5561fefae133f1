"""An aiohttp service run the usual way, by web.run_app(), which turns SIGTERM into a graceful
exit (status 0): a background refresher started on startup and cancelled on cleanup, a cleanup
context holding a shared client session, handlers that call out through that session.

requires: aiohttp
drive: GET /health, GET /rates, GET /rates, GET /convert?amount=10, GET /convert?amount=x,
       GET /missing
"""

import asyncio
import contextlib
import os
import socket
import sys

import aiohttp
from aiohttp import web

RATES = web.AppKey("rates", dict)
REFRESHER = web.AppKey("refresher", asyncio.Task)
SESSION = web.AppKey("session", aiohttp.ClientSession)
PORT = web.AppKey("port", int)


async def refresh_rates(app: web.Application) -> None:
    while True:
        app[RATES]["EUR"] = 1.0  # fetched from the rates provider
        app[RATES]["USD"] = 1.08
        await asyncio.sleep(0.05)


async def start_refresher(app: web.Application) -> None:
    app[RATES] = {}
    app[REFRESHER] = asyncio.create_task(refresh_rates(app))


async def stop_refresher(app: web.Application) -> None:
    app[REFRESHER].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await app[REFRESHER]
    print("refresher stopped", flush=True)


async def client_session(app: web.Application):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        app[SESSION] = session
        yield
    print("client session closed", flush=True)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def rates(request: web.Request) -> web.Response:
    return web.json_response(request.app[RATES])


async def convert(request: web.Request) -> web.Response:
    try:
        amount = float(request.query["amount"])
    except ValueError:
        raise web.HTTPBadRequest(text="amount must be a number")
    # The rates come from this service's own /rates endpoint, as they would from a neighbour.
    url = f"http://127.0.0.1:{request.app[PORT]}/rates"
    async with request.app[SESSION].get(url) as response:
        table = await response.json()
    return web.json_response({"USD": round(amount * table["USD"], 2)})


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    app = web.Application()
    app[PORT] = listener.getsockname()[1]
    app.on_startup.append(start_refresher)
    app.on_cleanup.append(stop_refresher)
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/health", health)
    app.router.add_get("/rates", rates)
    app.router.add_get("/convert", convert)
    loop = None
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    print(f"listening on http://127.0.0.1:{app[PORT]}", file=sys.stderr, flush=True)
    web.run_app(app, sock=listener, print=None, access_log=None, loop=loop)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
