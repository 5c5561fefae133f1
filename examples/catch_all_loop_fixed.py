"""A worker loop that handles errors without swallowing cancellation.

The bug (see catch_all_loop.py): a bare `except:` inside the worker loop also
caught CancelledError, so cancel() was ignored and shutdown took seconds.

Fix: catch `Exception` only. CancelledError derives from BaseException, so it
now propagates, the loop ends at once and the task ends cancelled. (If you
really need a broad except, add `except asyncio.CancelledError: raise` first.)
"""
import asyncio


async def handle_job(job_id):
    await asyncio.sleep(0.1)  # fetch and process one job


async def process_jobs():
    done = 0
    while True:
        try:
            await handle_job(done)
            done += 1
        except Exception as exc:
            print(f"process_jobs: retrying after {exc!r}")
            continue


async def main():
    worker = asyncio.create_task(process_jobs())
    await asyncio.sleep(0.3)
    print("main: shutting down the worker")
    worker.cancel()
    try:
        await worker
    except asyncio.CancelledError:
        pass  # we cancelled it ourselves
    print(f"worker stopped, cancelled()={worker.cancelled()}")


if __name__ == "__main__":
    asyncio.run(main())
