"""httpx under anyio task groups against an aiohttp service: a pool of two connections shared by
many concurrent requests, a cancel scope expiring in the middle of requests, a pool timeout that
expires and is handled, a failing request that cancels its siblings.

requires: anyio httpx2 aiohttp
"""

import asyncio
import os
import ssl

import anyio
# Imported at startup rather than on the event loop by the first request.
import httpcore2  # noqa: F401
import httpx2 as httpx
from aiohttp import web

TLS = ssl.create_default_context()


async def item(request: web.Request) -> web.Response:
    delay = float(request.query.get("delay", "0.02"))
    await asyncio.sleep(delay)
    number = int(request.match_info["number"])
    if number == 13:
        return web.json_response({"error": "unlucky"}, status=500)
    return web.json_response({"number": number, "square": number * number})


async def start_service() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/items/{number}", item)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def fetch_square(client: httpx.AsyncClient, number: int, squares: dict,
                       delay: float = 0.02) -> None:
    response = await client.get(f"/items/{number}", params={"delay": delay})
    squares[number] = response.raise_for_status().json()["square"]


async def main() -> None:
    runner, base_url = await start_service()
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    try:
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30,
                                     verify=TLS) as client:
            squares: dict = {}
            async with anyio.create_task_group() as group:
                for number in range(1, 13):
                    group.start_soon(fetch_square, client, number, squares)
            print("pooled:", [squares[n] for n in sorted(squares)])

            late: dict = {}
            with anyio.move_on_after(0.3) as scope:  # both requests are cancelled mid-flight
                async with anyio.create_task_group() as group:
                    for number in (21, 22):
                        group.start_soon(fetch_square, client, number, late, 10)
            print("moved on:", scope.cancelled_caught, sorted(late))

            squares = {}
            async with anyio.create_task_group() as group:
                for number in (30, 31):
                    group.start_soon(fetch_square, client, number, squares)
            print("pool usable again:", sorted(squares))

            try:
                async with anyio.create_task_group() as group:
                    for number in (12, 13, 14):
                        delay = 0.05 if number == 13 else 5
                        group.start_soon(fetch_square, client, number, {}, delay)
            except* httpx.HTTPStatusError as errors:
                print("failed:", [e.response.status_code for e in errors.exceptions])

        async with httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(max_connections=1),
                                     timeout=httpx.Timeout(30, pool=0.2), verify=TLS) as client:
            outcome: dict = {}

            async def waits_for_pool() -> None:
                await anyio.sleep(0.05)  # the other request holds the only connection
                try:
                    await client.get("/items/2")
                    outcome["second"] = "served"
                except httpx.PoolTimeout:
                    outcome["second"] = "pool timeout"

            async with anyio.create_task_group() as group:
                group.start_soon(fetch_square, client, 1, outcome, 0.6)
                group.start_soon(waits_for_pool)
            print("single connection:", outcome)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    anyio.run(main, backend="asyncio",
              backend_options={"use_uvloop": os.environ.get("CORPUS_LOOP") == "uvloop"})
