"""Proof on real programs (issue 16): applications written against real libraries (aiohttp, httpx,
Starlette under uvicorn, anyio, websockets, aiosqlite), each run plainly (``python prog.py``) and
as a debugging session (``python -m taskwatch --json R.json prog.py``), on asyncio and on uvloop.

* Both runs print the same stdout and end with the same status (a server stopped with SIGTERM
  dies by the signal in both), and a server answers the same requests the same way.
* A correct program (``tests/corpus/*.py`` not named ``bug_*``) has no finding at all.
* A program with one classic bug (``tests/corpus/bug_*.py``) has exactly that finding, once, and it
  names the line marked ``# BUG: <kind>``: the task's ``created_at`` (unretrieved-exception,
  orphaned-task, destroyed-pending, leaked-task), the ``blocked_at`` line (blocked-loop), the
  coroutine's ``created_at`` (never-awaited), or the ``except`` that caught the cancellation
  (swallowed-cancel, whose ``requested_at`` must be the line marked ``# CANCEL`` where the
  program itself called cancel()).

Each program's docstring says what it needs (``requires: aiohttp httpx2``: skipped without them),
its exit status when not 0 (``exit: -15``: uvicorn re-raises SIGTERM) and, for servers, the
requests to send before SIGTERM (``drive: GET /health, &GET /report``; ``&`` sends one in the
background, still in flight at SIGTERM once the server logged ``handling /report``). A server
logs ``listening on http://127.0.0.1:PORT`` (or uvicorn's ``running on``) on stderr. The program
picks its loop from ``CORPUS_LOOP`` (``uvloop`` or asyncio).

Nothing here depends on the machine's speed: deadlines that must not expire are generous, the one
bug block is 0.6 s against the default 0.1 s threshold, and the programs import what their
libraries would import lazily on the first request (httpcore, anyio's backend, uvicorn's
protocols) at startup, so that no step of a correct program takes more than a few milliseconds of
CPU: on a loaded 2-core machine such a step can take ten times as long on the wall clock, and
blocked-loop counts wall time.

A parametrization that fails because taskwatch is wrong is marked ``xfail(strict=True)`` in
``KNOWN_DEFECTS`` with the diagnosis; the test itself is never loosened.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = CORPUS.parent.parent
LOOPS = ("asyncio", "uvloop")
BUG = re.compile(r"#\s*BUG:\s*([a-z-]+)")
CANCEL = re.compile(r"#\s*CANCEL\b")
READY = re.compile(r"(?i)(?:running|listening) on http://127\.0\.0\.1:(\d+)")
RUN_TIMEOUT = 120  # seconds for one program run; a normal run takes one to four
REQUEST_TIMEOUT = 30

# (program stem, loop) -> reason: taskwatch defects, each failing deterministically (none today).
_DEFECTS: dict[str, str] = {}
# Defects seen only on some interpreters or loops: stem -> (reason, where(loop) -> bool).
_PY = sys.version_info[:2]
_DIRECT_TASK = (
    "taskwatch limit (missed finding): a Task constructed directly, "
    "`asyncio.Task(coro, loop=loop, eager_start=True)`, is never recorded (records are made "
    "only by the task factory taskwatch puts in front of loop.create_task; seeing it would mean "
    "swapping asyncio's Task class, which the program would see), so its cancel and how it ended "
    "are not seen; aiohttp >= 3.10 builds its connection and request-handler tasks that way on "
    "3.12/3.13 (any loop) and on 3.14+ when the loop is not a BaseEventLoop (uvloop): ")


def _aiohttp_builds_tasks_directly(loop: str) -> bool:
    return (3, 12) <= _PY < (3, 14) or (_PY >= (3, 14) and loop == "uvloop")


_DEFECTS_WHERE: dict[str, tuple[str, Callable[[str], bool]]] = {
    "bug_swallowed_by_handler": (_DIRECT_TASK + "the handler's swallowed cancel is missed there",
                                 _aiohttp_builds_tasks_directly),
    "bug_orphan_after_return": (_DIRECT_TASK + "the handler that returned and left its child "
                                "running is not seen to end, so the child is no orphan there",
                                _aiohttp_builds_tasks_directly),
}
KNOWN_DEFECTS: dict[tuple[str, str], str] = {
    (name, loop): reason for name, reason in _DEFECTS.items() for loop in LOOPS}
KNOWN_DEFECTS.update({(name, loop): reason for name, (reason, where) in _DEFECTS_WHERE.items()
                      for loop in LOOPS if where(loop)})


@dataclass
class Program:
    path: Path
    requires: list[str]
    drive: list[tuple[str, str]]  # (method, path): a server, driven over HTTP then sent SIGTERM
    exit: int  # the status of the plain run
    bugs: dict[str, list[int]] = field(default_factory=dict)  # kind -> the lines marked # BUG
    cancel_lines: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


def _load(path: Path) -> Program:
    text = path.read_text()
    doc = text.split('"""')[1] if text.startswith('"""') else ""
    requires = re.search(r"^requires:(.*)$", doc, re.M)
    drive = re.search(r"^drive:(.*(?:\n[ \t]+.*)*)", doc, re.M)
    status = re.search(r"^exit:\s*(-?\d+)", doc, re.M)
    program = Program(
        path,
        requires.group(1).split() if requires else [],
        [tuple(step.split()) for step in drive.group(1).replace("\n", " ").split(",")]
        if drive else [],
        int(status.group(1)) if status else 0,
    )
    for number, line in enumerate(text.splitlines(), 1):
        match = BUG.search(line)
        if match:
            program.bugs.setdefault(match.group(1), []).append(number)
        if CANCEL.search(line):
            program.cancel_lines.append(number)
    return program


PROGRAMS = [_load(p) for p in sorted(CORPUS.glob("*.py"))]


def _params():
    for program in PROGRAMS:
        for loop in LOOPS:
            reason = KNOWN_DEFECTS.get((program.name, loop))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(program, loop, id=f"{program.name}-{loop}", marks=marks)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    responses: list[tuple[str, str, int, bytes]]
    report: dict | None


def _reader(stream, sink: list[str], ready: threading.Event | None = None,
            found: list[str] | None = None) -> threading.Thread:
    def read() -> None:
        for line in stream:
            sink.append(line)
            if ready is not None and not ready.is_set():
                match = READY.search(line)
                if match:
                    found.append(match.group(1))
                    ready.set()
        if ready is not None:
            ready.set()  # the stream ended: stop waiting for the port

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _request(port: str, method: str, path: str) -> tuple[str, str, int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=b"" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
            return method, path, response.status, response.read()
    except urllib.error.HTTPError as error:
        return method, path, error.code, error.read()


def _drive(steps: list[tuple[str, str]], port: str, err: list[str]) -> list:
    """Send the requests in order. ``&GET /path`` is sent in the background and is still in
    flight at SIGTERM: the next step waits until the server logged ``handling /path``."""
    responses: list = []
    background = ThreadPoolExecutor(4)
    for method, path in steps:
        if not method.startswith("&"):
            responses.append(_request(port, method, path))
            continue
        responses.append(background.submit(_request, port, method[1:], path))
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any(f"handling {path}" in line for line in list(err)):
            assert time.monotonic() < deadline, f"{path} never reached its handler"
            time.sleep(0.01)
    background.shutdown(wait=False)
    return responses


def _run(program: Program, loop: str, tmp_path: Path, watched: bool) -> Run:
    report = tmp_path / f"{program.name}-{loop}.json"
    head = [sys.executable]
    if watched:
        head += ["-m", "taskwatch", "--json", str(report)]
    env = dict(os.environ, CORPUS_LOOP=loop, PYTHONUNBUFFERED="1")
    env.pop("PYTHONASYNCIODEBUG", None)
    for name in list(env):
        if name.startswith("TASKWATCH_"):
            del env[name]  # the session's defaults, whatever the caller's environment says
    proc = subprocess.Popen([*head, str(program.path)], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out: list[str] = []
    err: list[str] = []
    responses = []
    ready = threading.Event() if program.drive else None
    port: list[str] = []
    readers = [_reader(proc.stdout, out), _reader(proc.stderr, err, ready, port)]
    try:
        if program.drive:
            ready.wait(RUN_TIMEOUT)
            assert port, f"the server did not start:\n{''.join(err)}"
            responses = _drive(program.drive, port[0], err)
            proc.send_signal(signal.SIGTERM)
            responses = [r.result(RUN_TIMEOUT) if not isinstance(r, tuple) else r
                         for r in responses]
        proc.wait(RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for thread in readers:
            thread.join(10)
    data = json.loads(report.read_text()) if watched and report.exists() else None
    return Run(proc.returncode, "".join(out), "".join(err), responses, data)


def _line_named(finding: dict) -> int | None:
    kind = finding["kind"]
    if kind == "swallowed-cancel":
        caught = finding["cancel"].get("caught_at")
        return caught["line"] if caught else None
    if kind == "never-awaited":
        return finding["coroutine"]["created_at"]["line"]
    if kind == "blocked-loop":
        return (finding.get("blocked_at") or {}).get("line")
    return ((finding.get("task") or {}).get("created_at") or {}).get("line")


def _file_named(finding: dict) -> str | None:
    kind = finding["kind"]
    if kind == "swallowed-cancel":
        return (finding["cancel"].get("caught_at") or {}).get("file")
    if kind == "never-awaited":
        return finding["coroutine"]["created_at"]["file"]
    if kind == "blocked-loop":
        return (finding.get("blocked_at") or {}).get("file")
    return ((finding.get("task") or {}).get("created_at") or {}).get("file")


def _describe(findings: list[dict]) -> str:
    return "\n".join(f"- [{f['kind']}] {f['message']}" for f in findings) or "(no findings)"


@pytest.mark.parametrize(("program", "loop"), list(_params()))
def test_corpus(program: Program, loop: str, tmp_path: Path) -> None:
    for module in program.requires:
        pytest.importorskip(module)
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with ThreadPoolExecutor(2) as pool:  # the plain run and the session side by side
        plain_run = pool.submit(_run, program, loop, tmp_path, False)
        watched_run = pool.submit(_run, program, loop, tmp_path, True)
        plain, watched = plain_run.result(), watched_run.result()

    # the program is unchanged by the session
    context = f"plain stderr:\n{plain.stderr}\nsession stderr:\n{watched.stderr}"
    assert plain.returncode == program.exit, context
    assert watched.returncode == plain.returncode, context
    assert watched.stdout == plain.stdout, context
    assert watched.responses == plain.responses, context

    # the report was written whole, and taskwatch had no trouble of its own
    assert watched.report is not None, f"no report written\n{watched.stderr}"
    assert watched.report["stats"]["internal_errors"] == 0, watched.stderr
    findings = watched.report["findings"]

    # correct programs: nothing; buggy ones: exactly the marked finding, on the marked line
    expected = {kind: sorted(lines) for kind, lines in program.bugs.items()}
    found: dict[str, list[int | None]] = {}
    for finding in findings:
        found.setdefault(finding["kind"], []).append(_line_named(finding))
    found = {kind: sorted(lines, key=lambda n: n or 0) for kind, lines in found.items()}
    assert found == expected, f"{_describe(findings)}\nsession stderr:\n{watched.stderr[-4000:]}"
    for finding in findings:
        assert _file_named(finding) == str(program.path), _describe([finding])
        if finding["kind"] in ("swallowed-cancel", "slow-cancel") and program.cancel_lines:
            requested = finding["cancel"]["requested_at"]
            assert (requested["file"], requested["line"]) == (
                str(program.path), program.cancel_lines[0]), _describe([finding])


def test_corpus_covers_the_brief() -> None:
    """Every finding kind of the brief has a buggy program, and correct programs outnumber none."""
    kinds = {kind for program in PROGRAMS for kind in program.bugs}
    assert kinds >= {"unretrieved-exception", "swallowed-cancel", "blocked-loop", "orphaned-task",
                     "destroyed-pending", "never-awaited", "leaked-task"}
    assert all(sum(len(v) for v in p.bugs.values()) == 1
               for p in PROGRAMS if p.name.startswith("bug_"))
    assert not any(p.bugs for p in PROGRAMS if not p.name.startswith("bug_"))
    assert len([p for p in PROGRAMS if not p.bugs]) >= 7
