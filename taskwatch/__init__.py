"""taskwatch: watch every asyncio/uvloop task and report what went wrong, naming your own lines.

    import taskwatch
    taskwatch.install()          # once, at startup
    ...
    print(taskwatch.report())    # or: python -m taskwatch app.py

Everything not listed in ``__all__`` is private.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

from ._core import _hooks, _options
from ._sinks import _report
from . import _version
from ._core._findings import Finding
from ._core._options import KINDS, Options
from ._core._state import State

__version__ = _version.VERSION
__all__ = ["install", "uninstall", "is_installed", "tasks", "findings", "report", "dump",
           "write_timeline", "dump_timeline", "snapshot", "Finding", "Options", "KINDS"]

_lock = threading.Lock()


def install(**options: Any) -> Options:
    """Watch every task of every event loop from now on. Calling it again is harmless.

    Options are keyword arguments or ``TASKWATCH_*`` environment variables (see README); an invalid
    value raises ``ValueError`` naming the option and what it accepts. ``otel=True`` without the
    ``otel`` extra raises ``ImportError`` saying what to install. Either way nothing is installed.
    Returns the options in force.
    """
    resolved = _options.resolve(options)
    with _lock:
        state = _hooks.current()
        if state is not None:
            return state.options
        if not resolved.enabled:
            return resolved
        from . import _integrations

        _integrations.check(resolved)
        state = State(resolved)
        _hooks.hook(state)
        try:
            if resolved.coroutine_origin:
                state.saved_origin_depth = sys.get_coroutine_origin_tracking_depth()
                sys.set_coroutine_origin_tracking_depth(resolved.coroutine_origin)
            _integrations.start(state)
            state.ticker.start()
            loop = asyncio._get_running_loop()
            if loop is not None:
                _hooks.attach(loop)
        except BaseException:
            _teardown(state)  # all or nothing: never a half-installed taskwatch
            raise
    return resolved


def uninstall() -> None:
    """Undo everything install() did: factories, hooks, threads, signal handlers."""
    with _lock:
        state = _hooks.current()
        if state is None:
            return
        _teardown(state)


def _teardown(state: State) -> None:
    from ._core import _guard
    from . import _integrations

    _integrations.stop(state)
    _hooks.unhook()
    state.ticker.stop()
    depth = getattr(state, "saved_origin_depth", None)
    if depth is not None:
        try:
            sys.set_coroutine_origin_tracking_depth(depth)
        except Exception:
            _guard.internal_error("restore coroutine origin tracking")


def is_installed() -> bool:
    return _hooks.current() is not None


def _state() -> State:
    state = _hooks.current()
    if state is None:
        raise RuntimeError("taskwatch is not installed: call taskwatch.install() first")
    return state


def tasks(include_finished: bool = False) -> list[dict[str, Any]]:
    """Records of the live tasks of every watched loop (plus the finished ring, if asked).

    Each is the report's TASK dict; ``parent`` links make the task tree.
    """
    state = _state()
    out = []
    for probe in state.live_probes():
        for rec, _task in probe.live_records():
            out.append(rec.as_dict())
        if include_finished:
            out.extend(rec.as_dict() for rec in list(probe.history))
    if include_finished:
        out.extend(rec.as_dict() for rec in list(state.retired_history))
    return out


def findings() -> list[Finding]:
    """The findings so far (bounded by ``max_findings``; older ones are dropped and counted)."""
    state = _state()
    with state.lock:
        return list(state.findings)


def report() -> dict[str, Any]:
    """The JSON report (report-format.md) as a dict."""
    return _report.build(_state())


def dump() -> str:
    """The live task tree as text: where each task waits now, identical tasks grouped."""
    from ._sinks import _dump

    return _dump.render(_state())


def snapshot() -> dict[str, Any]:
    """What ``taskwatch ps`` shows, as JSON data: the live tasks as a tree of groups (identical
    tasks counted once), each with where it waits and for how long at least, pending cancels, the
    loops, the recent findings. Wait times are counted from one snapshot to the next."""
    from ._live import _snapshot

    return _snapshot.take(_state())


def _recording() -> Any:
    timeline = _state().timeline
    if timeline is None:
        raise RuntimeError("taskwatch: the timeline is not recording: install with timeline=PATH "
                           "or flight_recorder=FOLDER (TASKWATCH_TIMELINE, TASKWATCH_FLIGHT_RECORDER)")
    return timeline


def write_timeline(path: str) -> str:
    """Write the timeline recorded so far (the ring and the tasks live now) to ``path`` as Chrome
    trace-event JSON, which Perfetto (ui.perfetto.dev) and chrome://tracing open. Returns ``path``.
    Formats on the calling thread: from a loop, run it in a thread (``asyncio.to_thread``)."""
    return _recording().write(os.fspath(path))  # type: ignore[no-any-return]


def dump_timeline(path: str | None = None) -> str:
    """The flight recorder's dump, now: the last ``flight_window`` seconds, into ``path`` or a new
    file of the ``flight_recorder`` folder. Returns the path written."""
    return _recording().dump(None if path is None else os.fspath(path))  # type: ignore[no-any-return]
