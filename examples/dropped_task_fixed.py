"""Background tasks kept alive by strong references, cancelled at shutdown.

The bug (see dropped_task.py): a task created with ensure_future() and not
stored anywhere was garbage-collected while pending.

Fix: keep every background task in a set, discard it when it is done, and
at shutdown cancel the ones still pending and await them. Registering the
reply future where the reader can resolve it (`pending_replies`) is what a
real client would also do.
"""
import asyncio
import gc

background_tasks = set()
pending_replies = {}


async def wait_for_reply(request_id):
    reply = asyncio.get_running_loop().create_future()
    pending_replies[request_id] = reply
    try:
        message = await reply
        print(f"reply to request {request_id}: {message}")
    finally:
        pending_replies.pop(request_id, None)


async def send_request(request_id):
    await asyncio.sleep(0.01)  # write the request to the socket
    task = asyncio.ensure_future(wait_for_reply(request_id))
    background_tasks.add(task)
    task.add_done_callback(background_tasks.discard)


async def main():
    await send_request(7)
    await asyncio.sleep(0.05)
    gc.collect()  # no longer destroys anything: the task is referenced
    await asyncio.sleep(0.05)
    for task in background_tasks:
        task.cancel()  # shutting down: no reply is coming any more
    await asyncio.gather(*background_tasks, return_exceptions=True)
    print("main: done")


if __name__ == "__main__":
    asyncio.run(main())
