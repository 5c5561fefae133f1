"""A price refresher whose request task starts a cache-warming child and is then cancelled by a
timeout: the child is not cancelled with it and keeps running on its own.

requires: aiohttp httpx2
"""

import asyncio
import os
import ssl

# httpx imports its transport (httpcore2, anyio's asyncio backend) on the first client and
# request: done at startup instead, not as a step of tens of milliseconds on the event loop
import anyio._backends._asyncio  # noqa: F401
import httpcore2  # noqa: F401
import httpx2 as httpx
from aiohttp import web

# One TLS context for every client (building one per AsyncClient costs ~20 ms of CPU).
TLS = ssl.create_default_context()

async def prices(request: web.Request) -> web.Response:
    await asyncio.sleep(3)  # the pricing engine is overloaded today
    return web.json_response({"EUR": 1.0, "USD": 1.08})


async def warm(request: web.Request) -> web.Response:
    await asyncio.sleep(0.8)
    return web.json_response({"warmed": 40})


async def status(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def warm_cache(client: httpx.AsyncClient) -> int:
    response = await client.get("/warm")
    return response.json()["warmed"]


async def refresh_prices(client: httpx.AsyncClient) -> dict:
    warming = asyncio.create_task(warm_cache(client))  # BUG: orphaned-task
    response = await client.get("/prices")
    await warming
    return response.json()


async def main() -> None:
    app = web.Application()
    app.router.add_get("/prices", prices)
    app.router.add_get("/warm", warm)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30, verify=TLS) as client:
            refresh = asyncio.create_task(refresh_prices(client))
            try:
                async with asyncio.timeout(0.3):
                    print("prices:", await refresh)
            except TimeoutError:
                print("prices: refresh timed out, keeping the old ones")
            for _ in range(4):  # the rest of the job, while the warming finishes on its own
                response = await client.get("/status")
                print("status:", response.json())
                await asyncio.sleep(0.4)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
