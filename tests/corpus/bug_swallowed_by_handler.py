"""An aiohttp long-poll handler that catches CancelledError and answers anyway: when the client
gives up, aiohttp cancels the handler (handler_cancellation=True), and the handler swallows it.

requires: aiohttp
"""

import asyncio
import os

import aiohttp
from aiohttp import web

NEWS = web.AppKey("news", asyncio.Event)
POLLS = web.AppKey("polls", list)


async def long_poll(request: web.Request) -> web.Response:
    try:
        await request.app[NEWS].wait()
        return web.json_response({"news": True})
    except asyncio.CancelledError:  # BUG: swallowed-cancel
        request.app[POLLS].append("poll abandoned")
        return web.json_response({"news": False})


async def main() -> None:
    app = web.Application()
    app[NEWS] = asyncio.Event()
    app[POLLS] = []
    app.router.add_get("/poll", long_poll)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
            try:
                async with session.get(f"http://{host}:{port}/poll") as response:
                    print(await response.json())
            except asyncio.TimeoutError:
                print("no news within 0.3 s")
        for _ in range(500):
            if app[POLLS]:
                break
            await asyncio.sleep(0.01)
        print("server:", app[POLLS])
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
