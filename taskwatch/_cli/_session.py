"""The debugging session: install with session defaults, report at exit, follow child processes.

Child Python processes are followed the way ``opentelemetry-instrument`` does it: a directory with a
``sitecustomize`` module goes first on ``PYTHONPATH``; it installs taskwatch from the ``TASKWATCH_*``
variables the parent exported, then chains to any other ``sitecustomize``.

Each process reports once: the process that started the session prints its summary and writes
``PATH``; any other (a spawned child, or a child made with ``os.fork()``) prints its summary only
when it has findings and writes ``PATH.<pid>.json``. A forked child reports the findings made
after the fork, not the ones it inherited from its parent.

The report survives the signals that stop servers: SIGTERM (Docker, Kubernetes, systemd) and
SIGHUP, when the program left them at their default action, get a handler that writes the report
and then restores the default action and sends the signal again, so the process still dies by
that signal (exit status 143 for SIGTERM, as without taskwatch). A program that installs its own
handler keeps it; one that restores the previous handler and re-raises the signal after its
graceful shutdown (uvicorn does) reaches the report that way, and then, as the program ended
itself, the tasks still pending are reported as leaked (not so for a signal from outside). SIGINT is Python's
KeyboardInterrupt: the CLI reports and lets the interpreter end the process by SIGINT as usual.
Limits: the handler is a Python handler, so it runs when the main thread next runs Python code.
A blocking call interrupted by the signal (sleep, select, a lock, a socket: PEP 475) returns to
run it at once, and a running event loop wakes every 5 ms for the watchdog; but a main thread
inside a long C computation, or one that the signal reaches in the few bytecodes just before it
enters a blocking call, is stopped only when that call returns. ``signal.getsignal()`` shows the
handler instead of ``SIG_DFL``, and a program that calls the previous handler it found from its
own calls this one (it reports and dies by the signal, where it would have found ``SIG_DFL``).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import gc
import json
import linecache
import os
import signal
import sys
import threading
from typing import Any

import taskwatch

from .._core import _options
from .._core._files import write_whole
from .._sinks import _report
from .._watchdog import _cpu
from .._core._hooks import current

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
SESSION_ENV = "TASKWATCH_SESSION"
JSON_ENV = "TASKWATCH_SESSION_JSON"
# The session prints each finding once, in its exit summary: no live log records (which Python's
# last-resort handler would print to stderr as well). TASKWATCH_LOG=1 / --log turns them back on.
SESSION_DEFAULTS: dict[str, Any] = {"coroutine_origin": 1, "log": False}
# A debugging session shows where the CPU went, where this Python can sample it (3.13+, Linux, the
# C accelerator): off elsewhere without a warning, since nobody asked for it.
if _cpu.unavailable() is None:
    SESSION_DEFAULTS["cpu_sampling"] = 0.001
# SIGINT is not here: Python turns it into KeyboardInterrupt, which the CLI handles.
REPORT_SIGNALS = ("SIGTERM", "SIGHUP")

# This process's part in the session (reset by _begin; a forked child inherits and adapts it).
_owner_pid: int | None = None   # the process that called _begin
_is_session = False             # True in the process that started the session (python -m taskwatch)
_json_base: str | None = None   # the session's --json PATH (absolute), or None
_always_print = True
_reported = False
_reporting = False
_pending_signal: int | None = None
_inherited: list[Any] | None = None  # in a forked child: the findings it inherited
_inherited_counts: collections.Counter[str] = collections.Counter()
_taken: list[int] = []          # signals whose handler is _on_signal
_fork_hook = False


def _spec(name: str) -> _options.OptionSpec:
    return next(s for s in _options.SPECS if s.name == name)


def check_json_path(path: str) -> str:
    """The absolute path of ``--json PATH``, checked before the program runs (ValueError if the
    report could not be written there)."""
    if not path:
        raise ValueError("taskwatch: --json needs the path of a file to write the report to; got ''")
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ValueError(f"taskwatch: --json {path!r} is a folder; give the path of a file to "
                         f"write, such as {os.path.join(path, 'taskwatch.json')!r}")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise ValueError(f"taskwatch: --json {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (
            os.path.exists(full) and not os.access(full, os.W_OK)):
        raise ValueError(f"taskwatch: --json {path!r}: no permission to write there")
    return full


def export_to_children(cli_options: dict[str, Any], json_path: str | None) -> None:
    """Put the session's options and the bootstrap directory into the environment children inherit."""
    for name, value in cli_options.items():
        if isinstance(value, (tuple, list)):
            value = ",".join(value)
        if name == "timeline" and value and "{pid}" not in str(value):
            # each child writes its own file beside the session's, as with --json
            value = os.path.abspath(str(value)) + ".{pid}.json"
        os.environ[_spec(name).env] = str(value)
    for name, value in SESSION_DEFAULTS.items():
        os.environ.setdefault(_spec(name).env, str(value))
    os.environ[SESSION_ENV] = "1"
    if json_path:
        os.environ[JSON_ENV] = os.path.abspath(json_path)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if BOOTSTRAP_DIR not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *paths])


