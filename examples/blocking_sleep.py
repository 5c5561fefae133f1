"""time.sleep() inside a coroutine blocks the event loop.

Bug: fetch_profile() backs off with time.sleep(0.3) before retrying. That
call blocks the whole event loop thread, not just this coroutine: every other
task (here the heartbeat) is frozen for 0.3 s.

Without taskwatch: no error, just a stalled program: the heartbeat misses its
ticks and, in a server, every concurrent request waits.

Fix (blocking_sleep_fixed.py): `await asyncio.sleep(0.3)`.
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
    time.sleep(0.3)  # expect: blocked-loop
    await asyncio.sleep(0.05)  # second attempt succeeds
    return {"id": user_id, "name": "ada"}


async def main():
    _, profile = await asyncio.gather(heartbeat(12), fetch_profile(42))
    print(f"profile: {profile}")


if __name__ == "__main__":
    asyncio.run(main())
