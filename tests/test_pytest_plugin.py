"""The pytest plugin, end to end: real pytest sessions in subprocesses (pytester), one per scenario.

Each scenario runs a small suite with pytest-asyncio (strict or auto), anyio's plugin, uvloop or
plain ``asyncio.run``, and checks outcomes and the failure text (the user's file:line). Timings are
generous so that a loaded 2-core machine never flakes: blocks of 0.6 s against a 0.25 s threshold
(a clean test's loop step descheduled for 0.1 s on a busy machine must not count as a block).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import time

import pytest

import taskwatch

pytest_plugins = ["pytester"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(taskwatch.__file__)))

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
taskwatch_block_threshold = 0.25
{extra}
"""


def _entry_point_installed() -> bool:
    return any(ep.name == "taskwatch" and ep.value == "taskwatch.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


# Installed (pip install -e .): the pytest11 entry point loads the plugin; from a checkout on
# PYTHONPATH it must be named with -p.
PLUGIN_ARGS = [] if _entry_point_installed() else ["-p", "taskwatch.pytest_plugin"]


def prepare(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Subprocess runs import this checkout's taskwatch and ignore the caller's TASKWATCH_*."""
    for name in list(os.environ):
        if name.startswith("TASKWATCH_") or name == "PYTEST_DISABLE_PLUGIN_AUTOLOAD":
            monkeypatch.delenv(name)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, *paths]))
    return pytester


@pytest.fixture
def tw(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return prepare(pytester, monkeypatch)


def run(pytester: pytest.Pytester, *args: str, ini: str = "") -> pytest.RunResult:
    text = INI.format(extra=ini)
    if ini.count("asyncio_default_fixture_loop_scope"):
        text = text.replace("asyncio_default_fixture_loop_scope = function\n", "", 1)
    pytester.makefile(".ini", pytest=text)
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", "-rA", *args,
                                         timeout=120)


def outcomes(result: pytest.RunResult) -> dict[str, list[str]]:
    """Test name -> the outcomes of its phases as listed by -rA (PASSED, FAILED, ERROR...)."""
    out: dict[str, list[str]] = {}
    for line in result.outlines:
        match = re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) \S*?::(\S+)", line)
        if match:
            out.setdefault(match.group(2), []).append(match.group(1))
    return out


def failed(result: pytest.RunResult) -> set[str]:
    return {name for name, states in outcomes(result).items() if {"FAILED", "ERROR"} & set(states)}


def passed(result: pytest.RunResult) -> set[str]:
    return {name for name, states in outcomes(result).items()
            if "PASSED" in states and not {"FAILED", "ERROR"} & set(states)}


BUGGY = '''
import asyncio
import time

import pytest


async def worker():
    await asyncio.sleep(30)


async def boom():
    raise ValueError("nobody saw this")


async def fail_after(delay, text):
    await asyncio.sleep(delay)
    raise ValueError(text)


@pytest.mark.asyncio
async def test_leaks_task():
    asyncio.create_task(worker())  # LEAK
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_unretrieved():
    asyncio.create_task(boom())  # UNRETRIEVED
    await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_never_awaited():
    worker()  # NEVER
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_swallowed_cancel():
    async def stubborn():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "ignored"

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()  # CANCEL
    await task


@pytest.mark.asyncio
async def test_blocks_loop():
    time.sleep(0.6)  # BLOCK
    await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_lost_in_gather():
    with pytest.raises(ValueError, match="first"):
        await asyncio.gather(fail_after(0, "first"), fail_after(0.01, "second"))  # LOST
    await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_clean_task():
    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_cancelled_not_awaited():
    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    task.cancel()  # still being cancelled when the loop closes: ending, not leaked


@pytest.mark.asyncio
async def test_ignores_cancel():
    async def deaf():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(30)

    task = asyncio.create_task(deaf())  # DEAF
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_clean_taskgroup():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(asyncio.sleep(0.01))


def test_sync():
    assert True
'''


def line_of(source: str, marker: str) -> int:
    """The line of ``# marker`` in the file pytester writes (it drops leading blank lines)."""
    for number, text in enumerate(source.lstrip("\n").splitlines(), 1):
        if f"# {marker}" in text:
            return number
    raise AssertionError(marker)


def test_inactive_unless_enabled(tw: pytest.Pytester) -> None:
    """Installed but not enabled: the buggy suite passes as before and nothing is installed."""
    tw.makepyfile(test_buggy=BUGGY + '''

def test_taskwatch_not_installed():
    import taskwatch
    assert not taskwatch.is_installed()
''')
    result = run(tw)
    assert failed(result) == set(), result.stdout.str()
    assert "test_taskwatch_not_installed" in passed(result)
    assert "taskwatch summary" not in result.stdout.str()
    # --no-taskwatch wins over the ini option
    result = run(tw, "--no-taskwatch", ini="taskwatch = true")
    assert failed(result) == set(), result.stdout.str()


def test_every_kind_fails_its_test_and_names_the_users_line(tw: pytest.Pytester) -> None:
    """pytest-asyncio strict mode: each buggy test fails with its finding; clean tests pass."""
    tw.makepyfile(test_buggy=BUGGY)
    report = tw.path / "report.json"
    result = run(tw, "--taskwatch", f"--taskwatch-json={report}")
    text = result.stdout.str()
    assert failed(result) == {"test_leaks_task", "test_unretrieved", "test_never_awaited",
                              "test_swallowed_cancel", "test_blocks_loop", "test_lost_in_gather",
                              "test_ignores_cancel"}, text
    assert passed(result) == {"test_clean_task", "test_cancelled_not_awaited",
                              "test_clean_taskgroup", "test_sync"}, text
    # leaks surface when pytest-asyncio's runner closes the loop: at teardown
    assert outcomes(result)["test_leaks_task"] == ["PASSED", "ERROR"]
    assert outcomes(result)["test_unretrieved"] == ["FAILED"]
    for kind, marker in [("leaked-task", "LEAK"), ("unretrieved-exception", "UNRETRIEVED"),
                         ("never-awaited", "NEVER"), ("swallowed-cancel", "CANCEL"),
                         ("blocked-loop", "BLOCK"), ("lost-exception", "LOST"),
                         ("leaked-task", "DEAF")]:
        where = f"test_buggy.py:{line_of(BUGGY, marker)}"
        assert re.search(rf"\[{kind}\] .*{re.escape(where)}", text), (kind, where, text)
    # the short summary names the kind (and the line, when the terminal is wide enough)
    result.stdout.fnmatch_lines(["ERROR *test_leaks_task - taskwatch: 1 leaked-task*"])
    # the session summary: counts by kind, slowest blocks
    result.stdout.fnmatch_lines([
        "*= taskwatch summary =*",
        "taskwatch: 11 tests watched, 7 with findings (7 failed)",
        "findings by kind: 2 leaked-task, 1 blocked-loop, *",
        "slowest event-loop blocks:",
        f"  0.* s  test_buggy.py::test_blocks_loop at test_buggy.py:{line_of(BUGGY, 'BLOCK')} in *",
    ])
    data = json.loads(report.read_text())
    by_test = {entry["nodeid"].split("::")[1]: [f["kind"] for f in entry["findings"]]
               for entry in data["tests"]}
    assert by_test["test_leaks_task"] == ["leaked-task"]
    assert by_test["test_blocks_loop"] == ["blocked-loop"]
    assert data["tests_watched"] == 11


def test_ini_option_and_warn_mode(tw: pytest.Pytester) -> None:
    tw.makepyfile(test_buggy=BUGGY)
    result = run(tw, "-k", "leaks_task or unretrieved or clean",
                 ini="taskwatch = true\ntaskwatch_mode = warn")
    assert failed(result) == set(), result.stdout.str()
    result.stdout.fnmatch_lines([
        "*TaskwatchWarning: taskwatch: 1 finding in test_buggy.py::test_leaks_task*",
        "*TaskwatchWarning: taskwatch: 1 finding in test_buggy.py::test_unretrieved*",
        "taskwatch: 4 tests watched, 2 with findings (2 warned)",
    ])
    # -W error turns the warning back into a failure
    result = run(tw, "-k", "unretrieved", "-W", "error::taskwatch.pytest_plugin.TaskwatchWarning",
                 ini="taskwatch = true\ntaskwatch_mode = warn")
    assert failed(result) == {"test_unretrieved"}, result.stdout.str()


def test_marker_enables_per_test_class_and_module(tw: pytest.Pytester) -> None:
    tw.makepyfile(
        test_marked='''
        import asyncio
        import pytest

        async def worker():
            await asyncio.sleep(30)

        @pytest.mark.asyncio
        @pytest.mark.taskwatch
        async def test_marked_leak():
            asyncio.create_task(worker())

        @pytest.mark.asyncio
        async def test_unmarked_leak():
            asyncio.create_task(worker())

        @pytest.mark.taskwatch
        class TestClass:
            def test_leak_in_class(self):
                async def main():
                    asyncio.create_task(worker())
                asyncio.run(main())

            @pytest.mark.taskwatch(enabled=False)
            def test_opted_out(self):
                async def main():
                    asyncio.create_task(worker())
                asyncio.run(main())
        ''',
        test_module_marked='''
        import asyncio
        import pytest

        pytestmark = [pytest.mark.asyncio, pytest.mark.taskwatch(mode="warn")]

        async def forever():
            await asyncio.sleep(30)

        async def test_module_leak():
            asyncio.create_task(forever())
        ''',
    )
    result = run(tw)
    text = result.stdout.str()
    assert failed(result) == {"test_marked_leak", "TestClass::test_leak_in_class"}, text
    assert {"test_unmarked_leak", "TestClass::test_opted_out", "test_module_leak"} <= passed(result), text
    assert "TaskwatchWarning: taskwatch: 1 finding in test_module_marked.py::test_module_leak" in text
    result = run(tw, "--no-taskwatch")
    assert failed(result) == set(), result.stdout.str()


ALLOW = '''
import asyncio
import time

import pytest

from helpers import start_poller

pytestmark = pytest.mark.taskwatch(allow=["blocked-loop"])


async def heartbeat():
    await asyncio.sleep(30)


async def other():
    await asyncio.sleep(30)


def test_block_allowed_by_module():
    async def main():
        time.sleep(0.6)
        await asyncio.sleep(0.02)
    asyncio.run(main())


@pytest.mark.taskwatch(allow="leaked-task")
def test_leak_allowed_by_test():
    async def main():
        asyncio.create_task(heartbeat())
    asyncio.run(main())


@pytest.mark.taskwatch(ignore=["helpers.py"])
def test_ignored_by_site():
    async def main():
        start_poller()
    asyncio.run(main())


@pytest.mark.taskwatch(ignore=["test_allow.heartbeat"])
def test_ignored_by_coroutine_name():
    async def main():
        asyncio.create_task(heartbeat())
    asyncio.run(main())


@pytest.mark.taskwatch(ignore=["test_allow.heartbeat"])
def test_other_coroutine_not_ignored():
    async def main():
        asyncio.create_task(other())  # NOT-IGNORED
    asyncio.run(main())


def test_ignored_from_command_line():
    async def main():
        asyncio.create_task(other())  # CLI-IGNORED
    asyncio.run(main())


def test_allowed_from_command_line():
    other()
'''


def test_allow_and_ignore(tw: pytest.Pytester) -> None:
    tw.makepyfile(helpers='''
        import asyncio

        async def _poll():
            await asyncio.sleep(30)

        def start_poller():
            return asyncio.create_task(_poll())
    ''', test_allow=ALLOW)
    result = run(tw, "--taskwatch", f"--taskwatch-ignore=test_allow.py:{line_of(ALLOW, 'CLI-IGNORED')}",
                 "--taskwatch-allow=never-awaited,orphaned-task", "-W", "ignore::RuntimeWarning")
    text = result.stdout.str()
    assert failed(result) == {"test_other_coroutine_not_ignored"}, text
    assert f"test_allow.py:{line_of(ALLOW, 'NOT-IGNORED')} in " in text
    result.stdout.fnmatch_lines(["allowed: 1 blocked-loop, 1 leaked-task, 1 never-awaited; "
                                 "ignored: 3 leaked-task"])
    # a bad kind is a usage error naming the marker
    tw.makepyfile(test_bad='''
        import pytest

        @pytest.mark.taskwatch(allow=["leaked-tasks"])
        def test_x():
            pass
    ''')
    result = run(tw, "test_bad.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*@pytest.mark.taskwatch on test_bad.py::test_x: allow must be*"])


SESSION_LOOP = '''
import asyncio
import pytest
import pytest_asyncio


async def serve(name):
    while True:
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(scope="module")
async def server():
    task = asyncio.create_task(serve("module"))  # a wider fixture: never this test's leak
    yield task
    task.cancel()


@pytest_asyncio.fixture
async def leaky_fixture():
    yield asyncio.create_task(serve("function"))  # FIXTURE-LEAK


async def test_uses_server(server):
    await asyncio.sleep(0.02)


async def test_leaves_task_running(server):
    asyncio.create_task(serve("test"))  # SESSION-LEAK


async def test_task_finishes_within_grace():
    async def quick():
        await asyncio.sleep(0.02)
    asyncio.create_task(quick())


async def test_fixture_leak(leaky_fixture):
    pass


@pytest.mark.taskwatch(ignore_fixtures=True)
async def test_fixture_leak_ignored(leaky_fixture):
    pass


async def test_clean(server):
    await asyncio.sleep(0)
'''


def test_session_loop_pending_tasks_grace_and_fixtures(tw: pytest.Pytester) -> None:
    """A loop that stays open (session scope, auto mode): pending tasks are retried, then leaks."""
    tw.makepyfile(test_session=SESSION_LOOP)
    result = run(tw, "--taskwatch", ini="asyncio_mode = auto\n"
                 "asyncio_default_test_loop_scope = session\n"
                 "asyncio_default_fixture_loop_scope = session\n")
    text = result.stdout.str()
    assert failed(result) == {"test_leaves_task_running", "test_fixture_leak"}, text
    assert {"test_uses_server", "test_task_finishes_within_grace", "test_fixture_leak_ignored",
            "test_clean"} <= passed(result), text
    assert re.search(r"\[leaked-task\] .*test_session\.py:%d in test_leaves_task_running.*was still "
                     r"pending when the test ended" % line_of(SESSION_LOOP, "SESSION-LEAK"), text)
    assert f"test_session.py:{line_of(SESSION_LOOP, 'FIXTURE-LEAK')} in leaky_fixture" in text
    # the ignored fixture's task is reported when the session loop closes, outside any test
    result.stdout.fnmatch_lines(["outside any test: 1 finding(s) (1 leaked-task)*"])


ANYIO = '''
import asyncio
import time

import anyio
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param(("asyncio", {}), id="asyncio"),
                        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
def anyio_backend(request):
    return request.param


async def worker():
    await anyio.sleep(30)


@pytest.fixture
async def service():
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        yield
        tg.cancel_scope.cancel()


async def test_clean(service):
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0.01)


async def test_leak():
    asyncio.get_running_loop().create_task(worker())  # ANYIO-LEAK
    await anyio.sleep(0)


async def test_block():
    time.sleep(0.6)  # ANYIO-BLOCK
    await anyio.sleep(0.02)


async def test_loop_kind(anyio_backend):
    import uvloop
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == bool(anyio_backend[1])
'''


def test_anyio_plugin_on_asyncio_and_uvloop(tw: pytest.Pytester) -> None:
    pytest.importorskip("uvloop")
    tw.makepyfile(test_anyio=ANYIO)
    result = run(tw, "--taskwatch", "-p", "no:asyncio")
    text = result.stdout.str()
    assert failed(result) == {"test_leak[asyncio]", "test_leak[uvloop]", "test_block[asyncio]",
                              "test_block[uvloop]"}, text
    assert {"test_clean[asyncio]", "test_clean[uvloop]", "test_loop_kind[asyncio]",
            "test_loop_kind[uvloop]"} <= passed(result), text
    assert text.count(f"test_anyio.py:{line_of(ANYIO, 'ANYIO-LEAK')} in test_leak") >= 2
    assert text.count(f"test_anyio.py:{line_of(ANYIO, 'ANYIO-BLOCK')} in test_block") >= 2


UVLOOP = '''
import asyncio
import sys

import pytest
import uvloop


async def worker():
    await asyncio.sleep(30)


async def test_runs_on_uvloop():
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_leak_on_uvloop():
    asyncio.create_task(worker())  # UV-LEAK
    await asyncio.sleep(0)


def test_uvloop_run():
    async def main():
        asyncio.create_task(worker())  # UV-RUN
    uvloop.run(main())


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_with_uvloop_factory():
    async def main():
        asyncio.create_task(worker())  # UV-FACTORY
    asyncio.run(main(), loop_factory=uvloop.new_event_loop)
'''


def test_uvloop_with_pytest_asyncio_auto_mode(tw: pytest.Pytester) -> None:
    pytest.importorskip("uvloop")
    tw.makeconftest('''
        import pytest
        import uvloop

        @pytest.fixture(scope="session")
        def event_loop_policy():
            return uvloop.EventLoopPolicy()
    ''')
    tw.makepyfile(test_uv=UVLOOP)
    result = run(tw, "--taskwatch", "-W", "ignore::DeprecationWarning", ini="asyncio_mode = auto")
    text = result.stdout.str()
    expected = {"test_leak_on_uvloop", "test_uvloop_run"}
    if sys.version_info >= (3, 12):
        expected.add("test_asyncio_run_with_uvloop_factory")
    assert failed(result) == expected, text
    assert "test_runs_on_uvloop" in passed(result), text
    for marker in ("UV-LEAK", "UV-RUN") + (("UV-FACTORY",) if sys.version_info >= (3, 12) else ()):
        assert f"test_uv.py:{line_of(UVLOOP, marker)} in " in text, (marker, text)


PLAIN = '''
import asyncio


async def worker():
    await asyncio.sleep(30)


def test_asyncio_run_leak():
    async def main():
        asyncio.create_task(worker())  # RUN-LEAK
        await asyncio.sleep(0)
    asyncio.run(main())


def test_asyncio_run_clean():
    async def main():
        task = asyncio.create_task(worker())
        await asyncio.sleep(0)
        task.cancel()
    asyncio.run(main())


def test_loop_left_open_with_pending_task():
    loop = asyncio.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.create_task(worker())  # OPEN-LOOP
    test_loop_left_open_with_pending_task.loop = loop  # still open after the test


def test_cancel_requested_then_runner_closes():
    with asyncio.Runner() as runner:
        task = runner.get_loop().create_task(worker())
        runner.run(asyncio.sleep(0))
        task.cancel()  # the runner's shutdown completes the cancellation: not a leak


def test_cancel_requested_then_loop_closed():
    loop = asyncio.new_event_loop()
    task = loop.create_task(worker())  # NEVER-CANCELLED
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel()
    loop.close()  # the cancellation never runs: leaked


def test_runner_errors_in_background():
    async def boom():
        raise KeyError("lost key")

    async def main():
        asyncio.create_task(boom())  # RUN-UNRETRIEVED
        await asyncio.sleep(0.01)
    asyncio.run(main())
'''


def test_plain_tests_calling_asyncio_run(tw: pytest.Pytester) -> None:
    tw.makepyfile(test_plain=PLAIN)
    result = run(tw, "--taskwatch", "-p", "no:asyncio", "-p", "no:anyio")
    text = result.stdout.str()
    assert failed(result) == {"test_asyncio_run_leak", "test_loop_left_open_with_pending_task",
                              "test_runner_errors_in_background",
                              "test_cancel_requested_then_loop_closed"}, text
    assert {"test_asyncio_run_clean", "test_cancel_requested_then_runner_closes"} <= passed(result), text
    result.stdout.fnmatch_lines(["*1 task(s) still being cancelled at loop close (not leaks)*"])
    for marker in ("RUN-LEAK", "OPEN-LOOP", "RUN-UNRETRIEVED", "NEVER-CANCELLED"):
        assert f"test_plain.py:{line_of(PLAIN, marker)} in " in text, (marker, text)
    assert "KeyError: 'lost key'" in text


CLEAN = '''
import asyncio

import anyio
import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def resource():
    task = asyncio.create_task(asyncio.sleep(30))
    yield task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("n", range(40))
@pytest.mark.asyncio
async def test_async(n, resource):
    async with asyncio.TaskGroup() as tg:
        for _ in range(3):
            tg.create_task(asyncio.sleep(0))
    assert not resource.done()


@pytest.mark.parametrize("n", range(20))
@pytest.mark.anyio
async def test_anyio(n):
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0)


@pytest.mark.parametrize("n", range(20))
def test_run(n):
    async def main():
        await asyncio.gather(*(asyncio.sleep(0) for _ in range(3)))
    asyncio.run(main())


@pytest.mark.parametrize("n", range(40))
def test_sync(n):
    assert n >= 0


@pytest.fixture
def anyio_backend():
    return "asyncio"
'''


def test_clean_suite_passes_unchanged_and_cheaply(tw: pytest.Pytester) -> None:
    """The same outcomes with and without the plugin, and little time added."""
    tw.makepyfile(test_clean=CLEAN)
    started = time.perf_counter()
    plain = run(tw)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    watched = run(tw, "--taskwatch")
    watched_s = time.perf_counter() - started
    assert plain.parseoutcomes() == watched.parseoutcomes() == {"passed": 120}, watched.stdout.str()
    watched.stdout.fnmatch_lines(["taskwatch: 120 tests watched, no findings"])
    match = re.search(r"taskwatch: (\d+) tasks seen, ([\d.]+) s spent in end-of-test checks",
                      watched.stdout.str())
    assert match, watched.stdout.str()
    assert int(match.group(1)) >= 40 * 4
    # measured by the plugin itself: its end-of-test work (gc, pending scan) per test
    assert float(match.group(2)) / 120 < 0.01, match.group(0)
    # whole-run wall time, with a wide margin for a loaded machine (process start dominates)
    assert watched_s < plain_s * 2 + 3.0, (plain_s, watched_s)


def test_gc_pauses_and_starved_blocks_do_not_fail_a_test() -> None:
    """A block that is mostly the loop thread's garbage collection is a property of the heap, and
    one where a busy machine gave the runnable loop thread little CPU a property of the machine:
    neither fails a test (judged from the finding's measured figures)."""

    from taskwatch._pytest import _plugin as pytest_plugin
    from taskwatch._watchdog._blocks import starved
    from taskwatch._core._findings import Finding

    def block(duration, gc_s, cpu_s, runnable):
        return Finding(kind="blocked-loop", message="", task=None,
                       data={"duration_s": duration, "gc_s": gc_s, "cpu_s": cpu_s,
                             "runnable_share": runnable})

    assert pytest_plugin._mostly_gc(block(0.4, 0.3, 0.4, 1.0))
    assert not pytest_plugin._mostly_gc(block(0.4, 0.1, 0.4, 1.0))
    # starved blocks are no findings at all (the watchdog's rule, for every sink alike)
    assert starved(0.3, 0.1, 0.9, 0.1)  # runnable, little CPU: 0.06 s of its own
    assert not starved(0.35, 1.0, 1.0, 0.1)  # the test computed
    assert not starved(0.3, 0.0, 0.0, 0.1)  # the test slept
    assert not starved(0.3, 0.03, None, 0.1)  # not measured


def test_a_blocking_sleep_while_another_thread_collects_fails(tw: pytest.Pytester) -> None:
    """Collections in another thread are not the loop thread's: a blocking sleep stays a block."""
    tw.makepyfile(test_gc='''
import asyncio, gc, threading, time
import pytest


class Node:
    def __init__(self):
        self.me = self


@pytest.mark.asyncio
async def test_sleeps_while_another_thread_collects():
    junk = [Node() for _ in range(1_000_000)]
    thread = threading.Thread(target=gc.collect)
    await asyncio.sleep(0.01)
    thread.start()
    time.sleep(0.6)  # BLOCK
    thread.join()
    del junk
''')
    result = run(tw, "--taskwatch")
    text = result.stdout.str()
    assert failed(result) == {"test_sleeps_while_another_thread_collects"}, text
    assert "waiting in a blocking call" in text, text


def test_leak_in_a_failing_test_makes_no_claim_it_returned(tw: pytest.Pytester) -> None:
    """pytest-asyncio closes its Runner with __exit__(None, None, None) whatever the test did:
    the leak report must not say the main coroutine returned."""
    tw.makepyfile(test_leak='''
import asyncio
import pytest


async def worker():
    await asyncio.sleep(10)


@pytest.mark.asyncio
async def test_fails_and_leaks():
    asyncio.ensure_future(worker())
    await asyncio.sleep(0)
    assert False
''')
    result = run(tw, "--taskwatch")
    text = result.stdout.str()
    assert "[leaked-task]" in text, text
    assert "had returned" not in text, text


def test_full_collection_only_while_a_task_of_the_test_is_open(monkeypatch) -> None:
    """A full collection costs tens of milliseconds a test on a loaded machine (a 1 s suite took
    25-40% longer): the young generations first, and the full one only if a task of the test is
    still neither ended nor freed after them. Counters are (created, closed, failed)."""
    from taskwatch._pytest import _watch as watch_

    calls = []
    monkeypatch.setattr(watch_.gc, "collect", lambda *generation: calls.append(generation) or 0)

    def run_(before, after, reread=None, policy="auto"):
        calls.clear()
        full = watch_.collect_garbage(policy, before, after, reread)
        return full, list(calls)

    assert run_((0, 0, 0), (3, 3, 0)) == (False, [(1,)])  # all closed
    assert run_((0, 0, 0), (3, 3, 1), lambda: (3, 3, 1)) == (False, [(1,)])  # failed, closed
    assert run_((0, 0, 0), (3, 2, 0), lambda: (3, 3, 0)) == (False, [(1,)])  # freed by the young
    assert run_((0, 0, 0), (3, 2, 0), lambda: (3, 2, 0)) == (True, [(1,), ()])  # still open
    assert run_((0, 0, 0), (3, 3, 1)) == (True, [(1,), ()])  # no second look: to be sure
    assert run_(None, None) == (True, [()])
    assert run_((0, 0, 0), (3, 3, 0), policy="always") == (True, [()])
    assert run_((0, 0, 0), (3, 2, 1), policy="never") == (False, [])
