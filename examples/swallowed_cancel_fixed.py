"""A task that handles CancelledError, fixed: clean up, then re-raise.

The bug (see swallowed_cancel.py): refresh_cache() caught CancelledError and
returned normally, so its cancellation was silently ignored.

Fix: do the cleanup in the except (or finally) block, then `raise` so the task
really ends cancelled. The caller that cancelled it expects CancelledError.
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
        raise


async def main():
    cache = {}
    task = asyncio.create_task(refresh_cache(cache))
    await asyncio.sleep(0.25)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass  # we cancelled it ourselves
    print(f"task.cancelled()={task.cancelled()}")


if __name__ == "__main__":
    asyncio.run(main())
