"""main() returns while a background task is still running.

Bug: main() starts report_health() and returns without stopping it. When
main() returns, asyncio.run() cancels every task that is still pending, with
no message. Work in progress there is cut off at an arbitrary point, and if
the task's cleanup fails, the error surfaces only during interpreter
shutdown, far from its cause.

Without taskwatch: the program exits 0; nothing is printed about the task.

Fix (leaked_task_fixed.py): stop background tasks explicitly before main()
returns: cancel them and await them (or signal them to finish and await).
"""
import asyncio


async def report_health():
    sent = 0
    while True:
        await asyncio.sleep(0.1)  # POST /health to the monitoring service
        sent += 1
        print(f"health report #{sent} sent")


async def process_batch(items):
    for item in items:
        await asyncio.sleep(0.05)  # process one item
    print(f"processed {len(items)} items")


async def main():
    reporter = asyncio.create_task(report_health())  # expect: leaked-task
    await process_batch(range(5))
    print(f"main: returning, reporter.done()={reporter.done()}")


if __name__ == "__main__":
    asyncio.run(main())
