"""Findings say what happened, even when the program's objects misbehave (issue 16).

A cancel message whose repr() raises, and leaked tasks after the main coroutine was interrupted or
failed (the texts come from taskwatch/_record.py ``_short`` and taskwatch/_hooks.py
``_shutdown_reason``).
"""

import asyncio

import pytest

import taskwatch
from taskwatch._core import _guard

from .conftest import kinds, run


class BrokenRepr:
    def __repr__(self):
        raise RuntimeError("no repr for you")


async def _swallower(started):
    started.set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        pass  # swallowed
    await asyncio.sleep(0)


def test_cancel_message_whose_repr_raises(watch, loop_kind):
    watch()

    async def main():
        started = asyncio.Event()
        task = asyncio.create_task(_swallower(started))
        await started.wait()
        task.cancel(msg=BrokenRepr())
        await task

    run(main(), loop_kind)
    assert _guard.count == 0
    assert kinds() == ["swallowed-cancel"]
    (finding,) = taskwatch.findings()
    assert finding.data["cancel"]["message"] == "<BrokenRepr object (repr() failed)>"


async def _background():
    await asyncio.sleep(10)


def _leak_message(loop_kind, ending):
    async def main():
        asyncio.create_task(_background())
        await asyncio.sleep(0)
        if ending is not None:
            raise ending

    try:
        run(main(), loop_kind)
    except BaseException as exc:
        assert type(exc) is type(ending)
    (finding,) = [f for f in taskwatch.findings() if f.kind == "leaked-task"]
    return finding.message


def test_leak_after_return_says_the_main_coroutine_returned(watch, loop_kind):
    watch()
    assert "(the main coroutine had returned)" in _leak_message(loop_kind, None)


@pytest.mark.parametrize("ending, says", [
    (KeyboardInterrupt(), "after KeyboardInterrupt (Ctrl-C or SIGINT) interrupted the main coroutine"),
    (ValueError("boom"), "after the main coroutine raised ValueError"),
])
def test_leak_after_interrupt_or_failure_says_what_happened(watch, loop_kind, ending, says):
    watch()
    message = _leak_message(loop_kind, ending)
    assert "had returned" not in message
    assert says in message
