"""A measured block becomes a finding only when it is a claim about the program's code."""

import threading

from taskwatch._watchdog import _blocks
from taskwatch._core._state import State


class _Watch:
    """What blocked_loop reads of the watchdog's LoopWatch."""

    def __init__(self, state, threshold=0.1):
        self.state = state
        self.threshold = threshold
        self.probe = None
        self.lock = threading.Lock()


def _state():
    from taskwatch._core._options import Options

    return State(Options())


def test_a_block_the_machine_starved_is_counted_not_reported(watch):
    """0.2 s of wall time with the loop thread runnable 90% of it but on a CPU only 0.02 s: on a
    free machine the step takes 0.02 s. No finding (it would blame the program's line for the
    machine's load); the state counts it and the block statistics keep it."""
    watch(watchdog=False)
    state = _state()
    w = _Watch(state)
    assert _blocks.blocked_loop(w, None, 0.2, 0.1, 0.9, 0.0, 0.2) is None
    assert state.stats()["starved_blocks"] == 1


def test_a_cpu_bound_step_on_a_busy_machine_is_still_a_block(watch):
    """The step used 0.16 s of CPU (over the threshold) even though the machine gave it only 40%
    of the 0.4 s it held the loop: still the program's block, named as computing, for the whole
    time the loop was held."""
    watch(watchdog=False)
    state = _state()
    w = _Watch(state)
    finding = _blocks.blocked_loop(w, None, 0.4, 0.4, 1.0, 0.0, 0.4)
    assert finding is not None and "computing" in finding.message
    assert "the machine's other work took the rest of the CPU" in finding.message
    assert finding.data["duration_s"] == 0.4
    assert state.stats()["starved_blocks"] == 0


def test_a_step_short_on_a_free_machine_is_starved_whatever_its_cpu(watch):
    """0.08 s of CPU in 0.2 s held, runnable all along: on a free machine the step takes 0.08 s,
    under the 0.1 s threshold. Under a load of four busy processes on two cores (seen in CI: a
    0.421 s "block" of 0.05 s CPU at a uvicorn shutdown) that is the machine's doing: counted."""
    watch(watchdog=False)
    state = _state()
    assert _blocks.blocked_loop(_Watch(state), None, 0.2, 0.4, 1.0, 0.0, 0.2) is None
    assert _blocks.blocked_loop(_Watch(state), None, 0.421, 0.119, 0.95, 0.0, 0.421) is None
    assert state.stats()["starved_blocks"] == 2


def test_a_step_partly_asleep_on_a_busy_machine_is_a_block(watch):
    """0.05 s of CPU and 0.1 s asleep in a blocking call, plus 0.2 s waiting for a CPU: on a
    free machine 0.15 s, over the threshold: a block (its CPU time alone would not say so)."""
    watch(watchdog=False)
    state = _state()
    finding = _blocks.blocked_loop(_Watch(state), None, 0.35, 0.05 / 0.35, 0.25 / 0.35, 0.0, 0.35)
    assert finding is not None
    assert state.stats()["starved_blocks"] == 0


def test_a_sleeping_step_is_a_block(watch):
    """Not runnable (time.sleep, a blocking read): a block whatever the CPU."""
    watch(watchdog=False)
    state = _state()
    finding = _blocks.blocked_loop(_Watch(state), None, 0.2, 0.0, 0.0, 0.0, 0.2)
    assert finding is not None and "waiting in a blocking call" in finding.message


def test_a_block_whose_cpu_time_is_unknown_is_not_called_starved(watch):
    """Without the thread's CPU clock (cpu_share None) a runnable step cannot be judged starved:
    it stays a finding."""
    watch(watchdog=False)
    state = _state()
    assert _blocks.blocked_loop(_Watch(state), None, 0.2, None, 0.9, 0.0, 0.2) is not None
    assert state.stats()["starved_blocks"] == 0


def test_waiting_for_a_started_thread_to_run_is_the_machines_doing(watch):
    """aiosqlite starts a thread per connection on the loop thread; Thread.start waits until the
    new thread runs, microseconds on a free machine. A 0.118 s wait there (seen in CI under four
    busy processes on two cores) is scheduling, not the program's line: counted, no finding.
    The same wait elsewhere (a plain blocking call) stays a block."""
    import threading as threading_module

    from taskwatch._watchdog._blocks import Block as _Block

    watch(watchdog=False)
    state = _state()
    threading_py = threading_module.__file__
    app = ("/srv/app/db.py", 30, "low_stock")
    in_start = (app, ("/venv/aiosqlite/core.py", 177, "Connection.__await__"),
                (threading_py, 997, "Thread.start"), (threading_py, 655, "Event.wait"))
    block = _Block(0.0, 0.05)
    block.samples = [in_start, in_start[:2] + in_start[2:3]]
    assert _blocks.blocked_loop(_Watch(state), block, 0.118, 0.0, 0.0, 0.0, 0.118) is None
    assert state.stats()["starved_blocks"] == 1
    elsewhere = _Block(0.0, 0.05)
    elsewhere.samples = [(app, (threading_py, 655, "Event.wait"))] * 2
    assert _blocks.blocked_loop(_Watch(state), elsewhere, 0.118, 0.0, 0.0, 0.0, 0.118) is not None
