"""A small aiohttp JSON API on loopback, used concurrently by an aiohttp client and an httpx client.

requires: aiohttp httpx2
"""

import asyncio
import os
import ssl

import aiohttp
# httpx imports its transport (httpcore2, anyio's asyncio backend) on the first client and
# request: done at startup instead, not as a step of tens of milliseconds on the event loop
import anyio._backends._asyncio  # noqa: F401
import httpcore2  # noqa: F401
import httpx2 as httpx
from aiohttp import web

# One TLS context for every client (building one per AsyncClient costs ~20 ms of CPU).
TLS = ssl.create_default_context()

CATALOG = {i: {"id": i, "name": f"item-{i}", "price": 3 * i} for i in range(1, 21)}
routes = web.RouteTableDef()


@routes.get("/items/{item_id}")
async def get_item(request: web.Request) -> web.Response:
    item_id = int(request.match_info["item_id"])
    await asyncio.sleep(0.01)  # the database round-trip
    if item_id not in CATALOG:
        raise web.HTTPNotFound(text=f"no item {item_id}")
    return web.json_response(CATALOG[item_id])


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    order = await request.json()
    total = sum(CATALOG[i]["price"] for i in order["items"])
    return web.json_response({"items": order["items"], "total": total}, status=201)


@routes.get("/export")
async def export(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/csv"})
    await response.prepare(request)
    for item in CATALOG.values():
        await response.write(f"{item['id']},{item['name']},{item['price']}\n".encode())
        await asyncio.sleep(0)
    await response.write_eof()
    return response


async def start_api() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def aiohttp_client(base_url: str) -> list[str]:
    lines = []
    timeout = aiohttp.ClientTimeout(total=30, sock_connect=10)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:

        async def fetch(item_id: int) -> dict:
            async with session.get(f"/items/{item_id}") as response:
                response.raise_for_status()
                return await response.json()

        items = await asyncio.gather(*(fetch(i) for i in range(1, 11)))
        lines.append("aiohttp items: " + ",".join(item["name"] for item in items))
        async with session.post("/orders", json={"items": [1, 2, 3]}) as response:
            lines.append(f"aiohttp order: {response.status} {await response.json()}")
        async with session.get("/items/404") as response:
            lines.append(f"aiohttp missing: {response.status} {await response.text()}")
        async with session.get("/export") as response:
            rows = [line async for line in response.content]
            lines.append(f"aiohttp export: {len(rows)} rows")
    return lines


async def httpx_client(base_url: str) -> list[str]:
    lines = []
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0), verify=TLS) as client:
        async with asyncio.TaskGroup() as group:
            requests = [group.create_task(client.get(f"/items/{i}")) for i in range(11, 21)]
        names = [r.raise_for_status().json()["name"] for r in (t.result() for t in requests)]
        lines.append("httpx items: " + ",".join(names))
        async with asyncio.timeout(20):
            response = await client.post("/orders", json={"items": [4, 5]})
        lines.append(f"httpx order: {response.status_code} {response.json()}")
        response = await asyncio.wait_for(client.get("/items/0"), timeout=20)
        lines.append(f"httpx missing: {response.status_code} {response.text}")
        async with client.stream("GET", "/export") as response:
            rows = [line async for line in response.aiter_lines() if line]
        lines.append(f"httpx export: {len(rows)} rows")
    return lines


async def main() -> None:
    runner, base_url = await start_api()
    try:
        results = await asyncio.gather(aiohttp_client(base_url), httpx_client(base_url))
    finally:
        await runner.cleanup()
    for lines in results:
        print("\n".join(lines))


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
