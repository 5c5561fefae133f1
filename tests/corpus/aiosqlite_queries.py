"""An inventory kept in SQLite through aiosqlite: schema, bulk insert, concurrent readers on
their own connections, a transaction rolled back on error, row factories, cursors, and a report
query cut short by asyncio.timeout (the connection stays usable).

requires: aiosqlite
"""

import asyncio
import os
import sqlite3
import tempfile

import aiosqlite

SCHEMA = """
CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, stock INTEGER NOT NULL);
CREATE TABLE movements (product_id INTEGER REFERENCES products(id), delta INTEGER NOT NULL);
"""


async def create(path: str) -> None:
    async with aiosqlite.connect(path) as db:
        await db.executescript(SCHEMA)
        await db.executemany("INSERT INTO products (name, stock) VALUES (?, ?)",
                             [(f"widget-{n}", n * 10) for n in range(1, 51)])
        await db.commit()


async def low_stock(path: str, limit: int) -> list[str]:
    async with aiosqlite.connect(path) as db:
        db.row_factory = aiosqlite.Row
        async with db.execute("SELECT name FROM products WHERE stock < ? ORDER BY id", (limit,)) as cur:
            return [row["name"] async for row in cur]


async def total_stock(path: str) -> int:
    async with aiosqlite.connect(path) as db:
        async with db.execute("SELECT SUM(stock) FROM products") as cursor:
            (total,) = await cursor.fetchone()
            return total


async def move(db: aiosqlite.Connection, name: str, delta: int) -> None:
    async with db.execute("SELECT id, stock FROM products WHERE name = ?", (name,)) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise LookupError(name)
    product_id, stock = row
    if stock + delta < 0:
        raise ValueError(f"not enough {name}")
    await db.execute("UPDATE products SET stock = ? WHERE id = ?", (stock + delta, product_id))
    await db.execute("INSERT INTO movements VALUES (?, ?)", (product_id, delta))


async def transfer(path: str, moves: list[tuple[str, int]]) -> str:
    async with aiosqlite.connect(path, timeout=30) as db:
        try:
            for name, delta in moves:
                await move(db, name, delta)
        except (LookupError, ValueError) as error:
            await db.rollback()
            return f"rolled back: {error}"
        await db.commit()
        return "committed"


# A report over a generated series: far longer than its deadline.
SLOW_REPORT = """
WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM series WHERE n < 1000000)
SELECT SUM(n * stock) FROM series, products WHERE products.id = 1
"""


async def report_with_deadline(path: str) -> str:
    async with aiosqlite.connect(path) as db:
        try:
            async with asyncio.timeout(0.05):
                async with db.execute(SLOW_REPORT) as cursor:
                    return f"report: {await cursor.fetchone()}"
        except TimeoutError:
            pass
        async with db.execute("SELECT COUNT(*) FROM products") as cursor:
            (count,) = await cursor.fetchone()
        return f"report timed out; {count} products still readable"


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "inventory.db")
        await create(path)
        reports = await asyncio.gather(low_stock(path, 40), low_stock(path, 100), total_stock(path))
        print("low stock:", reports[0])
        print("under 100:", len(reports[1]))
        print("total:", reports[2])
        print(await transfer(path, [("widget-1", -5), ("widget-2", 5)]))
        print(await transfer(path, [("widget-3", -5), ("widget-4", -1000)]))
        print(await transfer(path, [("widget-5", 1), ("gadget", 1)]))
        async with aiosqlite.connect(path) as db:
            rows = await db.execute_fetchall("SELECT name, stock FROM products WHERE id <= 5")
            print("first five:", [tuple(row) for row in rows])
            try:
                await db.execute("INSERT INTO products (name, stock) VALUES ('widget-1', 1)")
            except sqlite3.IntegrityError as error:
                print("duplicate refused:", error)
        print("total:", await total_stock(path))
        print(await report_with_deadline(path))


if __name__ == "__main__":
    if os.environ.get("CORPUS_LOOP") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
