"""Back-off in a coroutine, fixed: await asyncio.sleep() instead of time.sleep().

The bug (see blocking_sleep.py): time.sleep(0.3) inside a coroutine froze
the whole event loop.

Fix: `await asyncio.sleep(0.3)` suspends only this coroutine; the heartbeat
(and everything else) keeps running meanwhile.
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


async def fetch_profile(user_id):
    await asyncio.sleep(0.05)  # first attempt: the service says "try again"
    await asyncio.sleep(0.3)  # back off without blocking the loop
    await asyncio.sleep(0.05)  # second attempt succeeds
    return {"id": user_id, "name": "ada"}


async def main():
    _, profile = await asyncio.gather(heartbeat(12), fetch_profile(42))
    print(f"profile: {profile}")


if __name__ == "__main__":
    asyncio.run(main())
