"""An aiosqlite stock transfer that forgets to await the commit: the coroutine is never run and
the transaction is rolled back when the connection closes.

requires: aiosqlite
"""

import asyncio
import os
import tempfile

import aiosqlite


async def create(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE stock (name TEXT PRIMARY KEY, count INTEGER NOT NULL)")
        await db.executemany("INSERT INTO stock VALUES (?, ?)", [("bolts", 100), ("nuts", 40)])
        await db.commit()


async def transfer(path: str, source: str, target: str, count: int) -> None:
    async with aiosqlite.connect(path) as db:
        await db.execute("UPDATE stock SET count = count - ? WHERE name = ?", (count, source))
        await db.execute("UPDATE stock SET count = count + ? WHERE name = ?", (count, target))
        db.commit()  # BUG: never-awaited


async def levels(path: str) -> list[tuple[str, int]]:
    async with aiosqlite.connect(path) as db:
        return [tuple(row) for row in await db.execute_fetchall("SELECT * FROM stock ORDER BY name")]


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "stock.db")
        await create(path)
        print("before:", await levels(path))
        await transfer(path, "bolts", "nuts", 25)
        print("after:", await levels(path))


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
