"""A pending task that nobody references is garbage-collected.

Bug: send_request() starts wait_for_reply() with asyncio.ensure_future() and
drops the returned task. The event loop keeps only weak references to tasks,
and the reply future is referenced only by the coroutine itself, so the task
is an unreachable cycle: the next garbage collection destroys it while it is
still pending. (Here gc.collect() is called explicitly to make that happen
deterministically; in a real program it happens at a random moment.)

Without taskwatch: the reply handler silently never runs; asyncio logs
"Task was destroyed but it is pending!" at some unpredictable moment.

Fix (dropped_task_fixed.py): keep a strong reference to every background
task (a set, with a done callback that discards it) and cancel/await the
remaining ones at shutdown.
"""
import asyncio
import gc


async def wait_for_reply(request_id):
    reply = asyncio.get_running_loop().create_future()
    # BUG: the future is not registered anywhere, only this coroutine holds it
    message = await reply
    print(f"reply to request {request_id}: {message}")


async def send_request(request_id):
    await asyncio.sleep(0.01)  # write the request to the socket
    asyncio.ensure_future(wait_for_reply(request_id))  # expect: destroyed-pending


async def main():
    await send_request(7)
    await asyncio.sleep(0.05)
    gc.collect()  # happens on its own sooner or later in a real program
    await asyncio.sleep(0.05)
    print("main: done")


if __name__ == "__main__":
    asyncio.run(main())
