"""Cancellation the way aiohttp services meet it: a TaskGroup of client requests where one fails
and the others are cancelled mid-flight, a client that gives up on a long poll (the server cancels
its handler), a graceful shutdown that cancels a request still in flight, and a raw asyncio
server run by serve_forever() in a task that is cancelled at the end.

requires: aiohttp
"""

import asyncio
import contextlib
import os

import aiohttp
from aiohttp import web

EVENTS = web.AppKey("events", list)
ENTERED = web.AppKey("entered", asyncio.Event)


async def slow(request: web.Request) -> web.Response:
    request.app[ENTERED].set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        request.app[EVENTS].append(f"slow {request.query.get('n')} cancelled")
        raise
    return web.Response(text="slow")


async def broken(request: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    raise web.HTTPServiceUnavailable(text="maintenance")


async def poll(request: web.Request) -> web.Response:
    await asyncio.sleep(10)  # a long poll: answered when there is news (never, today)
    return web.Response(text="news")


async def start(app: web.Application, **kwargs) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def fetch(session: aiohttp.ClientSession, path: str) -> str:
    async with session.get(path) as response:
        response.raise_for_status()
        return await response.text()


async def group_with_failure(base_url: str) -> str:
    async with aiohttp.ClientSession(base_url, timeout=aiohttp.ClientTimeout(total=30)) as session:
        outcome = "group succeeded"
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(3):
                    group.create_task(fetch(session, f"/slow?n={n}"))
                group.create_task(fetch(session, "/broken"))
        except* aiohttp.ClientResponseError as errors:
            outcome = f"group failed: {[e.status for e in errors.exceptions]}"
    return outcome


async def give_up_on_poll(base_url: str) -> str:
    async with aiohttp.ClientSession(base_url) as session:
        try:
            async with asyncio.timeout(0.2):
                return await fetch(session, "/poll")
        except TimeoutError:
            return "poll: gave up"


async def in_flight_at_shutdown() -> str:
    app = web.Application()
    app[EVENTS] = []
    app[ENTERED] = asyncio.Event()
    app.router.add_get("/slow", slow)
    runner, base_url = await start(app, shutdown_timeout=0.2)
    async with aiohttp.ClientSession(base_url) as session:
        request = asyncio.create_task(fetch(session, "/slow?n=late"))
        async with asyncio.timeout(20):
            await app[ENTERED].wait()  # the request is in the handler
        await runner.cleanup()  # waits shutdown_timeout for it, then cancels it
        try:
            await request
        except aiohttp.ClientError as error:
            return f"shutdown: {type(error).__name__}; {app[EVENTS]}"
    return f"shutdown: answered; {app[EVENTS]}"


async def line_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async for line in reader:
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def raw_server() -> str:
    server = await asyncio.start_server(line_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    serving = asyncio.create_task(server.serve_forever())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\n")
    reply = await reader.readline()
    writer.close()
    await writer.wait_closed()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    return f"raw: {reply.decode().strip()}"


async def main() -> None:
    app = web.Application()
    app[EVENTS] = []
    app[ENTERED] = asyncio.Event()
    app.router.add_get("/slow", slow)
    app.router.add_get("/broken", broken)
    app.router.add_get("/poll", poll)
    runner, base_url = await start(app, handler_cancellation=True)
    try:
        print(await group_with_failure(base_url))
        print(await give_up_on_poll(base_url))
        for _ in range(500):  # the server sees the clients go away
            if len(app[EVENTS]) == 3:
                break
            await asyncio.sleep(0.02)
        print("server:", sorted(app[EVENTS]))
    finally:
        await runner.cleanup()
    print(await in_flight_at_shutdown())
    print(await raw_server())


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
