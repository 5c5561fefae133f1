"""Fire-and-forget task, fixed: keep a reference and retrieve its exception.

The bug (see fire_and_forget.py): a task started with create_task() and never
looked at again fails, and its exception is never retrieved.

Fix: keep every background task in a set (so it cannot be garbage-collected
early) and attach a done callback that retrieves the exception and logs it
right away. Awaiting the task somewhere is the other correct fix.
"""
import asyncio
import logging

log = logging.getLogger("metrics")
background_tasks = set()


def log_failure(task):
    background_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("send_metrics failed: %r", task.exception())


async def send_metrics(payload):
    await asyncio.sleep(0.05)  # talk to the metrics backend
    raise ConnectionError(f"metrics backend unreachable, dropped {payload}")


async def handle_request(request_id):
    task = asyncio.create_task(send_metrics({"request": request_id}))
    background_tasks.add(task)
    task.add_done_callback(log_failure)
    await asyncio.sleep(0.01)  # do the real work of the request
    return f"200 OK for request {request_id}"


async def main():
    print(await handle_request(1))
    await asyncio.sleep(0.2)  # the server keeps serving other requests
    print("server shutting down")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
