"""An aiohttp service that notifies a webhook by calling session.post() without awaiting it (meant
as fire and forget): the request coroutine is created and dropped, and the webhook never hears.

requires: aiohttp
"""

import asyncio
import os

import aiohttp
from aiohttp import web

RECEIVED = web.AppKey("received", list)
SESSION = web.AppKey("session", aiohttp.ClientSession)
WEBHOOK = web.AppKey("webhook", str)


async def webhook(request: web.Request) -> web.Response:
    request.app[RECEIVED].append(await request.json())
    return web.Response(status=204)


async def signup(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    request.app[SESSION].post(request.app[WEBHOOK], json={"signup": user})  # BUG: never-awaited
    return web.json_response({"welcome": user}, status=201)


async def main() -> None:
    app = web.Application()
    app[RECEIVED] = []
    app.router.add_post("/signup/{user}", signup)
    app.router.add_post("/hooks/signup", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base_url = f"http://{host}:{port}"
    app[WEBHOOK] = base_url + "/hooks/signup"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            app[SESSION] = session
            async with session.post(base_url + "/signup/ada") as response:
                print(response.status, await response.json())
            await asyncio.sleep(0.1)
            print("webhook received:", app[RECEIVED])
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
