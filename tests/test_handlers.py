"""The except clause that catches an exception thrown at a suspended await, found from exception
tables: through finally/with clean-ups and outward through the await chain."""

import asyncio
import contextlib

from taskwatch._core import _handlers

from .conftest import here


async def _leaf(box):
    box["fut"] = asyncio.get_running_loop().create_future()
    await box["fut"]


async def _bare(box, lines):
    lines["bare"] = here() + 3
    try:
        await _leaf(box)
    except:  # noqa: E722
        pass


async def _base_in_outer_frame(box, lines):
    lines["base"] = here() + 5
    try:
        async with contextlib.AsyncExitStack():
            with contextlib.nullcontext():
                await _leaf(box)
    except BaseException:
        pass


async def _finally_only(box, lines):
    try:
        await _leaf(box)
    finally:
        pass


async def _suppressed(box, lines):
    with contextlib.suppress(asyncio.CancelledError):
        await _leaf(box)


def _site(coro_fn):
    out = {}

    async def main():
        box, lines = {}, {}
        task = asyncio.create_task(coro_fn(box, lines))
        await asyncio.sleep(0)
        keys = _handlers.await_keys(task)
        out["site"] = _handlers.except_site(keys)
        out["lines"] = lines
        out["depth"] = len(keys)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return out


def test_bare_except():
    out = _site(_bare)
    assert out["depth"] == 2
    assert out["site"].line == out["lines"]["bare"] and out["site"].function.endswith("_bare")


def test_through_with_blocks_to_except_base_exception():
    out = _site(_base_in_outer_frame)
    assert out["site"].line == out["lines"]["base"]


def test_finally_and_suppress_name_no_except():
    assert _site(_finally_only)["site"] is None
    assert _site(_suppressed)["site"] is None


def test_running_task_has_no_keys():
    async def main():
        return _handlers.await_keys(asyncio.current_task())

    assert asyncio.run(main()) is None
    assert _handlers.await_keys(object()) is None
    assert _handlers.except_site(None) is None
