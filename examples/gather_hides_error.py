"""asyncio.gather() reports the first error and hides a later one.

Bug: build_dashboard() runs fetch_prices() and fetch_inventory() with
asyncio.gather() (no return_exceptions). fetch_prices() fails first, gather()
raises its ValueError and the caller handles it. fetch_inventory() keeps
running (gather does not cancel it) and fails later with ConnectionError;
gather marks that exception as retrieved, so nobody ever sees it.

Without taskwatch: only "dashboard failed: ... malformed JSON" is printed;
the inventory outage is completely invisible, not even a log line.

Fix (gather_hides_error_fixed.py): `gather(..., return_exceptions=True)` and
inspect every result, or an asyncio.TaskGroup (which cancels the siblings
and raises all errors together in an ExceptionGroup).
"""
import asyncio


async def fetch_prices():
    await asyncio.sleep(0.05)
    raise ValueError("price feed returned malformed JSON")


async def fetch_inventory():
    await asyncio.sleep(0.3)
    raise ConnectionError("inventory service unreachable")


async def build_dashboard():
    try:
        await asyncio.gather(fetch_prices(), fetch_inventory())  # expect: lost-exception
    except ValueError as exc:
        print(f"dashboard failed: {exc}")


async def main():
    await build_dashboard()
    await asyncio.sleep(0.5)  # keep serving; fetch_inventory fails meanwhile
    print("main: done")


if __name__ == "__main__":
    asyncio.run(main())
