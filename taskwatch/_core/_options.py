"""Options: one table drives keyword arguments, ``TASKWATCH_*`` variables, the CLI and the docs.

Bad input fails at install time with a message naming the option and what it accepts, so a typo in
a deployment's environment is caught at startup, not discovered as silence later.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

KINDS: tuple[str, ...] = (
    "unretrieved-exception",
    "lost-exception",
    "swallowed-cancel",
    "slow-cancel",
    "orphaned-task",
    "destroyed-pending",
    "never-awaited",
    "leaked-task",
    "blocked-loop",
)

SPAN_MODES = ("all", "interesting", "none")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}  # not "": a blank variable is a mistake, not "off"


class _Invalid(Exception):
    """Raised by a parser; turned into a ValueError that names the option."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Invalid("true or false (1/0, yes/no, on/off)")


MAX_SECONDS = 86400.0  # one day: longer waits are off in all but name (and overflow timers)
_SECONDS = f"a number of seconds greater than 0 and at most {MAX_SECONDS:g}"


def _number(value: Any, accepted: str, low: float, high: float, low_open: bool = False) -> float:
    """A number of seconds in [low, high] (``low_open``: above low), given as a number or text."""
    if isinstance(value, (bool, bytes, bytearray)):
        raise _Invalid(accepted)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _Invalid(accepted) from None
    if not (low < number if low_open else low <= number) or not number <= high:  # refuses NaN
        raise _Invalid(accepted)
    return number


def _seconds(value: Any) -> float:
    return _number(value, _SECONDS, 0.0, MAX_SECONDS, low_open=True)


