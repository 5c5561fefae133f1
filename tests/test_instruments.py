"""The instruments registry: the wings listen to the core through it (taskwatch/_core/_instruments.py)."""

from __future__ import annotations

import asyncio
import logging
import types

from taskwatch._core import _guard, _hooks
from taskwatch._core._findings import Finding
from taskwatch._core._instruments import Instruments

from .conftest import run


def test_only_the_hooks_an_instrument_has_are_called():
    seen = []
    instruments = Instruments()
    instruments.add(types.SimpleNamespace(finding=lambda f: seen.append(("a", f))))
    instruments.add(object())  # no hooks at all: harmless
    instruments.add(types.SimpleNamespace(stats=lambda out: out.update(b=1)))
    assert instruments.has("finding") and not instruments.has("after_fork")
    instruments.call("finding", "F")
    out: dict = {}
    instruments.call("stats", out)
    instruments.call("after_fork")
    assert seen == [("a", "F")] and out == {"b": 1}


def test_adding_twice_calls_once_and_removing_stops_the_calls():
    seen = []
    sink = types.SimpleNamespace(finding=seen.append)
    instruments = Instruments()
    instruments.add(sink)
    instruments.add(sink)
    instruments.call("finding", 1)
    instruments.remove(sink)
    instruments.remove(sink)  # absent: harmless
    instruments.call("finding", 2)
    assert seen == [1] and sink not in instruments


def test_a_hook_that_raises_is_counted_once_and_its_instrument_dropped():
    _guard.reset()
    seen = []

    class Broken:
        def finding(self, finding):
            raise RuntimeError("sink bug")

        def stats(self, out):
            seen.append("broken stats")

    instruments = Instruments()
    broken = Broken()
    instruments.add(broken)
    instruments.add(types.SimpleNamespace(finding=seen.append))
    before = _guard.count
    instruments.call("finding", 1)  # the next instrument still gets it
    instruments.call("finding", 2)
    instruments.call("stats", {})
    assert seen == [1, 2]
    assert _guard.count == before + 1
    assert broken not in instruments


def test_per_task_hooks_one_owner_keeps_its_gate_several_run_in_turn():
    _guard.reset()
    calls = []
    gate = ("gate",)
    spans = types.SimpleNamespace(task_created=lambda rec, ctx: calls.append(("spans", rec)),
                                  task_ended=lambda rec, task: calls.append(("spans end", rec)),
                                  task_gate=lambda: gate)
    changes = []
    instruments = Instruments(lambda: changes.append(instruments.task_hooks()))
    assert instruments.task_hooks() == (None, None, None)
    instruments.add(spans)
    created, ended, got_gate = instruments.task_hooks()
    assert created is spans.task_created and ended is spans.task_ended and got_gate is gate

    def failing(rec, task):
        raise RuntimeError("second instrument bug")

    other = types.SimpleNamespace(task_ended=failing)
    instruments.add(other)
    created, ended, got_gate = instruments.task_hooks()
    assert got_gate is None  # the gate says what one instrument needs; two need every task
    before = _guard.count
    ended("rec", "task")
    ended("rec2", "task")
    assert calls == [("spans end", "rec"), ("spans end", "rec2")]
    assert _guard.count == before + 2  # an error on the hot path is counted; the hook stays
    assert len(changes) == 2
    instruments.remove(other)
    instruments.remove(spans)
    assert instruments.task_hooks() == (None, None, None) and len(changes) == 4


def test_the_installed_state_calls_its_instruments(watch, loop_kind):
    """Through install(): per-task hooks on the hot path (C and Python), loops, findings, stats;
    removing the instrument takes its per-task hooks off the loops that are running."""
    watch(watchdog=False)
    state = _hooks.current()
    state.precise_ends = True  # as OpenTelemetry does: tasks end in a done callback (task_ended)
    events: list = []

    class Recorder:
        def task_created(self, rec, context):
            events.append(("created", rec.coro_name.rpartition(".")[2]))

        def task_ended(self, rec, task):
            events.append(("ended", rec.coro_name.rpartition(".")[2]))

        def loop_attached(self, probe, loop):
            events.append(("loop", probe.loop_ref() is loop))

        def finding(self, finding):
            events.append(("finding", finding.kind))

        def stats(self, out):
            out["recorder"] = True

    recorder = Recorder()
    state.instruments.add(recorder)

    async def child():
        await asyncio.sleep(0)

    async def main():
        await asyncio.create_task(child())
        state.instruments.remove(recorder)
        await asyncio.create_task(child())

    run(main(), loop_kind)
    assert ("loop", True) in events
    assert events.count(("created", "child")) == 1
    assert events.count(("ended", "child")) == 1
    state.emit(Finding(kind="leaked-task", message="made up"))
    assert ("finding", "leaked-task") not in events  # removed
    state.instruments.add(recorder)
    state.emit(Finding(kind="leaked-task", message="made up"))
    assert ("finding", "leaked-task") in events
    assert state.stats()["recorder"] is True


def test_findings_are_logged_by_the_log_sink_ten_per_site(watch, caplog):
    watch(watchdog=False, log=True)
    state = _hooks.current()
    with caplog.at_level(logging.WARNING, logger="taskwatch"):
        for _ in range(12):
            state.emit(Finding(kind="leaked-task", message="made up"))
    records = [r for r in caplog.records if r.name == "taskwatch"]
    assert len(records) == 10
    assert records[-1].getMessage().endswith("(further findings of this kind at this site are only counted)")
    assert records[0].taskwatch["kind"] == "leaked-task"
    assert len(state.findings) == 12
