"""A worker loop whose catch-all `except:` also catches the cancellation.

Bug: process_jobs() wraps each iteration in a bare `except:` and keeps going.
A bare except (or `except BaseException`) also catches asyncio.CancelledError,
so cancel() only aborts the current iteration and the loop carries on. Here
the worker stops by itself after 25 jobs (~2.5 s) so the demo ends; a real
`while True` worker would never stop and shutdown would hang.

Without taskwatch: shutdown is mysteriously slow, "retrying after
CancelledError()" appears in the log, and the task finally returns normally
(task.cancelled() is False) as if it had never been cancelled.

Fix (catch_all_loop_fixed.py): catch `Exception` only (CancelledError is a
BaseException), or re-raise CancelledError explicitly.
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
            if done == 25:  # the demo queue runs dry here (~2.5 s)
                return done
        except:  # noqa: E722  BUG: also catches CancelledError
            print("process_jobs: retrying after an error")
            continue


async def main():
    worker = asyncio.create_task(process_jobs())
    await asyncio.sleep(0.3)
    print("main: shutting down the worker")
    worker.cancel()  # expect: slow-cancel, swallowed-cancel
    result = await worker
    print(f"worker returned {result!r}, cancelled()={worker.cancelled()}")


if __name__ == "__main__":
    asyncio.run(main())
