"""A client that retries a busy service with backoff, but calls asyncio.sleep() without await: the
backoff never happens (the coroutine is created and dropped).

requires: aiohttp
"""

import asyncio
import os

import aiohttp
from aiohttp import web

CALLS = web.AppKey("calls", list)


async def inventory(request: web.Request) -> web.Response:
    request.app[CALLS].append(request.path)
    if len(request.app[CALLS]) == 1:
        return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
    return web.json_response({"bolts": 100, "nuts": 40})


async def get_with_retries(session: aiohttp.ClientSession, path: str, attempts: int = 4) -> dict:
    delay = 0.1
    for attempt in range(1, attempts + 1):
        async with session.get(path) as response:
            if response.status != 503:
                response.raise_for_status()
                return await response.json()
        print(f"attempt {attempt}: busy, backing off")
        asyncio.sleep(delay)  # BUG: never-awaited
        delay *= 2
    raise RuntimeError(f"{path} stayed busy")


async def main() -> None:
    app = web.Application()
    app[CALLS] = []
    app.router.add_get("/inventory", inventory)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}",
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            print("inventory:", await get_with_retries(session, "/inventory"))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
