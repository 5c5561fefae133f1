"""Calling an async function, fixed: await it.

The bug (see never_awaited.py): send_email(...) was called without `await`,
so only a coroutine object was created and the email was never sent.

Fix: `await send_email(...)` (or asyncio.create_task(send_email(...)) and keep
and await the task if it should run concurrently).
"""
import asyncio


async def send_email(address, subject):
    await asyncio.sleep(0.05)  # talk to the SMTP server
    print(f"sent {subject!r} to {address}")


async def register_user(address):
    await asyncio.sleep(0.01)  # insert the user row
    await send_email(address, "Welcome!")
    return {"address": address, "active": True}


async def main():
    user = await register_user("ada@example.com")
    print(f"registered {user['address']}")


if __name__ == "__main__":
    asyncio.run(main())
