"""Internal errors are counted and logged, never raised; a signal's exception still gets through."""

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from taskwatch._core import _guard


def test_an_internal_error_is_counted_not_raised(watch):
    watch(watchdog=False)
    before = _guard.count
    try:
        raise RuntimeError("taskwatch bug")
    except BaseException:
        _guard.internal_error("test place")
    assert _guard.count == before + 1


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_a_signal_handlers_exception_goes_on_into_the_program(watch, exc):
    """Ctrl-C, or sys.exit() in a SIGTERM handler, that lands while taskwatch's code runs on the
    main thread is the program's: it goes on (not counted). On another thread it cannot come
    from a signal: counted there like any other error."""
    watch(watchdog=False)
    with pytest.raises(exc):
        try:
            raise exc()
        except BaseException:
            _guard.internal_error("test place")
    before = _guard.count

    def elsewhere():
        try:
            raise exc()
        except BaseException:
            _guard.internal_error("test place")

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert _guard.count == before + 1


def test_ctrl_c_at_a_loop_runs_end_is_not_lost(tmp_path):
    """The end of a loop's run waits for a look of taskwatch's thread in progress (so a block of
    that run is reported first): a Ctrl-C arriving during that wait reaches the program."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent("""
        import asyncio, os, signal, threading, time
        import taskwatch
        from taskwatch._watchdog import _watch as _watchdog

        taskwatch.install(log=False)
        look = _watchdog.LoopWatch._look

        def slow_look(self, now, frames):  # a look busy closing a block, say
            look(self, now, frames)
            time.sleep(0.5)

        _watchdog.LoopWatch._look = slow_look
        loop = asyncio.new_event_loop()

        async def job():
            await asyncio.sleep(0.3)

        threading.Timer(0.45, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            loop.run_until_complete(job())
            time.sleep(1.0)
            print("lost")
        except KeyboardInterrupt:
            print("delivered")
    """))
    # SIGINT as Python sets it up, whatever this process inherited
    out = subprocess.run([sys.executable, "-c", "import os, signal, sys; "
                          "signal.signal(signal.SIGINT, signal.default_int_handler); "
                          "sys.argv = sys.argv[1:]; exec(open(sys.argv[0]).read())", str(script)],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "delivered", out.stderr
