"""A cancelled task whose cleanup is bounded by a timeout.

The bug (see slow_finally.py): the task's `finally:` waited 1.5 s for the
server, so cancelling it took 1.5 s.

Fix: bound the cleanup with `async with asyncio.timeout(0.1):` and give up
(logging it) if it takes longer. Catch the TimeoutError inside the finally
so the original CancelledError keeps propagating and the task ends cancelled.
"""
import asyncio


async def close_connection():
    await asyncio.sleep(1.5)  # wait for the server to acknowledge the close


async def upload_report():
    try:
        await asyncio.sleep(10)  # stream the report to the server
    finally:
        try:
            async with asyncio.timeout(0.1):
                await close_connection()
            print("upload_report: connection closed")
        except TimeoutError:
            print("upload_report: server slow to acknowledge, dropped the connection")


async def main():
    upload = asyncio.create_task(upload_report())
    await asyncio.sleep(0.1)
    upload.cancel()
    try:
        await upload
    except asyncio.CancelledError:
        print("upload cancelled")


if __name__ == "__main__":
    asyncio.run(main())
