"""Calling an async function without awaiting it.

Bug: register_user() calls send_email(...) but forgets the `await`. That only
creates a coroutine object; the function body never runs, so no email is
sent.

Without taskwatch: the program succeeds. Python prints
"RuntimeWarning: coroutine 'send_email' was never awaited" when the coroutine
object is garbage-collected, which is easy to miss (and hidden if warnings
are filtered).

Fix (never_awaited_fixed.py): `await send_email(...)`.
"""
import asyncio


async def send_email(address, subject):
    await asyncio.sleep(0.05)  # talk to the SMTP server
    print(f"sent {subject!r} to {address}")


async def register_user(address):
    await asyncio.sleep(0.01)  # insert the user row
    send_email(address, "Welcome!")  # expect: never-awaited
    return {"address": address, "active": True}


async def main():
    user = await register_user("ada@example.com")
    print(f"registered {user['address']}")


if __name__ == "__main__":
    asyncio.run(main())
