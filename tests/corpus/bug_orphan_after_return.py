"""An aiohttp handler that starts a search-index refresh in a task and returns without awaiting or
keeping it: the refresh, a slow call to the indexer, outlives the request that started it.

requires: aiohttp
"""

import asyncio
import os

import aiohttp
from aiohttp import web

CLIENT = web.AppKey("client", dict)  # the outgoing session, opened once the app runs
INDEXED = web.AppKey("indexed", list)


async def reindex(request: web.Request) -> web.Response:
    await asyncio.sleep(1.5)  # the indexer is slow
    request.app[INDEXED].append(request.match_info["doc"])
    return web.Response(status=204)


async def refresh_index(session: aiohttp.ClientSession, base_url: str, doc: str) -> None:
    async with session.post(f"{base_url}/index/{doc}") as response:
        response.raise_for_status()


async def save_document(request: web.Request) -> web.Response:
    doc = request.match_info["doc"]
    base_url = f"{request.scheme}://{request.host}"
    asyncio.create_task(refresh_index(request.app[CLIENT]["session"], base_url, doc))  # BUG: orphaned-task
    return web.json_response({"saved": doc}, status=201)


async def main() -> None:
    app = web.Application()
    app[INDEXED] = []
    app[CLIENT] = {}
    app.router.add_put("/docs/{doc}", save_document)
    app.router.add_post("/index/{doc}", reindex)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            app[CLIENT]["session"] = session
            async with session.put(f"http://{host}:{port}/docs/readme") as response:
                print(response.status, await response.json())
            for _ in range(50):  # the index catches up a little later
                if app[INDEXED]:
                    break
                await asyncio.sleep(0.1)
            print("indexed:", app[INDEXED])
            await asyncio.sleep(0.1)  # the refresh has read its response
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
