"""An aiohttp service that accepts export jobs: the handler answers 202 at once and runs the job in
a background task, keeping a strong reference in an app-level registry (the pattern of asyncio's
create_task documentation); the client polls the job until it is done and reads its result; the
app's shutdown waits for any job still running.

requires: aiohttp
"""

import asyncio
import itertools
import os

import aiohttp
from aiohttp import web

JOBS = web.AppKey("jobs", dict)
JOB_IDS = itertools.count(1)


async def export(rows: int) -> str:
    for _ in range(5):
        await asyncio.sleep(0.3)  # one batch of rows at a time
    return f"{rows} rows exported"


async def start_export(request: web.Request) -> web.Response:
    rows = int((await request.json())["rows"])
    job_id = next(JOB_IDS)
    request.app[JOBS][job_id] = asyncio.create_task(export(rows), name=f"export-{job_id}")
    return web.json_response({"job": job_id}, status=202)


async def job_status(request: web.Request) -> web.Response:
    job = request.app[JOBS].get(int(request.match_info["job_id"]))
    if job is None:
        raise web.HTTPNotFound()
    if not job.done():
        return web.json_response({"state": "running"})
    return web.json_response({"state": "done", "result": job.result()})


async def finish_jobs(app: web.Application) -> None:
    await asyncio.gather(*app[JOBS].values())


async def main() -> None:
    app = web.Application()
    app[JOBS] = {}
    app.router.add_post("/exports", start_export)
    app.router.add_get("/exports/{job_id}", job_status)
    app.on_shutdown.append(finish_jobs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}",
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:
            jobs = []
            for rows in (100, 250):
                async with session.post("/exports", json={"rows": rows}) as response:
                    jobs.append((await response.json())["job"])
                    print("accepted:", response.status)
            for job in jobs:
                while True:
                    async with session.get(f"/exports/{job}") as response:
                        status = await response.json()
                    if status["state"] == "done":
                        print(f"job {job}:", status["result"])
                        break
                    await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
