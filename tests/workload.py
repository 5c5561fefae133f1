"""A deterministic asyncio workload printing every observable result (compared with and without
taskwatch by test_transparency)."""

import asyncio
import contextvars
import gc
import sys

REQUEST = contextvars.ContextVar("REQUEST", default=None)


async def producer(queue, n):
    for i in range(n):
        await queue.put(i)
    await queue.put(None)


async def consumer(queue, results):
    while (item := await queue.get()) is not None:
        results.append(item * 2)


async def handler(i):
    REQUEST.set(i)
    await asyncio.sleep(0)
    if i % 7 == 3:
        raise ValueError(f"bad request {i}")
    return (REQUEST.get(), asyncio.current_task().get_name())


async def slow():
    try:
        await asyncio.sleep(10)
    finally:
        print("slow cleanup", asyncio.current_task().cancelling())


async def main():
    queue = asyncio.Queue(maxsize=3)
    results = []
    await asyncio.gather(producer(queue, 10), consumer(queue, results))
    print("queue", results)
    outcomes = await asyncio.gather(*(handler(i) for i in range(10)), return_exceptions=True)
    for item in outcomes:
        print("gather", type(item).__name__, item)
    tasks = [asyncio.create_task(handler(i), name=f"h{i}") for i in range(5)]
    done, pending = await asyncio.wait(tasks)
    print("wait", sorted(t.get_name() for t in done), len(pending))
    for t in tasks:
        print("task", t.get_name(), t.done(), t.cancelled(), repr(t.exception()))
    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(4):
                tg.create_task(handler(i))
    except* ValueError as eg:
        print("taskgroup", [str(e) for e in eg.exceptions])
    try:
        async with asyncio.timeout(0.01):
            await slow()
    except TimeoutError:
        print("timeout", asyncio.current_task().cancelling())
    try:
        await asyncio.wait_for(slow(), 0.01)
    except TimeoutError:
        print("wait_for")
    shielded = asyncio.create_task(asyncio.sleep(0.01, "shielded"))
    try:
        await asyncio.wait_for(asyncio.shield(shielded), 0.001)
    except TimeoutError:
        print("shield timeout", await shielded)
    lost = asyncio.create_task(handler(3))
    await asyncio.sleep(0.01)
    print("fire-and-forget done", lost.done())
    del lost
    gc.collect()
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "from callback")
    print("future", await fut)
    print("executor", await loop.run_in_executor(None, sum, [1, 2, 3]))
    print("to_thread", await asyncio.to_thread(len, "abcd"))
    t = asyncio.create_task(slow())
    await asyncio.sleep(0)
    t.cancel("stop")
    try:
        await t
    except asyncio.CancelledError as exc:
        print("cancelled", exc.args, t.cancelled())
    async def agen():
        for i in range(3):
            yield i
            await asyncio.sleep(0)
    print("agen", [i async for i in agen()])
    print("current", asyncio.current_task().get_name(), len(asyncio.all_tasks()))


if __name__ == "__main__":
    if "--taskwatch" in sys.argv:
        import taskwatch

        taskwatch.install(log=False)
    if sys.argv[1] == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
