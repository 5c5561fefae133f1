"""When and where a timeline is written: at exit (``timeline=PATH``), on demand, and by the flight
recorder when the loop blocks for ``flight_block`` seconds or more.

Writing formats the ring (file:line text, tracks, JSON): it never runs on a loop's thread unless a
caller asks there (``write_timeline()``). The flight recorder's dumps run on taskwatch's own thread,
at most one per ``flight_window`` (a later block inside the window it just wrote is already in it;
each one skipped is counted), and are written whole (a temporary file renamed) and readable only by
their owner: a trace names the program's files and functions.
"""

from __future__ import annotations

import atexit
import itertools
import os
import sys
import time
from typing import Any

from .._core._files import write_whole
from .._core._guard import internal_error, logger
from . import _chrome
from ._recorder import Recorder

_monotonic = time.monotonic


class Timeline:
    """The timeline wing of one installed state: its recorder and where its timelines go."""

    def __init__(self, state: Any) -> None:
        options = state.options
        self.state = state
        self.recorder = Recorder(state, options.timeline_events)
        self.path: str | None = options.timeline
        self.folder: str | None = options.flight_recorder
        self.window = options.flight_window
        self.block = options.flight_block
        self.owner = os.getpid()
        self._last_dump = -float("inf")
        self._seq = itertools.count(1)
        self.dumps = 0
        self.skipped = 0
        self.written: list[str] = []

    def start(self) -> None:
        self.state.instruments.add(self.recorder)
        self.state.instruments.add(self)
        if self.path is not None:
            atexit.register(self.write_at_exit)

    def stop(self) -> None:
        """Uninstall: write the exit timeline now (the program may go on without taskwatch)."""
        self.state.instruments.remove(self)
        self.state.instruments.remove(self.recorder)
        if self.path is not None:
            atexit.unregister(self.write_at_exit)
            self.write_at_exit()

    # -- instrument hooks ---------------------------------------------------------------------------
    def finding(self, finding: Any) -> None:
        """The flight recorder's trigger: a block of ``flight_block`` seconds or more."""
        if self.folder is None or finding.kind != "blocked-loop":
            return
        duration = finding.data.get("duration_s") or 0.0
        if duration < self.block:
            return
        now = _monotonic()
        if now - self._last_dump < self.window:
            self.skipped += 1
            return
        self._last_dump = now
        self.dump_soon(f"the loop was blocked for {duration:.3f} s")

    def stats(self, out: dict[str, Any]) -> None:
        out["timeline_dumps"] = self.dumps
        out["timeline_dumps_skipped"] = self.skipped

    def after_fork(self) -> None:
        self.written = []

    # -- writing ------------------------------------------------------------------------------------
    def write(self, path: str, window: float | None = None, *, private: bool = False) -> str:
        """Write the ring (its last ``window`` seconds, if given) and the live tasks to ``path``."""
        trace = _chrome.build(self.recorder.snapshot(window))
        write_whole(path, trace.write, private=private)
        return path

    def dump(self, path: str | None = None) -> str:
        """The flight recorder's dump: the last ``flight_window`` seconds, into ``path`` or a new
        file of the ``flight_recorder`` folder."""
        if path is None:
            if self.folder is None:
                raise RuntimeError(
                    "taskwatch: dump_timeline() needs a path, or the option flight_recorder "
                    "(TASKWATCH_FLIGHT_RECORDER) naming a folder to write dumps to")
            stamp = time.strftime("%Y%m%dT%H%M%S")
            path = os.path.join(self.folder,
                                f"taskwatch-timeline-{os.getpid()}-{stamp}-{next(self._seq)}.json")
        self.write(path, self.window, private=True)
        self.dumps += 1
        return path

    def dump_soon(self, reason: str) -> None:
        """Dump into the ``flight_recorder`` folder from taskwatch's thread, never the caller's
        (a loop's thread, a signal handler)."""
        self.state.ticker.at(0.0, lambda: self._dump_job(reason))

    def _dump_job(self, reason: str) -> None:
        try:
            path = self.dump()
        except BaseException:
            internal_error("flight recorder dump")
            return None
        logger.warning("taskwatch: %s; the timeline of the %g s before is in %s",
                       reason, self.window, path)
        return None

    def exit_path(self) -> str | None:
        """Where this process writes its exit timeline: ``{pid}`` in the path is this process's id;
        a forked child of the process that installed writes ``PATH.<pid>.json`` so that it never
        overwrites its parent's file."""
        path = self.path
        if path is None:
            return None
        if "{pid}" in path:
            return path.replace("{pid}", str(os.getpid()))
        if os.getpid() != self.owner:
            return f"{path}.{os.getpid()}.json"
        return path

    def write_at_exit(self) -> None:
        path = self.exit_path()
        if path is None or path in self.written:
            return
        try:
            self.write(path)
            self.written.append(path)
            _say(f"taskwatch: timeline written to {path} "
                 "(open it in https://ui.perfetto.dev or chrome://tracing)\n")
        except OSError as exc:
            _say(f"taskwatch: could not write the timeline to {path}: {exc}\n")
        except BaseException:
            internal_error("timeline at exit")


def _say(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