def _optional_seconds(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none", "off"}):
        return None
    try:
        return _seconds(value)
    except _Invalid:
        raise _Invalid(_SECONDS + ", or none/off") from None


def _count(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number: int | None = None
        if isinstance(value, str):
            try:
                number = int(value)
            except ValueError:
                pass
        elif not isinstance(value, bool):
            try:
                number = operator.index(value)  # int-like only: 2.5 or Decimal("2.5") is refused
            except TypeError:
                number = None
        if number is None or not low <= number <= high:
            raise _Invalid(f"a whole number from {low} to {high}")
        return number

    return parse


_LIST = "a comma-separated list (or a list of strings)"


def _words(value: Any) -> tuple[str, ...]:
    """A list from a comma-separated string or an iterable of strings; blank items are skipped."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.replace(";", ",").split(",")
    elif isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise _Invalid(_LIST)
    else:
        items = value
    out = []
    for item in items:
        if not isinstance(item, str):
            raise _Invalid(_LIST)
        if item.strip():
            out.append(item.strip())
    return tuple(out)


def _sites(value: Any) -> tuple[str, ...]:
    """``ignore``: creation sites as ``path`` or ``path:line`` (line 1 or more)."""
    accepted = "creation sites as 'path' or 'path:line', " + _LIST
    try:
        sites = _words(value)
    except _Invalid:
        raise _Invalid(accepted) from None
    for site in sites:
        path, sep, line = site.rpartition(":")
        if sep and line.strip().isdigit() and (not path.strip() or int(line) < 1):
            raise _Invalid(accepted)
    return sites


def _kinds(value: Any) -> tuple[str, ...]:
    """A list of finding kinds, ``all`` or ``none``; empty is allowed (nothing)."""
    accepted = "a comma-separated list of finding kinds from: all, none, " + ", ".join(KINDS)
    try:
        words = _words(value)
    except _Invalid:
        raise _Invalid(accepted) from None
    if len(words) == 1 and words[0] == "all":
        return KINDS
    if len(words) == 1 and words[0] == "none":
        return ()
    bad = [w for w in words if w not in KINDS]
    if bad:
        raise _Invalid(accepted)
    return words


def _kinds_required(value: Any) -> tuple[str, ...]:
    """``kinds``: as _kinds, but an empty value is refused: it would silently switch every
    finding off (``none`` says that on purpose)."""
    kinds = _kinds(value)
    if not _words(value):
        raise _Invalid("a comma-separated list of finding kinds from: all, none, "
                       + ", ".join(KINDS) + " (not empty: 'none' switches every kind off)")
    return kinds


def _span_mode(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in SPAN_MODES:
        return value.strip().lower()
    raise _Invalid("one of " + ", ".join(SPAN_MODES))


def _off(value: Any) -> bool:
    return value is None or value is False or (
        isinstance(value, str) and value.strip().lower() in {"", "none", "off", "0", "false", "no"})


def _path(value: Any, accepted: str) -> str:
    """A path given as text or path-like (not bytes)."""
    try:
        text = os.fspath(value)
    except TypeError:
        raise _Invalid(accepted) from None
    if not isinstance(text, str):
        raise _Invalid(accepted)
    return text


_SAMPLING = "seconds between CPU samples, from 0.0001 to 1 (0.001 is 1 ms), or none/off"


def _sampling(value: Any) -> float | None:
    """``cpu_sampling``: an interval the sampler's thread can keep, or off."""
    if _off(value) or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return None
    return _number(value, _SAMPLING, 0.0001, 1.0)


def _file(value: Any) -> str | None:
    """``timeline``: the path of a file to write, in a folder that exists and can be written."""
    accepted = ("the path of a file to write, in an existing folder ('{pid}' in it becomes the "
                "process id), or none/off")
    if _off(value):
        return None
    full = os.path.abspath(_path(value, accepted))  # the program may chdir before exit
    folder = os.path.dirname(full)
    if os.path.isdir(full) or not os.path.isdir(folder):
        raise _Invalid(accepted + f" (folder {folder!r} does not exist)" if not os.path.isdir(folder)
                       else accepted + " (it is a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _Invalid(accepted + f" (no permission to write in {folder!r})")
    return full


def _folder(value: Any) -> str | None:
    """``flight_recorder``: a folder that exists and can be written."""
    accepted = "the path of an existing folder that can be written, or none/off"
    if _off(value):
        return None
    text = _path(value, accepted)
    if not os.path.isdir(text):
        raise _Invalid(accepted)
    if not os.access(text, os.W_OK | os.X_OK):
        raise _Invalid(accepted + f" (no permission to write in {text!r})")
    return os.path.abspath(text)


# Signals the dump may take over: ones nothing else in a program's life depends on. SIGUSR1 and
# SIGUSR2 exist for applications to define; SIGINFO (BSD and macOS, sent by Ctrl-T) asks a
# program for its status and is ignored by default, so taking it over stops nothing. Every other
# signal already means something: SIGINT/SIGTERM/SIGHUP/SIGQUIT stop the program (Ctrl-C would
# stop nothing), SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT report a crash (a crashing program would
# hang or loop), SIGCHLD/SIGPIPE/SIGALRM/SIGWINCH/SIGTSTP/SIGCONT drive child processes, pipes,
# timers, terminals and job control, SIGKILL/SIGSTOP cannot be caught.
DUMP_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGINFO")
_SIGNAL = ("SIGUSR1 or SIGUSR2 (or SIGINFO where the system has it), true (SIGUSR1) or false; "
           "other signals already stop, crash or drive the program and are not taken over")


def _signal_name(value: Any) -> str | None:
    import signal

    if value is None or value is False:
        return None
    if value is True:
        return "SIGUSR1"
    if isinstance(value, signal.Signals):
        text = value.name
    elif isinstance(value, str):
        text = value.strip().upper()
    else:
        raise _Invalid(_SIGNAL)
    if text in {"", "0", "FALSE", "NO", "OFF", "NONE"}:
        return None
    if text in {"1", "TRUE", "YES", "ON"}:
        return "SIGUSR1"
    if not text.startswith("SIG"):
        text = "SIG" + text
    if text not in DUMP_SIGNALS or not isinstance(getattr(signal, text, None), signal.Signals):
        raise _Invalid(_SIGNAL)
    return text


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "TASKWATCH_" + self.name.upper()


SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("enabled", _bool, True, "Master switch: false makes install() a no-op."),
    OptionSpec("kinds", _kinds_required, KINDS, "Finding kinds to report (comma-separated, `all` or `none`)."),
    OptionSpec("disable", _kinds, (), "Finding kinds to switch off (applied after `kinds`)."),
    OptionSpec("ignore", _sites, (), "Creation sites to silence: `path` or `path:line`, comma-separated; a path matches by suffix."),
    OptionSpec("stack_depth", _count(1, 64), 8, "Frames kept of each task's creation stack."),
    OptionSpec("history", _count(0, 1_000_000), 1000, "Finished task records kept in the ring."),
    OptionSpec("max_findings", _count(1, 1_000_000), 1000, "Findings kept in memory; more are counted as dropped."),
    OptionSpec("slow_cancel", _seconds, 1.0, "Seconds a cancelled task may take to finish before `slow-cancel`."),
    OptionSpec("orphan_grace", _seconds, 1.0, "Seconds children may outlive a parent that returned normally before `orphaned-task` (children of a cancelled or failed parent are orphans at once)."),
    OptionSpec("lineage", _bool, True, "Give each task's context taskwatch's context variable, so a task created from a callback gets the task that scheduled the callback as its parent; off saves two GC-tracked objects per live task, and such tasks have no parent."),
    OptionSpec("watchdog", _bool, True, "Run the blocked-loop watchdog thread."),
    OptionSpec("block_threshold", _seconds, 0.1, "Seconds one loop step may run before `blocked-loop`."),
    OptionSpec("hang_threshold", _optional_seconds, None, "Seconds after which a block dumps all thread stacks to stderr (no GIL needed); off by default."),
    OptionSpec("coroutine_origin", _count(0, 64), 0, "Coroutine origin tracking depth for `never-awaited` sites (costs on every coroutine; the session uses 1)."),
    OptionSpec("log", _bool, True, "Log each finding to the `taskwatch` logger."),
    OptionSpec("dump_signal", _signal_name, None, "Signal that prints the live task tree to stderr (and, with `flight_recorder`, writes a timeline dump): SIGUSR1 or SIGUSR2 (SIGINFO on BSD/macOS); off by default."),
    OptionSpec("otel", _bool, False, "Export tasks, findings and blocks to OpenTelemetry (needs the `otel` extra)."),
    OptionSpec("spans", _span_mode, "interesting", "Which tasks become spans: all, interesting or none."),
    OptionSpec("span_threshold", _seconds, 1.0, "With spans=interesting, tasks running longer than this are exported."),
    OptionSpec("control", _bool, False, "Answer `taskwatch ps PID` on a Unix socket only the owner can open (`<tmp>/taskwatch-<uid>/<pid>.sock`): the way to attach on Python 3.11-3.13; 3.14+ attaches with `sys.remote_exec` and needs nothing."),
    OptionSpec("cpu_sampling", _sampling, None, "Seconds between CPU samples of the main thread's loop (e.g. 0.001): CPU share per task and creation site in `taskwatch ps`/`top` and the report; needs the C accelerator and Linux; off by default (the session uses 0.001)."),
    OptionSpec("timeline", _file, None, "Write the run's timeline (Chrome trace-event JSON for Perfetto) to this file at exit; `{pid}` in it becomes the process id."),
    OptionSpec("timeline_events", _count(1000, 10_000_000), 50_000, "Finished tasks (and, apart, cancels and findings) a timeline can show: while recording, the `history` ring grows to this size; older ones are dropped and counted."),
    OptionSpec("flight_recorder", _folder, None, "Folder for the flight recorder: keep the timeline in memory and write its last `flight_window` seconds there when the loop blocks for `flight_block` seconds or more."),
    OptionSpec("flight_window", _seconds, 10.0, "Seconds of timeline a flight-recorder dump covers."),
    OptionSpec("flight_block", _seconds, 1.0, "Seconds a block must last to make the flight recorder dump (at least `block_threshold`)."),
    OptionSpec("speedups", _bool, True, "Use the C hot path when it is built (same results, a fraction of the cost); `TASKWATCH_SPEEDUPS=0` also keeps it from loading."),
)

_BY_NAME = {spec.name: spec for spec in SPECS}


@dataclasses.dataclass(frozen=True)
class Options:
    """Validated settings; immutable so the hot path can read them without locks."""

    enabled: bool = True
    kinds: tuple[str, ...] = KINDS
    disable: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    stack_depth: int = 8
    history: int = 1000
    max_findings: int = 1000
    slow_cancel: float = 1.0
    orphan_grace: float = 1.0
    lineage: bool = True
    watchdog: bool = True
    block_threshold: float = 0.1
    hang_threshold: float | None = None
    coroutine_origin: int = 0
    log: bool = True
    dump_signal: str | None = None
    otel: bool = False
    spans: str = "interesting"
    span_threshold: float = 1.0
    control: bool = False
    cpu_sampling: float | None = None
    timeline: str | None = None
    timeline_events: int = 50_000
    flight_recorder: str | None = None
    flight_window: float = 10.0
    flight_block: float = 1.0
    speedups: bool = True

    @property
    def recording(self) -> bool:
        """Whether the timeline records (for an exit file or a flight recorder)."""
        return self.timeline is not None or self.flight_recorder is not None

    @property
    def history_size(self) -> int:
        """The finished-task ring's length: the timeline's tasks are that ring's records."""
        return max(self.history, self.timeline_events) if self.recording else self.history

    @property
    def active_kinds(self) -> frozenset[str]:
        return frozenset(self.kinds) - frozenset(self.disable)


def resolve(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Options:
    """Merge keyword arguments over ``TASKWATCH_*`` variables over defaults, validating each."""
    environ = os.environ if environ is None else environ
    unknown = sorted(set(kwargs) - set(_BY_NAME))
    if unknown:
        raise ValueError(
            f"taskwatch: unknown option {unknown[0]!r}; accepted options: " + ", ".join(_BY_NAME)
        )
    values: dict[str, Any] = {}
    for spec in SPECS:
        if spec.name in kwargs:
            raw, source = kwargs[spec.name], f"option {spec.name!r}"
        elif spec.env in environ:
            raw, source = environ[spec.env], f"{spec.env}"
        else:
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except _Invalid as exc:
            raise ValueError(f"taskwatch: {source} must be {exc}; got {_shown(raw)}") from None
    if "hang_threshold" in values and values["hang_threshold"] is not None:
        block = values.get("block_threshold", Options.block_threshold)
        if values["hang_threshold"] <= block:
            raise ValueError(
                "taskwatch: option 'hang_threshold' must be greater than block_threshold "
                f"({block}); got {values['hang_threshold']!r}"
            )
    if "flight_block" in values:
        block = values.get("block_threshold", Options.block_threshold)
        if values["flight_block"] < block:
            raise ValueError(
                "taskwatch: option 'flight_block' must be at least block_threshold "
                f"({block}): shorter blocks are not seen; got {values['flight_block']!r}")
    return Options(**values)


def _shown(value: Any, limit: int = 80) -> str:
    """The rejected value for an error message: short, and never failing itself."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def markdown_table() -> str:
    """The options table for the README, generated so docs and code cannot drift apart."""
    rows = ["| option | variable | default | meaning |", "|---|---|---|---|"]
    for spec in SPECS:
        default = spec.default
        if spec.name == "kinds":
            default = "all"
        rows.append(f"| `{spec.name}` | `{spec.env}` | `{default}` | {spec.help} |")
    return "\n".join(rows)
