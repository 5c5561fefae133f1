"""A cancelled task that takes seconds to clean up in its finally block.

Bug: upload_report() closes its connection in `finally:` and the close waits
1.5 s for the server. cancel() is only honoured after the cleanup finishes,
so whoever cancelled the task (a timeout, a shutdown handler) waits 1.5 s.

Without taskwatch: the program just hangs for a while on shutdown or after a
timeout; nothing says which task is stuck or why.

Fix (slow_finally_fixed.py): bound the cleanup, e.g. with
`async with asyncio.timeout(0.1):`, or make it quick.
"""
import asyncio


async def close_connection():
    await asyncio.sleep(1.5)  # wait for the server to acknowledge the close


async def upload_report():
    try:
        await asyncio.sleep(10)  # stream the report to the server
    finally:
        await close_connection()
        print("upload_report: connection closed")


async def main():
    upload = asyncio.create_task(upload_report())
    await asyncio.sleep(0.1)
    upload.cancel()  # expect: slow-cancel
    try:
        await upload
    except asyncio.CancelledError:
        print("upload cancelled")


if __name__ == "__main__":
    asyncio.run(main())
