"""An aiohttp app with an audit worker in its cleanup context; the worker catches
CancelledError and returns, so its cancellation at shutdown is swallowed.

requires: aiohttp httpx2
"""

import asyncio
import contextlib
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

AUDIT = web.AppKey("audit", asyncio.Queue)
AUDITED = web.AppKey("audited", list)


async def audit_worker(queue: asyncio.Queue, audited: list) -> None:
    try:
        while True:
            event = await queue.get()
            await asyncio.sleep(0.005)  # write it to the audit store
            audited.append(event)
            queue.task_done()
    except asyncio.CancelledError:  # BUG: swallowed-cancel
        pass


async def audit_context(app: web.Application):
    app[AUDIT] = asyncio.Queue()
    app[AUDITED] = []
    worker = asyncio.create_task(audit_worker(app[AUDIT], app[AUDITED]))
    yield
    await app[AUDIT].join()
    worker.cancel()  # CANCEL
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    print(f"audited {len(app[AUDITED])} events")


async def login(request: web.Request) -> web.Response:
    user = request.match_info["user"]
    await request.app[AUDIT].put(f"login {user}")
    return web.json_response({"user": user, "token": user[::-1]})


async def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(audit_context)
    app.router.add_post("/login/{user}", login)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30, verify=TLS) as client:
            responses = await asyncio.gather(*(client.post(f"/login/{user}")
                                               for user in ("ada", "bob", "cy")))
            for response in responses:
                print(response.status_code, response.json())
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
