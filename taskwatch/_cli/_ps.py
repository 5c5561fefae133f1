"""``python -m taskwatch ps PID`` and ``top PID``: look at a running program that called
``taskwatch.install()``, once or live.

Reaches the program through its control socket (``control=True``) or, on Python 3.14+, with
``sys.remote_exec``. ``ps`` prints the task tree (``--json``: the snapshot itself); ``top`` shows it
refreshed in the terminal (the ``top`` extra). A failed attach exits with status 2 and says what
to do; nothing is started in the program beyond answering.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .._live import _attach, _text

ATTACH_FAILED = 2


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m taskwatch ps",
        description="Show the live tasks of a running program that called taskwatch.install(): "
                    "the task tree, identical tasks grouped, where each waits and for how long, "
                    "pending cancels, recent findings.")
    ap.add_argument("pid", type=_pid, help="process id of the program")
    ap.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    ap.add_argument("--timeline", metavar="PATH",
                    help="instead, have the program write its flight recorder's last seconds "
                         "to PATH (Chrome trace-event JSON; the program must record one: "
                         "TASKWATCH_FLIGHT_RECORDER)")
    ap.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                    help="how long to wait for the program's answer (default 10)")
    return ap


def top_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m taskwatch top",
        description="Show the live tasks of a running program that called taskwatch.install(), "
                    "refreshed in the terminal; keys: n, a, w sort by count, age, wait; q quits.")
    ap.add_argument("pid", type=_pid, help="process id of the program")
    ap.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS",
                    help="seconds between refreshes (default 1)")
    ap.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                    help="how long to wait for each answer (default 10)")
    return ap


TOP_EXTRA = "pip install 'taskwatch[top]'"


def top(argv: list[str]) -> None:
    args = top_parser().parse_args(argv)
    try:
        from .._live import _top
    except ImportError as exc:
        sys.stderr.write(f"taskwatch top: needs the terminal library Textual, which cannot be "
                         f"imported here ({exc}); install the top extra: {TOP_EXTRA}\n")
        sys.exit(ATTACH_FAILED)
    try:
        sys.exit(_top.run(args.pid, args.interval, args.timeout))
    except _attach.AttachError as exc:
        sys.stderr.write(f"taskwatch top: {exc}\n")
        sys.exit(ATTACH_FAILED)


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.timeline is not None:
        _timeline(args.pid, args.timeline, args.timeout)
        return
    try:
        snap = _attach.fetch(args.pid, args.timeout)
    except _attach.AttachError as exc:
        sys.stderr.write(f"taskwatch ps: {exc}\n")
        sys.exit(ATTACH_FAILED)
    if args.json:
        sys.stdout.write(json.dumps(snap, indent=2) + "\n")
    else:
        sys.stdout.write(_text.render(snap))


def _timeline(pid: int, path: str, timeout: float) -> None:
    full = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(full)) or os.path.isdir(full):
        sys.stderr.write(f"taskwatch ps: --timeline {path!r}: give the path of a file in an "
                         f"existing folder\n")
        sys.exit(ATTACH_FAILED)
    try:
        answer = _attach.ask(pid, {"what": "timeline", "path": full}, timeout)
    except _attach.AttachError as exc:
        sys.stderr.write(f"taskwatch ps: {exc}\n")
        sys.exit(ATTACH_FAILED)
    sys.stdout.write(f"taskwatch ps: process {pid} wrote the last {answer['window_s']:g} s of "
                     f"its timeline to {answer['timeline']}\n")


def _pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"PID must be a process id (a whole number); got {text!r}") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"PID must be a process id greater than 0; got {pid}")
    return pid


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds greater than 0, at most 3600; got {text!r}")
    return value
