"""A crawler over aiohttp written with the stdlib's concurrency tools: a bounded worker pool on a
queue (workers cancelled once the queue is drained), a semaphore, as_completed, racing two mirrors
with asyncio.wait(FIRST_COMPLETED) and cancelling the loser, run_in_executor for parsing.

requires: aiohttp
"""

import asyncio
import contextlib
import json
import os

import aiohttp
from aiohttp import web

SITE = {n: [m for m in (2 * n, 2 * n + 1) if m < 24] for n in range(1, 24)}


async def page(request: web.Request) -> web.Response:
    number = int(request.match_info["number"])
    await asyncio.sleep(0.01)
    return web.json_response({"page": number, "links": SITE[number]})


async def mirror(request: web.Request) -> web.Response:
    delay = {"fast": 0.01, "slow": 5}[request.match_info["name"]]
    await asyncio.sleep(delay)
    return web.Response(text=request.match_info["name"])


async def start() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/pages/{number}", page)
    app.router.add_get("/mirror/{name}", mirror)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def parse(body: bytes) -> dict:
    return json.loads(body)


async def crawl(session: aiohttp.ClientSession, workers: int = 4) -> list[int]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int] = asyncio.Queue()
    seen = {1}
    visited: list[int] = []

    async def worker() -> None:
        while True:
            number = await queue.get()
            try:
                async with session.get(f"/pages/{number}") as response:
                    body = await loop.run_in_executor(None, parse, await response.read())
                visited.append(body["page"])
                for link in body["links"]:
                    if link not in seen:
                        seen.add(link)
                        queue.put_nowait(link)
            finally:
                queue.task_done()

    queue.put_nowait(1)
    pool = [asyncio.create_task(worker(), name=f"crawler-{n}") for n in range(workers)]
    await queue.join()
    for task in pool:
        task.cancel()
    await asyncio.gather(*pool, return_exceptions=True)
    return sorted(visited)


async def fetch_some(session: aiohttp.ClientSession, numbers: list[int]) -> list[int]:
    limit = asyncio.Semaphore(3)

    async def fetch(number: int) -> int:
        async with limit:
            async with session.get(f"/pages/{number}") as response:
                return (await response.json())["page"]

    return sorted([await done for done in asyncio.as_completed([fetch(n) for n in numbers])])


async def race_mirrors(session: aiohttp.ClientSession) -> str:
    async def get(name: str) -> str:
        async with session.get(f"/mirror/{name}") as response:
            return await response.text()

    contenders = [asyncio.create_task(get(name)) for name in ("slow", "fast")]
    done, pending = await asyncio.wait(contenders, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending)
    return done.pop().result()


async def main() -> None:
    runner, base_url = await start()
    try:
        async with aiohttp.ClientSession(base_url, timeout=aiohttp.ClientTimeout(total=30)) as session:
            print("crawled:", await crawl(session))
            print("some:", await fetch_some(session, [3, 5, 7, 11, 13]))
            print("mirror:", await race_mirrors(session))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
