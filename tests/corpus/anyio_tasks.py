"""An anyio program: a TCP echo service and its clients in task groups, a producer/consumer
pipeline over memory streams, cancel scopes, timeouts that expire and are handled, worker threads.

requires: anyio
"""

import os

import anyio
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream


async def handle_echo(stream: SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send(chunk.upper())


async def echo_service(*, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener:
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle_echo)


async def echo_client(port: int, name: str, replies: dict) -> None:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"hello from {name}".encode())
        replies[name] = (await stream.receive()).decode()


async def produce(send: MemoryObjectSendStream[int], count: int) -> None:
    async with send:
        for number in range(count):
            await send.send(number)


async def consume(receive: MemoryObjectReceiveStream[int], totals: list) -> None:
    async with receive:
        async for number in receive:
            totals.append(number * number)
            await anyio.sleep(0)


async def slow_lookup() -> str:
    await anyio.sleep(30)
    return "never"


async def ticker(ticks: list) -> None:
    while True:
        ticks.append(1)
        await anyio.sleep(0.01)


async def flaky(delay: float) -> None:
    await anyio.sleep(delay)
    raise ValueError("the upstream refused the request")


async def main() -> None:
    replies: dict = {}
    async with anyio.create_task_group() as services:
        port = await services.start(echo_service)
        async with anyio.create_task_group() as clients:
            for name in ("ada", "bob", "cy"):
                clients.start_soon(echo_client, port, name, replies)
        services.cancel_scope.cancel()  # stop the echo service
    print("echo:", sorted(replies.values()))

    totals: list = []
    send, receive = anyio.create_memory_object_stream[int](max_buffer_size=4)
    async with anyio.create_task_group() as pipeline:
        pipeline.start_soon(produce, send, 100)
        for _ in range(3):
            pipeline.start_soon(consume, receive.clone(), totals)
        receive.close()
    print("pipeline:", len(totals), sum(totals))

    with anyio.move_on_after(0.2) as scope:
        await slow_lookup()
    print("lookup moved on:", scope.cancelled_caught)

    try:
        with anyio.fail_after(0.2):
            await slow_lookup()
    except TimeoutError:
        print("lookup failed after its deadline")

    with anyio.fail_after(20):
        await anyio.sleep(0.01)

    ticks: list = []
    async with anyio.create_task_group() as group:
        group.start_soon(ticker, ticks)
        await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    print("ticker stopped:", len(ticks) > 0)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(flaky, 0.05)
            group.start_soon(slow_lookup)
    except* ValueError as errors:
        print("group failed:", [str(e) for e in errors.exceptions])

    with anyio.CancelScope() as outer:
        outer.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.01)  # cleanup that must finish
        print("shielded cleanup done")
        await anyio.sleep(1)
    print("outer scope cancelled:", outer.cancelled_caught)

    total = await anyio.to_thread.run_sync(sum, range(1000))
    print("thread:", total)

    done = anyio.Event()

    async def signal_later() -> None:
        await anyio.sleep(0.02)
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(signal_later)
        with anyio.fail_after(20):
            await done.wait()
    print("event set")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio",
              backend_options={"use_uvloop": os.environ.get("CORPUS_LOOP") == "uvloop"})
