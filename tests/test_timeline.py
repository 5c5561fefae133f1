"""The timeline: Chrome trace-event JSON that a trace viewer accepts, a bounded ring, and the flight
recorder's dumps on a block, on demand and on the dump signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest

import taskwatch

from .conftest import run

_PHASES = {"X", "i", "s", "f", "C", "M"}


def validate(trace: dict[str, Any]) -> dict[str, Any]:
    """Check a trace against the trace-event format the way a viewer reads it; returns its parts.

    Required fields per phase, slices (``X``) that nest on each track (no partial overlap, so the
    viewer's begin/end pairs match), timestamps in order per track, every flow with both ends and
    each end inside a slice of its track, instants and counters with their scope and values."""
    assert isinstance(trace["traceEvents"], list)
    assert trace["displayTimeUnit"] in ("ms", "ns")
    tracks: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    flows: dict[Any, dict[str, dict[str, Any]]] = defaultdict(dict)
    names: dict[tuple[int, int | None], str] = {}
    for event in trace["traceEvents"]:
        ph = event["ph"]
        assert ph in _PHASES, event
        assert isinstance(event["name"], str) and event["name"], event
        assert isinstance(event["pid"], int), event
        if ph == "M":
            assert event["name"] in ("process_name", "thread_name", "process_sort_index",
                                     "thread_sort_index"), event
            if event["name"].endswith("_name"):
                names[(event["pid"], event.get("tid"))] = event["args"]["name"]
            continue
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0, event
        if ph == "C":
            assert event["args"] and all(isinstance(v, (int, float)) for v in event["args"].values())
            continue
        assert isinstance(event["tid"], int), event
        tracks[(event["pid"], event["tid"])].append(event)
        if ph == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
        elif ph == "i":
            assert event["s"] in ("t", "p", "g"), event
        elif ph in ("s", "f"):
            assert event["id"] not in flows or ph not in flows[event["id"]], f"flow id twice: {event}"
            flows[event["id"]][ph] = event
    slices = []
    for key, events in tracks.items():
        assert (key[0], key[1]) in names, f"track {key} has no thread_name"
        stamps = [e["ts"] for e in events]
        assert stamps == sorted(stamps), f"track {key}: timestamps out of order"
        open_: list[tuple[float, float]] = []
        for e in events:
            if e["ph"] != "X":
                continue
            start, end = e["ts"], e["ts"] + e["dur"]
            while open_ and open_[-1][1] <= start:
                open_.pop()
            if open_:
                assert end <= open_[-1][1] + 1e-6, f"track {key}: {e} overlaps without nesting"
            open_.append((start, end))
            slices.append(e)
    for flow_id, ends in flows.items():
        assert set(ends) == {"s", "f"}, f"flow {flow_id} lacks an end: {ends}"
        assert ends["f"].get("bp") == "e"
        for end in ends.values():
            inside = [e for e in tracks[(end["pid"], end["tid"])]
                      if e["ph"] == "X" and e["ts"] <= end["ts"] <= e["ts"] + e["dur"]]
            assert inside, f"flow end outside every slice of its track: {end}"
    return {"slices": slices, "flows": flows, "names": names,
            "tasks": [e for e in slices if e["cat"] == "task"],
            "instants": [e for t in tracks.values() for e in t if e["ph"] == "i"],
            "counters": [e for e in trace["traceEvents"] if e["ph"] == "C"]}


async def _child(n: int) -> int:
    await asyncio.sleep(0.005 * n)
    if n == 2:
        raise ValueError("child two failed")
    return n


async def _stubborn() -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)  # cleans up, then lets the cancel through
        raise


async def _parent() -> None:
    kids = [asyncio.create_task(_child(n), name=f"child-{n}") for n in range(4)]
    await asyncio.gather(*kids, return_exceptions=True)


async def workload() -> None:
    """Nesting (parent -> children), a failure, a cancel with an arrow, a block."""
    await asyncio.create_task(_parent(), name="parent")
    victim = asyncio.create_task(_stubborn(), name="victim")
    await asyncio.sleep(0.01)
    victim.cancel("enough")
    try:
        await victim
    except asyncio.CancelledError:
        pass
    time.sleep(0.3)  # blocks the loop
    await asyncio.sleep(0)


def _trace(path: Any) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)  # type: ignore[no-any-return]


def test_timeline_of_a_workload_is_a_valid_trace(watch, loop_kind, tmp_path):
    path = tmp_path / "trace.json"
    watch(timeline=str(path), block_threshold=0.1)
    run(workload(), loop_kind)
    taskwatch.uninstall()  # writes the exit timeline
    trace = _trace(path)
    parts = validate(trace)
    tasks = {e["args"]["name"]: e for e in parts["tasks"]}
    assert {"parent", "victim", "child-0", "child-3"} <= set(tasks)
    assert tasks["child-2"]["args"]["state"] == "failed"
    assert "ValueError: child two failed" in tasks["child-2"]["args"]["exception"]
    assert tasks["victim"]["args"]["state"] == "cancelled"
    assert tasks["child-1"]["args"]["parent"] == tasks["parent"]["args"]["id"]
    assert tasks["child-1"]["args"]["created_at"].startswith(os.path.join("tests", "test_timeline.py")) \
        or "test_timeline.py" in tasks["child-1"]["args"]["created_at"]
    # the four children of one line share a site: their tracks are named after it and sit together
    child_tracks = {e["tid"] for e in parts["tasks"] if e["args"]["name"].startswith("child-")}
    assert all("_child @" in parts["names"][(1, tid)] for tid in child_tracks)
    # spawn arrows parent -> each child, a cancel arrow main -> victim
    spawns = [f for f in parts["flows"].values() if f["s"]["cat"] == "spawn"]
    assert sum(1 for f in spawns if f["s"]["tid"] == tasks["parent"]["tid"]) == 4
    cancels = [f for f in parts["flows"].values() if f["s"]["cat"] == "cancel"]
    assert [f["f"]["tid"] for f in cancels] == [tasks["victim"]["tid"]]
    (instant,) = [e for e in parts["instants"] if e["name"] == "cancel"]
    assert instant["args"]["message"] == "enough" and "test_timeline.py" in instant["args"]["requested_at"]
    # the block: a slice of the loop's track, the blocking line nested in it
    blocks = [e for e in parts["slices"] if e["cat"] == "block"]
    assert len(blocks) == 1 and blocks[0]["tid"] == 0
    assert 0.2e6 <= blocks[0]["dur"] <= 2e6
    stack = [e for e in parts["slices"] if e["cat"] == "stack"]
    assert any(e["name"] == "workload" and "test_timeline.py" in e["args"]["file"] for e in stack)
    assert any(e["name"] == "blocked-loop" for e in parts["instants"])
    assert max(c["args"]["tasks"] for c in parts["counters"]) >= 5
    assert trace["otherData"]["events_dropped"] == 0


def test_live_tasks_are_slices_up_to_now(watch, loop_kind, tmp_path):
    watch(timeline=str(tmp_path / "exit.json"))

    async def main():
        waiter = asyncio.create_task(asyncio.sleep(10), name="waiter")
        await asyncio.sleep(0.02)
        path = taskwatch.write_timeline(tmp_path / "now.json")
        waiter.cancel()
        return path

    path = run(main(), loop_kind)
    parts = validate(_trace(path))
    (waiter,) = [e for e in parts["tasks"] if e["args"]["name"] == "waiter"]
    assert waiter["args"]["state"] == "pending" and waiter["args"]["still_running"]
    assert waiter["dur"] >= 15_000


def test_ring_is_bounded_and_counts_what_it_dropped(watch, tmp_path):
    watch(timeline=str(tmp_path / "t.json"), timeline_events=1000)

    async def main():
        for _ in range(3):
            await asyncio.gather(*(asyncio.sleep(0) for _ in range(1000)))

    run(main())
    path = taskwatch.write_timeline(tmp_path / "t2.json")
    trace = _trace(path)
    validate(trace)
    assert trace["otherData"]["events_recorded"] >= 3000
    assert trace["otherData"]["events_dropped"] == trace["otherData"]["events_recorded"] - 1000
    assert trace["otherData"]["tasks"] <= 1000 + 1
    stats = taskwatch.report()["stats"]
    assert stats["dropped_history"] + stats["timeline_dropped"] == trace["otherData"]["events_dropped"]


def test_flight_recorder_writes_the_seconds_before_a_long_block(watch, loop_kind, tmp_path):
    watch(flight_recorder=str(tmp_path), flight_window=5, flight_block=0.2, block_threshold=0.1)

    async def main():
        early = asyncio.create_task(asyncio.sleep(0), name="before-the-block")
        await early
        time.sleep(0.05)  # too short: no block, no dump
        await asyncio.sleep(0.05)
        time.sleep(0.35)  # a block of the flight recorder's size
        await asyncio.sleep(0.05)
        time.sleep(0.35)  # another, inside the window just written: counted, not written
        await asyncio.sleep(0.05)

    run(main(), loop_kind)
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("taskwatch-timeline-*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    (dump,) = tmp_path.glob("taskwatch-timeline-*.json")
    assert str(os.getpid()) in dump.name
    assert dump.stat().st_mode & 0o077 == 0  # only its owner reads it
    trace = _trace(dump)
    parts = validate(trace)
    assert trace["otherData"]["window_s"] == pytest.approx(5, abs=0.5)
    assert "before-the-block" in {e["args"]["name"] for e in parts["tasks"]}
    assert [e["cat"] for e in parts["slices"] if e["cat"] == "block"] == ["block"]
    stats = taskwatch.report()["stats"]
    assert stats["timeline_dumps"] == 1 and stats["timeline_dumps_skipped"] == 1


def test_dump_timeline_on_demand_keeps_only_the_window(watch, tmp_path):
    watch(flight_recorder=str(tmp_path), flight_window=0.2)

    async def main():
        await asyncio.create_task(asyncio.sleep(0), name="old")
        await asyncio.sleep(0.4)
        await asyncio.create_task(asyncio.sleep(0), name="recent")
        return taskwatch.dump_timeline()

    path = run(main())
    names = {e["args"]["name"] for e in validate(_trace(path))["tasks"]}
    assert "recent" in names and "old" not in names
    assert os.path.dirname(path) == str(tmp_path)


def test_timeline_functions_say_how_to_turn_the_recorder_on(watch):
    watch()
    with pytest.raises(RuntimeError, match="timeline=PATH or flight_recorder=FOLDER"):
        taskwatch.write_timeline("x.json")
    with pytest.raises(RuntimeError, match="timeline=PATH or flight_recorder=FOLDER"):
        taskwatch.dump_timeline()


def test_dump_timeline_without_a_folder_asks_for_a_path(watch, tmp_path):
    watch(timeline=str(tmp_path / "t.json"))
    with pytest.raises(RuntimeError, match="needs a path, or the option flight_recorder"):
        taskwatch.dump_timeline()
    assert taskwatch.dump_timeline(tmp_path / "d.json") == str(tmp_path / "d.json")


@pytest.mark.parametrize("option, value, message", [
    ("timeline", "/no/such/folder/t.json", "folder '/no/such/folder' does not exist"),
    ("timeline", 42, "the path of a file to write"),
    ("flight_recorder", "/no/such/folder", "an existing folder"),
    ("timeline_events", 10, "a whole number from 1000 to 10000000"),
    ("flight_window", 0, "a number of seconds"),
])
def test_bad_timeline_options_fail_before_install(option, value, message):
    with pytest.raises(ValueError, match=f"option '{option}' must be .*{message}"):
        taskwatch.install(**{option: value})
    assert not taskwatch.is_installed()


def test_flight_block_below_the_block_threshold_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'flight_block' must be at least block_threshold"):
        taskwatch.install(flight_recorder=str(tmp_path), flight_block=0.05)
    assert not taskwatch.is_installed()


def test_recorder_off_records_nothing(watch):
    watch()
    run(asyncio.sleep(0))
    stats = taskwatch.report()["stats"]
    assert "timeline_events" not in stats


def _session(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    program = tmp_path / "app.py"
    program.write_text(
        "import asyncio, os, signal, time\n"
        "async def worker(n):\n"
        "    await asyncio.sleep(0.01 * n)\n"
        "async def main():\n"
        "    await asyncio.gather(*(asyncio.create_task(worker(n)) for n in range(3)))\n"
        "    if os.environ.get('SEND_DUMP'):\n"
        "        os.kill(os.getpid(), signal.SIGUSR1)\n"
        "        await asyncio.sleep(0.5)\n"
        "    time.sleep(0.3)\n"
        "    await asyncio.sleep(0.05)\n"
        "asyncio.run(main())\n")
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "taskwatch", *args, str(program)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=full)


def test_cli_timeline_flag_writes_the_trace_at_exit(tmp_path):
    done = _session(tmp_path, "--timeline", "trace.json", "--quiet-summary")
    assert done.returncode == 0, done.stderr
    assert f"timeline written to {tmp_path / 'trace.json'}" in done.stderr
    parts = validate(_trace(tmp_path / "trace.json"))
    assert sum(1 for e in parts["tasks"] if e["name"].endswith("worker")) == 3
    assert any(e["cat"] == "block" for e in parts["slices"])


def test_cli_refuses_a_timeline_in_a_missing_folder_before_running(tmp_path):
    done = _session(tmp_path, "--timeline", "nowhere/trace.json")
    assert done.returncode == 2
    assert "option 'timeline' must be" in done.stderr and "does not exist" in done.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_dump_signal_writes_a_flight_recorder_dump(tmp_path):
    folder = tmp_path / "dumps"
    folder.mkdir()
    done = _session(tmp_path, "--flight-recorder", str(folder), "--dump-signal", "SIGUSR1",
                    "--quiet-summary", env={"SEND_DUMP": "1"})
    assert done.returncode == 0, done.stderr
    dumps = list(folder.glob("taskwatch-timeline-*.json"))
    assert len(dumps) == 1, done.stderr
    assert "SIGUSR1 received" in done.stderr
    validate(_trace(dumps[0]))


def test_the_validator_rejects_what_a_viewer_would_misdraw():
    def trace(*events):
        meta = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "t"}}]
        return {"traceEvents": meta + list(events), "displayTimeUnit": "ms"}

    a = {"ph": "X", "name": "a", "cat": "task", "pid": 1, "tid": 1, "ts": 0, "dur": 10}
    validate(trace(a, {**a, "name": "b", "ts": 2, "dur": 3}))  # nested: fine
    with pytest.raises(AssertionError, match="overlaps without nesting"):
        validate(trace(a, {**a, "name": "b", "ts": 5, "dur": 10}))
    with pytest.raises(AssertionError, match="out of order"):
        validate(trace({**a, "ts": 20}, a))
    with pytest.raises(AssertionError, match="lacks an end"):
        validate(trace(a, {"ph": "s", "name": "spawn", "cat": "spawn", "id": 1, "pid": 1,
                           "tid": 1, "ts": 1}))
    with pytest.raises(AssertionError, match="outside every slice"):
        validate(trace(a, {"ph": "s", "name": "f", "cat": "f", "id": 1, "pid": 1, "tid": 1, "ts": 1},
                       {"ph": "f", "bp": "e", "name": "f", "cat": "f", "id": 1, "pid": 1, "tid": 1,
                        "ts": 50}))


def test_children_write_their_own_timeline_files(tmp_path):
    program = tmp_path / "parent.py"
    program.write_text(
        "import asyncio, os, subprocess, sys\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "    subprocess.run([sys.executable, '-c', 'import asyncio; asyncio.run(asyncio.sleep(0))'],\n"
        "                   check=True)\n"
        "asyncio.run(main())\n"
        "pid = os.fork()  # outside the loop: a child of a running loop cannot run one (3.14)\n"
        "if pid == 0:\n"
        "    asyncio.run(asyncio.sleep(0))\n"
        "    sys.exit(0)\n"
        "os.waitpid(pid, 0)\n")
    done = subprocess.run([sys.executable, "-m", "taskwatch", "--timeline", "t.json",
                           "--quiet-summary", str(program)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in tmp_path.glob("t.json*"))
    assert "t.json" in files and len(files) == 3, (files, done.stderr)  # session, child, fork
    for name in files:
        validate(_trace(tmp_path / name))
