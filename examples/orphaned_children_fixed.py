"""A parent task whose children are cancelled with it (asyncio.TaskGroup).

The bug (see orphaned_children.py): children created with create_task() and
awaited with asyncio.wait() kept running after their parent was cancelled.

Fix: create them in an asyncio.TaskGroup (Python 3.11+). When the parent is
cancelled, the TaskGroup cancels every child and waits for them, so nothing
outlives the parent.
"""
import asyncio


async def sync_account(account_id):
    await asyncio.sleep(2.0)  # pull the account's records from the remote API
    print(f"synced account {account_id}")


async def sync_all_accounts(account_ids):
    async with asyncio.TaskGroup() as group:
        for account_id in account_ids:
            group.create_task(sync_account(account_id))


async def main():
    sync = asyncio.create_task(sync_all_accounts([1, 2, 3]))
    await asyncio.sleep(0.2)
    sync.cancel()  # the user pressed "abort"
    try:
        await sync
    except asyncio.CancelledError:
        print("sync cancelled")
    print(f"tasks still running besides main: {len(asyncio.all_tasks()) - 1}")
    print("main: done")


if __name__ == "__main__":
    asyncio.run(main())
