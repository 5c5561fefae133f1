"""The live view: taskwatch.snapshot() in the process, and taskwatch ps attaching to a running one
(a control socket on every version, sys.remote_exec on 3.14+)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import taskwatch
from taskwatch._live import _text
from taskwatch._watchdog import _cpu

from .conftest import run

HAS_REMOTE_EXEC = hasattr(sys, "remote_exec")


@pytest.fixture(autouse=True)
def _own_control_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's programs and ps use a control folder of their own: a socket a killed program
    left in the shared one, under a pid the system reuses, is not this test's."""
    folder = tmp_path_factory.mktemp("control")
    folder.chmod(0o700)
    monkeypatch.setenv("TASKWATCH_CONTROL_DIR", str(folder))


async def _worker() -> None:
    await asyncio.sleep(3600)


async def _locked(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def _stubborn() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(3600)  # ignores the cancel, for now


def _group(snap: dict[str, Any], coro_suffix: str) -> dict[str, Any]:
    found = [g for g in snap["groups"] if g["coro"].endswith(coro_suffix)]
    assert len(found) == 1, [g["coro"] for g in snap["groups"]]
    return found[0]


def test_snapshot_groups_the_tree_and_counts_waits_between_looks(watch, loop_kind):
    watch()

    async def main():
        lock = asyncio.Lock()
        await lock.acquire()
        workers = [asyncio.create_task(_worker()) for _ in range(50)]
        locker = asyncio.create_task(_locked(lock), name="locker")
        stubborn = asyncio.create_task(_stubborn(), name="stubborn")
        await asyncio.sleep(0.05)
        stubborn.cancel("stop")
        await asyncio.sleep(0.05)
        first = taskwatch.snapshot()
        await asyncio.sleep(0.3)
        second = taskwatch.snapshot()
        for task in (*workers, locker, stubborn):
            task.cancel()
        await asyncio.gather(*workers, locker, stubborn, return_exceptions=True)
        return first, second

    first, second = run(main(), loop_kind)
    json.dumps(second)  # plain data
    workers = _group(second, "_worker")
    assert workers["count"] == 50 and len(workers["tasks"]) == 5
    assert workers["waiting_on"] == "sleep" and workers["state"] == "waiting"
    main_group = _group(second, "main")
    assert main_group["state"] == "running"  # it took the snapshot
    assert workers["parent_group"] == main_group["group"]
    assert _group(second, "_locked")["waiting_on"] == "Lock.acquire"
    # the first look knows no wait; the second, at least the time between them
    assert _group(first, "_worker")["waiting_s"] == [None, None]
    low, high = workers["waiting_s"]
    assert 0.25 <= low <= high < 30
    stubborn = _group(second, "_stubborn")
    (cancel,) = stubborn["cancelling"]
    assert cancel["message"] == "stop" and cancel["pending_s"] >= 0.3
    assert "test_live.py" in cancel["requested_at"]["file"]
    assert second["tasks"] == 53 and second["loops"][0]["kind"] == loop_kind
    text = _text.render(second)
    assert "50 x _worker" in text and "waiting on sleep for >= " in text
    assert "cancel pending" in text and f"by '{cancel['by_task']['name']}'" in text
    assert cancel["by_task"]["id"] == main_group["tasks"][0]["id"]


def test_snapshot_needs_install():
    with pytest.raises(RuntimeError, match="not installed"):
        taskwatch.snapshot()


_TARGET = """\
import asyncio, os, sys, time
import taskwatch
if os.environ.get("NO_INSTALL") != "1":
    taskwatch.install()
async def worker():
    await asyncio.sleep(3600)
async def locked(lock):
    async with lock:
        pass
async def stubborn():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(3600)
async def busy():
    while True:
        time.sleep(0.002)
        await asyncio.sleep(0)
async def crunch():  # uses a third of the CPU, in 1 ms steps
    while True:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        await asyncio.sleep(0.002)
async def main():
    lock = asyncio.Lock()
    await lock.acquire()
    ws = [asyncio.create_task(worker()) for _ in range(1000)]
    l = asyncio.create_task(locked(lock), name="locker")
    s = asyncio.create_task(stubborn(), name="stubborn")
    if os.environ.get("IDLE") != "1":
        b = asyncio.create_task(busy(), name="busy")
        c = asyncio.create_task(crunch(), name="crunch")
    await asyncio.sleep(0.05)
    s.cancel("shutting down")
    print("ready", flush=True)
    await asyncio.sleep(3600)
if os.environ.get("LOOP") == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


class _Target:
    def __init__(self, tmp: Path, **env: str) -> None:
        path = tmp / "target.py"
        path.write_text(_TARGET)
        full = dict(os.environ, TASKWATCH_CPU_SAMPLING="0.001", **env)
        self.proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=full)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read() if self.proc.stderr else ""
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def __enter__(self) -> _Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ps(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskwatch", "ps", *args], capture_output=True,
                          text=True, timeout=timeout)


def _check_target_snapshot(first: dict[str, Any], second: dict[str, Any],
                           before: dict[str, Any]) -> None:
    """``first`` is the first look at the target, ``second`` the last, ``before`` the one before it."""
    workers = _group(second, ".worker")
    assert workers["count"] == 1000 and workers["waiting_on"] == "sleep"
    assert workers["created_at"]["file"].endswith("target.py")
    assert workers["parent_group"] == _group(second, ".main")["group"]
    assert _group(second, ".locked")["waiting_on"] == "Lock.acquire"
    stubborn = _group(second, ".stubborn")
    assert stubborn["cancelling"][0]["message"] == "shutting down"
    assert _group(first, ".worker")["waiting_s"] == [None, None]
    low, _high = workers["waiting_s"]
    assert low is not None and low >= 0.2
    cpu = second["cpu"]
    if _cpu.unavailable() is None:
        # the task that computes takes most of the CPU, between the looks and since it began
        assert cpu["sampling"] is True, cpu
        top = max(second["groups"], key=lambda g: g["cpu_share"] or 0.0)
        assert top["coro"].endswith(".crunch"), [(g["coro"], g["cpu_share"]) for g in second["groups"]]
        assert top["busy_s"] > 0.05
        # of the CPU between the looks that samples attributed (on a loaded machine some land
        # after the thread waited for a core and are not: unattributed_s)
        window = cpu["share_window_cpu_s"]
        unattributed = cpu["unattributed_s"] - before["cpu"]["unattributed_s"]
        assert top["cpu_share"] * window > 0.4 * (window - unattributed), (top, cpu)
        assert cpu["sites"][0]["coro"].endswith(".crunch")
    else:
        assert cpu == {"sampling": False, "why": _cpu.unavailable()}


def _attach_twice(pid: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The first look, the last and the one before it, 0.3 s apart; where CPU is sampled, looks go
    on (up to 30 s) until the computing task has 0.1 s of CPU, which a loaded machine may take
    seconds to give it."""
    first = _ps("--json", str(pid))
    assert first.returncode == 0, first.stderr
    snap = json.loads(first.stdout)
    end = time.monotonic() + 30
    while True:
        before = snap
        time.sleep(0.3)
        second = _ps("--json", str(pid))
        assert second.returncode == 0, second.stderr
        snap = json.loads(second.stdout)
        crunch = [g for g in snap["groups"] if g["coro"].endswith(".crunch")]
        if not snap["cpu"]["sampling"] or (crunch and (crunch[0]["busy_s"] or 0) > 0.1):
            break
        if time.monotonic() > end:
            break
    return json.loads(first.stdout), snap, before


def test_ps_attaches_through_the_control_socket(tmp_path, loop_kind):
    with _Target(tmp_path, TASKWATCH_CONTROL="1", LOOP=loop_kind) as target:
        first, second, before = _attach_twice(target.pid)
        _check_target_snapshot(first, second, before)
        assert second["loops"][0]["kind"] == loop_kind
        text = _ps(str(target.pid))
        assert text.returncode == 0, text.stderr
        assert "1,000 x worker" in text.stdout and "cancel pending" in text.stdout


@pytest.mark.skipif(not HAS_REMOTE_EXEC, reason="sys.remote_exec is Python 3.14+")
def test_ps_attaches_with_remote_exec_and_no_set_up(tmp_path, loop_kind):
    with _Target(tmp_path, LOOP=loop_kind) as target:
        _check_target_snapshot(*_attach_twice(target.pid))


@pytest.mark.skipif(not HAS_REMOTE_EXEC, reason="sys.remote_exec is Python 3.14+")
def test_ps_wakes_an_idle_loop(tmp_path):
    with _Target(tmp_path, IDLE="1") as target:
        started = time.monotonic()
        done = _ps("--json", "--timeout", "20", str(target.pid))
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 20
        assert _group(json.loads(done.stdout), ".worker")["count"] == 1000


@pytest.mark.skipif(not HAS_REMOTE_EXEC, reason="sys.remote_exec is Python 3.14+")
def test_ps_says_when_taskwatch_is_not_installed(tmp_path):
    with _Target(tmp_path, NO_INSTALL="1") as target:
        done = _ps(str(target.pid))
        assert done.returncode == 2
        assert "taskwatch is not installed in this process" in done.stderr


@pytest.mark.skipif(HAS_REMOTE_EXEC, reason="3.14+ attaches without a control socket")
def test_ps_without_control_socket_says_what_to_do(tmp_path):
    with _Target(tmp_path) as target:
        done = _ps(str(target.pid))
        assert done.returncode == 2
        assert "TASKWATCH_CONTROL=1" in done.stderr and "3.14" in done.stderr
        # a socket an earlier process of this pid left: the same advice
        from taskwatch._live._serve import control_path

        import socket

        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(control_path(target.pid))
        stale.close()  # bound, never listening: refused, as after a kill
        done = _ps(str(target.pid))
        assert done.returncode == 2
        assert "nothing answers" in done.stderr and "TASKWATCH_CONTROL=1" in done.stderr


def test_ps_of_a_missing_process_and_a_bad_pid():
    done = _ps("999999999")
    assert done.returncode == 2 and "there is no process 999999999" in done.stderr
    done = _ps("abc")
    assert done.returncode == 2 and "PID must be a process id" in done.stderr


def test_control_socket_is_private_and_removed_at_uninstall(watch):
    from taskwatch._live import _serve

    watch(control=True)
    path = _serve.control_path(os.getpid())
    folder = os.path.dirname(path)
    assert os.path.exists(path)
    assert os.stat(folder).st_mode & 0o077 == 0
    taskwatch.uninstall()
    assert not os.path.exists(path)


def test_ps_timeline_asks_the_flight_recorder_for_its_last_seconds(tmp_path):
    from .test_timeline import validate

    folder = tmp_path / "dumps"
    folder.mkdir()
    with _Target(tmp_path, TASKWATCH_CONTROL="1", TASKWATCH_FLIGHT_RECORDER=str(folder)) as target:
        out = tmp_path / "now.json"
        done = _ps("--timeline", str(out), str(target.pid))
        assert done.returncode == 0, done.stderr
        assert f"wrote the last 10 s of its timeline to {out}" in done.stdout
        parts = validate(json.loads(out.read_text()))
        assert sum(1 for e in parts["tasks"] if e["name"].endswith("worker")) == 1000


def test_ps_timeline_of_a_program_that_records_none(tmp_path):
    with _Target(tmp_path, TASKWATCH_CONTROL="1") as target:
        done = _ps("--timeline", str(tmp_path / "t.json"), str(target.pid))
        assert done.returncode == 2
        assert "records no timeline" in done.stderr and "TASKWATCH_FLIGHT_RECORDER" in done.stderr


def test_a_timeline_request_needs_a_writable_absolute_path(watch, tmp_path):
    from taskwatch._live import _serve

    watch(flight_recorder=str(tmp_path))
    assert "absolute path" in json.loads(_serve.respond({"what": "timeline"}))["error"]
    assert "absolute path" in json.loads(_serve.respond({"what": "timeline", "path": "t.json"}))["error"]
    missing = str(tmp_path / "no" / "t.json")
    assert "could not write" in json.loads(_serve.respond({"what": "timeline", "path": missing}))["error"]
    assert "unknown request" in json.loads(_serve.respond({"what": "nothing"}))["error"]
    good = json.loads(_serve.respond({"what": "timeline", "path": str(tmp_path / "t.json")}))
    assert good["timeline"] == str(tmp_path / "t.json") and (tmp_path / "t.json").exists()
