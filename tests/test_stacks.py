"""Await chains of suspended tasks: the same frames from the standard library's call graph (3.14+)
as from the coroutine links, and the future a task waits on named as such."""

import asyncio

from taskwatch._core import _stacks

from .conftest import run


async def _inner(event):
    await event.wait()


async def _mid(event):
    await _inner(event)


def test_await_chain_of_a_suspended_task(loop_kind):
    seen = {}

    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(_mid(event))
        await asyncio.sleep(0)
        seen["chain"] = _stacks.await_chain(task)
        seen["walk"] = _stacks._walk(task)
        event.set()
        await task

    run(main(), loop_kind)
    frames, awaiting = seen["chain"]
    assert [f.function for f in frames] == ["_mid", "_inner", "Event.wait"]
    assert awaiting == "future"
    assert seen["walk"] == seen["chain"]


def test_await_chain_of_foreign_objects():
    assert _stacks.await_chain(object()) == ([], None)
    loop = asyncio.new_event_loop()
    try:
        assert _stacks.await_chain(asyncio.Future(loop=loop)) == ([], None)
    finally:
        loop.close()
