"""install() reaches every loop, whatever starts it, and uninstall() restores everything."""

import asyncio
import sys
import textwrap
import warnings

import pytest

import taskwatch
from taskwatch._core import _hooks

from .conftest import uvloop


async def _work(n: int = 3) -> int:
    async def child(i: int) -> int:
        await asyncio.sleep(0)
        return i

    results = await asyncio.gather(*(asyncio.create_task(child(i)) for i in range(n)))
    return sum(results)


def _created() -> int:
    """Watched tasks of this module's coroutines (asyncio's own shutdown tasks not counted)."""
    return sum(1 for t in taskwatch.tasks(include_finished=True) if "_work" in t["coro"])


def test_asyncio_run(watch):
    watch()
    assert asyncio.run(_work()) == 3
    assert _created() == 4  # main + 3 children


def test_runner_default_and_loop_factory(watch):
    watch()
    with asyncio.Runner() as runner:
        runner.run(_work())
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        runner.run(_work())
    assert _created() == 8


def test_new_event_loop_run_until_complete(watch):
    watch()
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(_work()) == 3
    finally:
        loop.close()
    assert _created() == 4


def test_loop_created_before_install(watch):
    loop = asyncio.new_event_loop()
    try:
        watch()
        loop.run_until_complete(_work())
    finally:
        loop.close()
    assert _created() == 4


def test_install_inside_running_loop(watch):
    async def main():
        watch()
        await _work()

    asyncio.run(main())
    assert _created() == 3  # the main task predates install()


@pytest.mark.skipif(uvloop is None, reason="uvloop missing")
class TestUvloop:
    def test_uvloop_run(self, watch):
        watch()
        assert uvloop.run(_work()) == 3
        assert _created() == 4

    def test_uvloop_policy_and_asyncio_run(self, watch):
        watch()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            try:
                asyncio.run(_work())
            finally:
                asyncio.set_event_loop_policy(old)
        assert _created() == 4

    def test_runner_with_uvloop_factory(self, watch):
        watch()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_work())
        assert _created() == 4

    def test_uvloop_new_event_loop(self, watch):
        watch()
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(_work())
        finally:
            loop.close()
        assert _created() == 4

    def test_install_inside_running_uvloop(self, watch):
        async def main():
            watch()
            await _work()

        uvloop.run(main())
        assert _created() == 3


def test_install_twice_is_harmless(watch):
    first = watch(stack_depth=4)
    second = watch(stack_depth=9)
    assert second == first and second.stack_depth == 4
    asyncio.run(_work())
    assert _created() == 4


def test_uninstall_restores_every_hook(watch):
    import asyncio.runners as runners

    before = {name: vars(asyncio.BaseEventLoop)[name] for name in
              ("__init__", "run_forever", "run_until_complete", "set_task_factory",
               "get_task_factory", "call_exception_handler", "close")}
    cancel_all = runners._cancel_all_tasks
    meta_path = list(sys.meta_path)
    unawaited = getattr(warnings, "_warn_unawaited_coroutine", None)
    watch()
    loop = asyncio.new_event_loop()
    taskwatch.uninstall()
    try:
        assert loop.get_task_factory() is None
        assert loop._task_factory is None
    finally:
        loop.close()
    for name, func in before.items():
        assert vars(asyncio.BaseEventLoop)[name] is func
    assert runners._cancel_all_tasks is cancel_all
    assert sys.meta_path == meta_path
    assert getattr(warnings, "_warn_unawaited_coroutine", None) is unawaited
    if uvloop is not None:
        for name in ("__init__", "set_task_factory", "call_exception_handler"):
            assert name not in vars(uvloop.Loop)
    assert [t.name for t in __import__("threading").enumerate()].count("taskwatch-watchdog") == 0


def test_tasks_created_after_uninstall_are_plain(watch):
    watch()
    taskwatch.uninstall()

    async def main():
        task = asyncio.create_task(asyncio.sleep(0))
        await task
        return type(task)

    assert asyncio.run(main()) is asyncio.Task


def test_uvloop_imported_after_install_is_hooked():
    """A fresh interpreter: taskwatch must not import uvloop, and must hook it once imported."""
    import subprocess

    code = textwrap.dedent("""
        import sys, taskwatch
        taskwatch.install(log=False)
        assert 'uvloop' not in sys.modules
        import uvloop, asyncio
        async def main():
            await asyncio.create_task(asyncio.sleep(0))
        uvloop.run(main())
        print(sum(t['coro'] == '__main__.main' for t in taskwatch.tasks(True)), taskwatch.report()['loop'])
    """)
    if uvloop is None:
        pytest.skip("uvloop missing")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "uvloop"]


def test_state_is_exposed_only_while_installed(watch):
    with pytest.raises(RuntimeError, match="not installed"):
        taskwatch.findings()
    watch()
    assert _hooks.current() is not None
