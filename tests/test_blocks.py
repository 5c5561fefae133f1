"""A measured block becomes a finding only when it is a claim about the program's code."""

import threading

from taskwatch import _blocks
from taskwatch._state import State


class _Watch:
    """What blocked_loop reads of the watchdog's LoopWatch."""

    def __init__(self, state, threshold=0.1):
        self.state = state
        self.threshold = threshold
        self.probe = None
        self.lock = threading.Lock()


def _state():
    from taskwatch._options import Options

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
    """The step used 0.08 s of CPU (more than half the threshold) even though the machine gave it
    only 40% of the wall time: still the program's block, named as computing."""
    watch(watchdog=False)
    state = _state()
    w = _Watch(state)
    finding = _blocks.blocked_loop(w, None, 0.2, 0.4, 1.0, 0.0, 0.2)
    assert finding is not None and "computing" in finding.message
    assert "the machine's other work took the rest of the CPU" in finding.message
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
