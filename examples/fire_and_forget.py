"""Fire-and-forget task whose exception vanishes.

Bug: handle_request() starts send_metrics() with asyncio.create_task() and
never looks at the task again. When send_metrics() fails, nobody retrieves
the exception.

Without taskwatch: the request "succeeds"; the ConnectionError only shows up
as asyncio's "Task exception was never retrieved" log line, printed whenever
the task object happens to be garbage-collected (often long after the fact,
or only at shutdown) and easy to miss among other logs.

Fix (fire_and_forget_fixed.py): keep a reference to the task and attach a
done callback that retrieves and logs the exception (or simply await it).
"""
import asyncio


async def send_metrics(payload):
    await asyncio.sleep(0.05)  # talk to the metrics backend
    raise ConnectionError(f"metrics backend unreachable, dropped {payload}")


async def handle_request(request_id):
    asyncio.create_task(send_metrics({"request": request_id}))  # expect: unretrieved-exception
    await asyncio.sleep(0.01)  # do the real work of the request
    return f"200 OK for request {request_id}"


async def main():
    print(await handle_request(1))
    await asyncio.sleep(0.2)  # the server keeps serving other requests
    print("server shutting down")


if __name__ == "__main__":
    asyncio.run(main())
