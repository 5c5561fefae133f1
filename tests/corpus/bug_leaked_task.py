"""A catalogue crawler over aiohttp that starts a progress reporter and never stops it: the
reporter is still running when the main coroutine returns.

requires: aiohttp
"""

import asyncio
import os
import sys

import aiohttp
from aiohttp import web


async def page(request: web.Request) -> web.Response:
    number = int(request.match_info["number"])
    await asyncio.sleep(0.01)
    links = [n for n in (2 * number, 2 * number + 1) if n < 16]
    return web.json_response({"page": number, "links": links})


async def report_progress(done: list) -> None:
    while True:
        await asyncio.sleep(0.05)
        print(f"progress: {len(done)} pages", file=sys.stderr)


async def crawl(session: aiohttp.ClientSession) -> list[int]:
    done: list[int] = []
    reporter = asyncio.create_task(report_progress(done))  # BUG: leaked-task
    frontier = [1]
    while frontier:
        responses = []
        for number in frontier:
            async with session.get(f"/pages/{number}") as response:
                responses.append(await response.json())
        frontier = [link for body in responses for link in body["links"]]
        done.extend(body["page"] for body in responses)
    return done


async def main() -> None:
    app = web.Application()
    app.router.add_get("/pages/{number}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}",
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            print("crawled:", sorted(await crawl(session)))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