def start(cli_options: dict[str, Any], json_path: str | None = None, *,
          always_print: bool = True) -> None:
    """Install for the session (defaults < TASKWATCH_* < command line); report on exit signals."""
    merged = {name: value for name, value in SESSION_DEFAULTS.items()
              if _spec(name).env not in os.environ}
    merged.update(cli_options)
    taskwatch.install(**merged)
    _begin(json_path and os.path.abspath(json_path), session=True, always_print=always_print)


def _begin(json_base: str | None, *, session: bool, always_print: bool) -> None:
    global _owner_pid, _is_session, _json_base, _always_print, _reported, _inherited, _fork_hook
    _owner_pid = os.getpid()
    _is_session = session
    _json_base = json_base
    _always_print = always_print
    _reported = False
    _inherited = None
    if not _fork_hook and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook = True
    if current() is not None:
        _take_signals()


def forked() -> bool:
    """True in a child made with os.fork() from the process that began the session."""
    return _owner_pid is not None and os.getpid() != _owner_pid


def _after_fork_in_child() -> None:
    global _inherited, _inherited_counts, _reporting, _pending_signal
    _reporting, _pending_signal = False, None
    state = current()
    if state is None or _owner_pid is None:
        return
    # No lock: only this thread exists in the child. The copy keeps the objects (and so their ids).
    _inherited = list(state.findings)
    _inherited_counts = collections.Counter(state.counts)


def _report_path() -> str | None:
    if not _json_base:
        return None
    if _is_session and not forked():
        return _json_base
    return f"{_json_base}.{os.getpid()}.json"


def report() -> dict[str, Any] | None:
    """This process's report, once: the summary on stderr, the JSON file. Never raises."""
    global _reported, _reporting
    if _reported:
        return None
    _reported = True
    state = current()
    if state is None:
        return None
    _reporting = True
    try:
        try:
            gc.collect()  # so dropped pending tasks surface as findings
        except Exception:
            pass
        data = _report.build(state)
        findings = taskwatch.findings()
        if forked() and _inherited is not None:
            inherited = {id(f) for f in _inherited}
            findings = [f for f in findings if id(f) not in inherited]
            data["findings"] = [f.as_dict() for f in findings]
            by_kind = collections.Counter(state.counts) - _inherited_counts
            data["stats"]["findings_by_kind"] = dict(sorted(by_kind.items()))
        always = _always_print and _is_session and not forked()
        if findings or always:
            try:
                sys.stderr.flush()
                sys.stderr.write("\n" + _report.summary(findings, data["stats"], data.get("cpu")))
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):
                pass
        path = _report_path()
        if path:
            _write(data, path)
        return data
    except BaseException:
        from .._core import _guard

        _guard.internal_error("session report")
        return None
    finally:
        _reporting = False
        if _pending_signal is not None:  # arrived while reporting: the report is whole, now die
            _die(_pending_signal)


