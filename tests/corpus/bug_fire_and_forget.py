"""An aiohttp order service whose handler fires a notification task and forgets it: the
notification for one order fails and its exception is never retrieved.

requires: aiohttp
"""

import asyncio
import itertools
import os

import aiohttp
from aiohttp import web

WAREHOUSES = {item: f"warehouse-{item % 3}" for item in range(1, 13)}  # nobody stocks item 13
ORDER_IDS = itertools.count(1)
routes = web.RouteTableDef()


async def notify_warehouse(order_id: int, items: list[int]) -> None:
    await asyncio.sleep(0.01)  # the warehouse API call
    for item in items:
        if item not in WAREHOUSES:
            raise LookupError(f"order {order_id}: no warehouse stocks item {item}")


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    order = await request.json()
    order_id = next(ORDER_IDS)
    asyncio.create_task(notify_warehouse(order_id, order["items"]))  # BUG: unretrieved-exception
    return web.json_response({"order": order_id, "items": order["items"]}, status=201)


async def main() -> None:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}",
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            for items in ([1, 2], [3], [13, 4], [5, 6, 7]):
                async with session.post("/orders", json={"items": items}) as response:
                    print(response.status, await response.json())
        await asyncio.sleep(0.2)  # the notifications are sent meanwhile
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
