"""CPU-bound work inside a coroutine blocks the event loop.

Bug: build_report() crunches numbers in pure Python with no `await`. While it
runs (~0.5 s), the event loop cannot run anything else: the heartbeat task,
and in a real server every other request, is frozen.

Without taskwatch: nothing is reported; latency spikes and timeouts appear
elsewhere in the program, far from the cause. Here the heartbeat notices a
gap of about half a second between two ticks.

Fix (cpu_block_fixed.py): run the CPU work off the loop with
`await asyncio.to_thread(...)` (or a ProcessPoolExecutor via
loop.run_in_executor for long computations, to escape the GIL).
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


async def build_report():
    await asyncio.sleep(0.1)  # load the rows
    checksum = sum(row * row % 97 for row in range(10_000_000))  # expect: blocked-loop
    print(f"report checksum {checksum}")


async def main():
    await asyncio.gather(heartbeat(20), build_report())


if __name__ == "__main__":
    asyncio.run(main())
