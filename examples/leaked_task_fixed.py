"""Background task stopped explicitly before main() returns.

The bug (see leaked_task.py): main() returned while report_health() was still
pending, and asyncio.run() cancelled it silently.

Fix: cancel the background task and await it before returning, so its
cleanup runs under our control and any error it raises is seen.
"""
import asyncio


async def report_health():
    sent = 0
    try:
        while True:
            await asyncio.sleep(0.1)  # POST /health to the monitoring service
            sent += 1
            print(f"health report #{sent} sent")
    finally:
        print(f"health reporter stopped after {sent} reports")


async def process_batch(items):
    for item in items:
        await asyncio.sleep(0.05)  # process one item
    print(f"processed {len(items)} items")


async def main():
    reporter = asyncio.create_task(report_health())
    await process_batch(range(5))
    reporter.cancel()
    try:
        await reporter
    except asyncio.CancelledError:
        pass  # we cancelled it ourselves
    print(f"main: returning, reporter.done()={reporter.done()}")


if __name__ == "__main__":
    asyncio.run(main())
