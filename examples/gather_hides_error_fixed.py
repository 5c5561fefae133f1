"""asyncio.gather() with return_exceptions=True: every error is seen.

The bug (see gather_hides_error.py): gather() raised the first error and the
second child's later failure was swallowed by asyncio's internals.

Fix: `gather(..., return_exceptions=True)` waits for all children and returns
their exceptions as results, so each one can be inspected and logged. (An
asyncio.TaskGroup is the other option: it cancels the remaining children on
the first failure and raises every error in an ExceptionGroup.)
"""
import asyncio


async def fetch_prices():
    await asyncio.sleep(0.05)
    raise ValueError("price feed returned malformed JSON")


async def fetch_inventory():
    await asyncio.sleep(0.3)
    raise ConnectionError("inventory service unreachable")


async def build_dashboard():
    results = await asyncio.gather(fetch_prices(), fetch_inventory(), return_exceptions=True)
    for name, result in zip(["prices", "inventory"], results):
        if isinstance(result, Exception):
            print(f"dashboard: {name} failed: {result!r}")


async def main():
    await build_dashboard()
    await asyncio.sleep(0.1)  # keep serving
    print("main: done")


if __name__ == "__main__":
    asyncio.run(main())
