"""Client timeouts that expire and are handled: an aiohttp ClientTimeout, an httpx timeout,
asyncio.wait_for and asyncio.timeout against a slow endpoint, and a call retried under
asyncio.timeout with exponential backoff until the service answers in time.

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

SLOW = 3.0    # seconds the slow endpoint takes; every client deadline is far shorter
DEADLINE = 0.2
QUOTE_CALLS = web.AppKey("quote_calls", list)


async def slow_report(request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW)
    return web.Response(text="report")


async def flaky_quote(request: web.Request) -> web.Response:
    calls = request.app[QUOTE_CALLS]
    calls.append(request.path)
    attempts = len(calls)
    if attempts <= 2:  # overloaded for the first two calls
        await asyncio.sleep(SLOW)
    return web.json_response({"quote": 42, "attempt": attempts})


async def start_service() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app[QUOTE_CALLS] = []
    app.router.add_get("/report", slow_report)
    app.router.add_get("/quote", flaky_quote)
    runner = web.AppRunner(app, handler_cancellation=True)  # a gone client cancels its handler
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def aiohttp_deadline(base_url: str) -> str:
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(base_url + "/report") as response:
                return await response.text()
        except asyncio.TimeoutError:
            return "aiohttp: report timed out"


async def httpx_deadline(base_url: str) -> str:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=DEADLINE), verify=TLS) as client:
        try:
            response = await client.get(base_url + "/report")
            return response.text
        except httpx.ReadTimeout:
            return "httpx: report timed out"


async def wait_for_deadline(session: aiohttp.ClientSession, base_url: str) -> str:
    async def fetch() -> str:
        async with session.get(base_url + "/report") as response:
            return await response.text()

    try:
        return await asyncio.wait_for(fetch(), timeout=DEADLINE)
    except TimeoutError:
        return "wait_for: report timed out"


async def timeout_block(client: httpx.AsyncClient, base_url: str) -> str:
    try:
        async with asyncio.timeout(DEADLINE):
            response = await client.get(base_url + "/report")
            return response.text
    except TimeoutError:
        return "timeout: report timed out"


async def quote_with_retries(client: httpx.AsyncClient, base_url: str, attempts: int = 5) -> str:
    delay, deadline = 0.05, DEADLINE
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(deadline):
                response = await client.get(base_url + "/quote")
            return f"quote {response.json()['quote']} on attempt {attempt}"
        except TimeoutError:
            print(f"attempt {attempt} timed out, retrying in {delay:.2f} s")
            await asyncio.sleep(delay)
            delay *= 2
            deadline *= 3  # a busy service gets longer to answer each time
    return "no quote"


async def main() -> None:
    runner, base_url = await start_service()
    try:
        print(await aiohttp_deadline(base_url))
        print(await httpx_deadline(base_url))
        async with aiohttp.ClientSession() as session:
            print(await wait_for_deadline(session, base_url))
        async with httpx.AsyncClient(timeout=10.0, verify=TLS) as client:
            print(await timeout_block(client, base_url))
            print(await quote_with_retries(client, base_url))
        results = await asyncio.gather(aiohttp_deadline(base_url), httpx_deadline(base_url))
        print(" / ".join(results))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
