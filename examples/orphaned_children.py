"""A cancelled parent task leaves its children running.

Bug: sync_all_accounts() starts one child task per account with
asyncio.create_task() and waits for them with asyncio.wait(). When the parent
is cancelled, asyncio.wait() does not cancel the children: they are orphaned
and keep running (and writing!) for another ~2 s after the caller was told
the sync was cancelled.

Without taskwatch: "sync cancelled" is printed, yet 3 tasks are still
running and "synced account ..." lines keep appearing afterwards; in a real
program they race with whatever runs next, or are cut off at shutdown.

Fix (orphaned_children_fixed.py): create the children in an
asyncio.TaskGroup (Python 3.11+), which cancels and awaits them when the
parent is cancelled.
"""
import asyncio


async def sync_account(account_id):
    await asyncio.sleep(2.0)  # pull the account's records from the remote API
    print(f"synced account {account_id}")


async def sync_all_accounts(account_ids):
    children = []
    for account_id in account_ids:
        child = asyncio.create_task(sync_account(account_id))  # expect: orphaned-task
        children.append(child)
    await asyncio.wait(children)


async def main():
    sync = asyncio.create_task(sync_all_accounts([1, 2, 3]))
    await asyncio.sleep(0.2)
    sync.cancel()  # the user pressed "abort"
    try:
        await sync
    except asyncio.CancelledError:
        print("sync cancelled")
    print(f"tasks still running besides main: {len(asyncio.all_tasks()) - 1}")
    await asyncio.sleep(2.2)  # the app keeps running; the children too
    print("main: done")


if __name__ == "__main__":
    asyncio.run(main())
