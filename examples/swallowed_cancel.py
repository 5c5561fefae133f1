"""A task that catches CancelledError and returns normally.

Bug: refresh_cache() catches asyncio.CancelledError, logs it and returns a
value instead of re-raising. The caller asked for cancellation but the task
finishes as if it had completed successfully.

Without taskwatch: no error at all. task.cancelled() is False, `await task`
returns "stopped", and anything relying on cancellation (TaskGroup, timeout(),
wait_for, shutdown code) silently misbehaves.

Fix (swallowed_cancel_fixed.py): do the cleanup, then `raise`.
"""
import asyncio


async def load_users():
    await asyncio.sleep(0.05)  # query the database
    return ["ada", "grace", "linus"]


async def refresh_cache(cache):
    try:
        while True:
            cache["users"] = await load_users()
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        print("refresh_cache: cancelled, cleaning up")
        cache.clear()
        return "stopped"  # BUG: the cancellation is swallowed here


async def main():
    cache = {}
    task = asyncio.create_task(refresh_cache(cache))
    await asyncio.sleep(0.25)
    task.cancel()  # expect: swallowed-cancel
    result = await task
    print(f"task.cancelled()={task.cancelled()} result={result!r}")


if __name__ == "__main__":
    asyncio.run(main())