def _write(data: dict[str, Any], path: str) -> None:
    """Write the report whole (a temporary file renamed over PATH) or say why not."""
    def dump(handle: Any) -> None:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")

    try:
        write_whole(path, dump)
    except OSError as exc:
        try:
            sys.stderr.write(f"taskwatch: could not write the JSON report to {path}: {exc}\n")
        except (OSError, ValueError, AttributeError):
            pass


# -- signals ----------------------------------------------------------------------------------------

def _take_signals() -> None:
    """Report on SIGTERM/SIGHUP where they would just kill the process (default action)."""
    for name in REPORT_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None or signum in _taken:
            continue
        try:
            if signal.getsignal(signum) is not signal.SIG_DFL:
                continue  # ignored (nohup) or the program's own handler: left alone
            signal.signal(signum, _on_signal)
        except (ValueError, OSError, RuntimeError):  # not the main thread, or not allowed
            continue
        _taken.append(signum)


def release_signals() -> None:
    """Give the signals taken back their default action (after the report, nothing to add)."""
    while _taken:
        signum = _taken.pop()
        try:
            if signal.getsignal(signum) is _on_signal:
                signal.signal(signum, signal.SIG_DFL)
        except (ValueError, OSError, RuntimeError):
            pass


def _on_signal(signum: int, frame: Any) -> None:
    """Report, then die by the same signal with its default action, as without taskwatch."""
    global _pending_signal
    if _reporting:  # interrupted the report itself: let it finish (report() then dies)
        _pending_signal = signum
        return
    if _raised_by_program(frame):
        _leak_check(signum)
    report()
    _die(signum)


def _raised_by_program(frame: Any) -> bool:
    """The program sent the signal to itself (``signal.raise_signal``, ``os.kill(os.getpid(), ..)``):
    uvicorn does so once its graceful shutdown is complete, so the tasks still pending then were
    left behind. A signal from outside stops a program mid-work: every task in flight, the main
    one too, is pending, and none of them is a leak. The handler runs inside the raising call,
    so the interrupted frame is the caller's, at that line."""
    try:
        if frame is None:
            return False
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        return "raise_signal(" in line or ("kill(" in line and "getpid()" in line)
    except Exception:
        return False


def _leak_check(signum: int) -> None:
    """Tasks still pending on the running loops when the program re-raised a stop signal from
    its main coroutine (uvicorn's ``serve()`` after its shutdown), that nothing awaits: a task
    that kills the process in the middle of the work (a TaskGroup child calling ``os.kill``) ends
    it while everything is in flight, and leaks nothing."""
    state = current()
    if state is None:
        return
    try:
        running = asyncio.current_task()
    except RuntimeError:
        running = None
    if running is None or getattr(getattr(running, "_tw_rec", None), "parent", 0) is not None:
        return  # not raised by a loop's main task (which no task made)
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    here = threading.get_ident()
    for probe in state.live_probes():
        if probe.run_thread != here:
            continue  # the loop this thread runs; another thread's loop is not ending here
        try:
            probe.report_leaks(f"the program re-raised {name} to end itself after its own shutdown",
                               "the process ended with it still pending", unawaited_only=True)
        except BaseException:
            from .._core import _guard

            _guard.internal_error("leak check at a stop signal")


def _die(signum: int) -> None:
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    except (ValueError, OSError, RuntimeError):
        pass
    # Still alive only if every thread blocks the signal: it stays pending, as it would have.


def abandon() -> None:
    """The program never started (e.g. its module was not found): no report, nothing left."""
    global _reported
    _reported = True
    release_signals()
    taskwatch.uninstall()


# -- children ---------------------------------------------------------------------------------------

def bootstrap_child() -> None:
    """Run from the bootstrap sitecustomize in a child process of a session."""
    if os.environ.get(SESSION_ENV) != "1" or current() is not None:
        return
    try:
        taskwatch.install()
    except ValueError as exc:  # the program gave this child bad TASKWATCH_* values: say so once
        sys.stderr.write(f"{exc}\n")
        return
    except ImportError:  # e.g. --otel where this interpreter lacks the extra: run as without
        return
    if current() is None:  # enabled=false
        return
    _begin(os.environ.get(JSON_ENV) or None, session=False, always_print=False)
    atexit.register(report)
