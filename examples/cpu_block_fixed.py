"""CPU-bound work moved off the event loop.

The bug (see cpu_block.py): a pure-Python computation inside a coroutine
froze the event loop for about half a second.

Fix: run the computation in a worker thread with asyncio.to_thread(). The
event loop stays responsive (the GIL is released every few milliseconds).
For long computations, a ProcessPoolExecutor via loop.run_in_executor() also
avoids competing for the GIL.
"""
import asyncio
import time


async def heartbeat(ticks):
    last = time.perf_counter()
    worst = 0.0
    for _ in range(ticks):
        await asyncio.sleep(0.05)
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    print(f"heartbeat: longest gap between ticks {worst:.2f} s")


def compute_checksum(rows):
    return sum(row * row % 97 for row in range(rows))


async def build_report():
    await asyncio.sleep(0.1)  # load the rows
    checksum = await asyncio.to_thread(compute_checksum, 10_000_000)
    print(f"report checksum {checksum}")


async def main():
    await asyncio.gather(heartbeat(20), build_report())


if __name__ == "__main__":
    asyncio.run(main())
