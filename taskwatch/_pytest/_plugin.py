"""The pytest plugin's hooks, settings and session (see taskwatch.pytest_plugin for what users see)."""

from __future__ import annotations

import json
import os
import time
import types
import warnings
from collections import Counter
from typing import Any

import pytest

import taskwatch

from .._core import _guard, _hooks, _options, _sites
from .._sinks import _report
from . import _watch as watch
from .._core._findings import Finding

__all__ = ["TaskwatchWarning"]

MARKER_ARGS = ("allow", "ignore", "ignore_fixtures", "mode", "enabled")
MODES = ("fail", "warn")
GC_POLICIES = ("auto", "always", "never")
_MARKER_DOC = (
    "taskwatch(allow=[kinds], ignore=[paths or coroutine names], ignore_fixtures=False, "
    "mode='fail'|'warn', enabled=True): check this test with taskwatch: it fails when it leaks "
    "tasks, loses exceptions, leaves coroutines never awaited, swallows cancellations or blocks "
    "the event loop. Kinds: " + ", ".join(_options.KINDS)
)
_GRACE_RETRIES = 5
_TOP_BLOCKS = 5
_MAX_OUTSIDE = 200


def _mostly_gc(finding: Finding) -> bool:
    """A block at least half of which the loop thread spent in the garbage collector."""
    duration = finding.data.get("duration_s") or 0.0
    return duration > 0 and (finding.data.get("gc_s") or 0.0) >= 0.5 * duration


class TaskwatchWarning(UserWarning):
    """Issued for a watched test's findings in ``warn`` mode (``-W error::...`` turns it into a
    failure)."""


# -- options --------------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("taskwatch", "taskwatch (asyncio task checks)")
    group.addoption("--taskwatch", action="store_true", dest="taskwatch", default=None,
                    help="check every test: fail tests that leak tasks, lose exceptions, leave "
                         "coroutines never awaited, swallow cancellations or block the event loop")
    group.addoption("--no-taskwatch", action="store_false", dest="taskwatch",
                    help="turn taskwatch off, whatever the ini file and markers say")
    group.addoption("--taskwatch-mode", dest="taskwatch_mode", default=None, choices=MODES,
                    help="fail (default) or warn when a test has findings")
    group.addoption("--taskwatch-allow", dest="taskwatch_allow", action="append", default=[],
                    metavar="KINDS", help="finding kinds that never fail a test (comma-separated; "
                    "repeatable): " + ", ".join(_options.KINDS))
    group.addoption("--taskwatch-ignore", dest="taskwatch_ignore", action="append", default=[],
                    metavar="PATTERN", help="ignore findings about tasks created in a file "
                    "(path suffix or glob, optional :line) or whose coroutine name matches")
    group.addoption("--taskwatch-block-threshold", dest="taskwatch_block_threshold", default=None,
                    metavar="SECONDS", help="event-loop block that counts as a finding (default 0.1)")
    group.addoption("--taskwatch-json", dest="taskwatch_json", default=None, metavar="PATH",
                    help="write the findings of every watched test to PATH as JSON")
    parser.addini("taskwatch", type="bool", default=False,
                  help="taskwatch: check every test (like --taskwatch)")
    parser.addini("taskwatch_mode", default="fail", help="taskwatch: fail or warn")
    parser.addini("taskwatch_allow", type="args", default=[],
                  help="taskwatch: finding kinds that never fail a test")
    parser.addini("taskwatch_ignore", type="linelist", default=[],
                  help="taskwatch: creation sites (path[:line], globs) or coroutine names to ignore")
    parser.addini("taskwatch_ignore_fixtures", type="bool", default=False,
                  help="taskwatch: ignore tasks started by the test's fixtures (servers, clients)")
    parser.addini("taskwatch_block_threshold", default="",
                  help="taskwatch: seconds an event-loop step may run (default 0.1)")
    parser.addini("taskwatch_grace", default="0.1",
                  help="taskwatch: seconds tasks still pending after a test get to finish")
    parser.addini("taskwatch_gc", default="auto",
                  help="taskwatch: garbage collection after each test, to surface lost errors: "
                       "auto (full only when a task failed or is pending), always, never")


def _kinds(value: Any, where: str) -> frozenset[str]:
    try:
        return frozenset(_options._kinds(value))
    except _options._Invalid as exc:
        raise pytest.UsageError(f"taskwatch: {where} must be {exc}; got {value!r}") from None


def _seconds(value: Any, where: str) -> float:
    try:
        return _options._seconds(value)
    except _options._Invalid as exc:
        raise pytest.UsageError(f"taskwatch: {where} must be {exc}; got {value!r}") from None


class Settings:
    """What applies to one test: the suite's settings merged with its markers."""

    __slots__ = ("enabled", "mode", "allow", "ignore", "ignore_fixtures")

    def __init__(self, enabled: bool, mode: str, allow: frozenset[str],
                 ignore: tuple[watch.Pattern, ...], ignore_fixtures: bool) -> None:
        self.enabled = enabled
        self.mode = mode
        self.allow = allow
        self.ignore = ignore
        self.ignore_fixtures = ignore_fixtures


def _suite_settings(config: pytest.Config) -> tuple[bool | None, Settings]:
    flag = config.getoption("taskwatch")
    enabled = flag if flag is not None else bool(config.getini("taskwatch"))
    mode = config.getoption("taskwatch_mode") or str(config.getini("taskwatch_mode")).strip() or "fail"
    if mode not in MODES:
        raise pytest.UsageError(f"taskwatch: taskwatch_mode must be fail or warn; got {mode!r}")
    allow: frozenset[str] = frozenset()
    for value in [*config.getini("taskwatch_allow"), *config.getoption("taskwatch_allow")]:
        allow |= _kinds(value, "taskwatch_allow")
    ignore = watch.parse_patterns([*config.getini("taskwatch_ignore"),
                                   *config.getoption("taskwatch_ignore")])
    settings = Settings(enabled, mode, allow, ignore, bool(config.getini("taskwatch_ignore_fixtures")))
    return flag, settings


def _item_settings(item: pytest.Item, suite: Settings, forced_off: bool) -> Settings:
    markers = list(item.iter_markers("taskwatch"))  # closest first
    if not markers:
        return Settings(suite.enabled and not forced_off, suite.mode, suite.allow, suite.ignore,
                        suite.ignore_fixtures)
    where = f"@pytest.mark.taskwatch on {item.nodeid}"
    enabled = mode = ignore_fixtures = None
    allow, ignore = set(suite.allow), list(suite.ignore)
    for mark in markers:
        if mark.args:
            raise pytest.UsageError(f"taskwatch: {where} takes keyword arguments only "
                                    f"({', '.join(MARKER_ARGS)}); got {mark.args!r}")
        unknown = sorted(set(mark.kwargs) - set(MARKER_ARGS))
        if unknown:
            raise pytest.UsageError(f"taskwatch: {where}: unknown argument {unknown[0]!r}; "
                                    f"accepted: {', '.join(MARKER_ARGS)}")
        kw = mark.kwargs
        if enabled is None and "enabled" in kw:
            enabled = bool(kw["enabled"])
        if mode is None and "mode" in kw:
            if kw["mode"] not in MODES:
                raise pytest.UsageError(f"taskwatch: {where}: mode must be 'fail' or 'warn'; "
                                        f"got {kw['mode']!r}")
            mode = kw["mode"]
        if ignore_fixtures is None and "ignore_fixtures" in kw:
            ignore_fixtures = bool(kw["ignore_fixtures"])
        if "allow" in kw:
            allow |= _kinds(kw["allow"], f"{where}: allow")
        if "ignore" in kw:
            try:
                ignore.extend(watch.parse_patterns(kw["ignore"]))
            except TypeError as exc:
                raise pytest.UsageError(f"taskwatch: {where}: {exc}") from None
    return Settings(
        (True if enabled is None else enabled) and not forced_off,
        mode or suite.mode, frozenset(allow), tuple(ignore),
        suite.ignore_fixtures if ignore_fixtures is None else ignore_fixtures)


# -- registration ---------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_DOC)
    flag, suite = _suite_settings(config)
    threshold = config.getoption("taskwatch_block_threshold") or str(
        config.getini("taskwatch_block_threshold")).strip()
    block = _seconds(threshold, "the block threshold") if threshold else None
    grace = _seconds(config.getini("taskwatch_grace") or "0.1", "taskwatch_grace")
    gc_policy = str(config.getini("taskwatch_gc")).strip() or "auto"
    if gc_policy not in GC_POLICIES:
        raise pytest.UsageError(f"taskwatch: taskwatch_gc must be one of {', '.join(GC_POLICIES)}; "
                                f"got {gc_policy!r}")
    options: dict[str, Any] = {}
    if "TASKWATCH_LOG" not in os.environ:
        options["log"] = False  # findings go into test reports, not log records
    if "TASKWATCH_COROUTINE_ORIGIN" not in os.environ:
        options["coroutine_origin"] = 1  # names the line that made a never-awaited coroutine
    if block is not None:
        options["block_threshold"] = block
    if suite.enabled and flag is not False:
        try:
            _options.resolve(options)  # TASKWATCH_* variables too: a typo fails now, not mid-run
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(
        TaskwatchSession(config, suite, forced_off=flag is False, install_options=options,
                         grace=grace, gc_policy=gc_policy), "taskwatch-session")


_SETTINGS = pytest.StashKey[Settings]()


class _Crash:
    def __init__(self, message: str) -> None:
        self.message = message
        self.path = ""
        self.lineno = 0


class _Failure:
    """A report's longrepr: the findings as text, and a one-line headline for the short summary."""

    def __init__(self, text: str, headline: str) -> None:
        self.text = text
        self.reprcrash = _Crash(headline)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.rstrip("\n").splitlines():
            tw.line(line, red=line.startswith("taskwatch:"))

    def __str__(self) -> str:
        return self.text


class TaskwatchSession:
    """The plugin's state for one pytest session."""

    def __init__(self, config: pytest.Config, suite: Settings, *, forced_off: bool,
                 install_options: dict[str, Any], grace: float, gc_policy: str) -> None:
        self.config = config
        self.suite = suite
        self.forced_off = forced_off
        self.install_options = install_options
        self.grace = grace
        self.state: Any = None
        self.installed_here = False
        # the state's instrument: findings come to _on_finding (see taskwatch._core._instruments)
        self.sink = types.SimpleNamespace(finding=self._on_finding)
        self.saved_internal: Any = None
        self.current: watch.Window | None = None
        self.wide_ranges: list[tuple[int, int]] = []
        self.any_enabled = False
        # results
        self.watched = 0
        # nodeid -> kinds, by what the findings did: failed the test, warned, or rode along with
        # a test that failed anyway
        self.failed_tests: dict[str, set[str]] = {}
        self.warned_tests: dict[str, set[str]] = {}
        self.noted_tests: dict[str, set[str]] = {}
        self.counts: Counter[str] = Counter()
        self.allowed: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.cancelling = 0
        self.gc_pauses = 0
        self.starved = 0
        self.outside: list[Finding] = []
        self.outside_total = 0
        self.blocks: list[tuple[float, str, Finding]] = []
        self.overhead = 0.0
        self.results: list[dict[str, Any]] = []
        self.tasks_seen = 0
        self.counters = watch.Counters()
        self.gc_policy = gc_policy

    # -- collection: who is watched ---------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self._settings(item)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:  # items other plugins made after modifyitems (anyio does)
            self._settings(item)

    def _settings(self, item: pytest.Item) -> Settings:
        settings = item.stash.get(_SETTINGS, None)
        if settings is None:
            settings = _item_settings(item, self.suite, self.forced_off)
            item.stash[_SETTINGS] = settings
            if settings.enabled:
                self.any_enabled = True
        return settings

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        if not self.suite.enabled or self.forced_off:
            return None
        block = self.install_options.get("block_threshold")
        extra = f", block threshold {block} s" if block else ""
        return f"taskwatch: every test checked (mode {self.suite.mode}{extra})"

    # -- the session: install, uninstall --------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Any:
        if self.any_enabled and not session.config.option.collectonly:
            self._install()
        try:
            yield
        finally:
            self._uninstall()

    def _install(self) -> None:
        if not taskwatch.is_installed():  # else: installed by the program (conftest, -m taskwatch)
            try:
                taskwatch.install(**self.install_options)
            except ValueError as exc:  # a bad TASKWATCH_* variable
                pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
            self.installed_here = taskwatch.is_installed()
        self.state = _hooks.current()
        if self.state is None:
            warnings.warn(TaskwatchWarning("taskwatch is disabled (TASKWATCH_ENABLED=false): "
                                           "no test is checked"), stacklevel=1)
            return
        # pytest's and pluggy's frames are machinery, not the user's lines
        self.saved_internal = _sites._INTERNAL_PARTS
        for part in watch._PYTEST_PARTS:
            _sites.add_internal_path(part)
        self.state.instruments.add(self.sink)

    def _uninstall(self) -> None:
        state, self.state = self.state, None
        if state is not None:
            try:
                watch.collect_garbage("always", None, None)
                stats = state.stats()
                self.tasks_seen = stats["tasks_created"]
                # blocks a busy machine starved are no findings (_blocks.starved): only counted
                self.starved = stats["starved_blocks"]
            except Exception:
                _guard.internal_error("pytest plugin (session end)")
            state.instruments.remove(self.sink)
            if self.installed_here:
                taskwatch.uninstall()
                self.installed_here = False
        if self.saved_internal is not None:
            _sites._INTERNAL_PARTS = self.saved_internal
            _sites.forget_classes()
            self.saved_internal = None

    # -- findings as they come --------------------------------------------------------------------
    def _on_finding(self, finding: Finding) -> None:
        window = self.current
        state = self.state
        if window is None or state is None:
            self._note_outside(finding)
            return
        lineage = watch.TEST
        cancelling = False
        task = finding.task
        if task is not None and "id" in task:
            live = watch.find_live(state, task["id"]) if finding.kind in watch.OWNED_KINDS else None
            chain = watch.chain_of(live[0]) if live is not None else watch.chain_of_dict(task)
            lineage = window.lineage(chain)
            cancelling = (finding.kind == "leaked-task" and live is not None
                          and watch.being_cancelled(live[1]))
        if finding.kind in watch.OWNED_KINDS and lineage not in (watch.TEST, watch.SETUP):
            self._note_outside(finding)
            return
        if task is None or lineage == watch.INTERNAL:
            # no task of the user's (a never-awaited coroutine, a block in the runner's task):
            # whose it is follows from the phase it came in
            in_fixtures = window.call_id is None or window.teardown_id is not None
            lineage = watch.SETUP if in_fixtures else watch.TEST
        if window.enabled:
            window.entries.append(watch.Entry(finding, lineage, cancelling))

    def _note_outside(self, finding: Finding) -> None:
        if not self.any_enabled:
            return
        self.outside_total += 1
        if finding.kind == "blocked-loop":
            self._note_block("(outside tests)", finding)
        if len(self.outside) < _MAX_OUTSIDE:
            self.outside.append(finding)

    def _note_block(self, nodeid: str, finding: Finding) -> None:
        self.blocks.append((finding.data.get("duration_s", 0.0), nodeid, finding))
        if len(self.blocks) > 4 * _TOP_BLOCKS:
            self.blocks.sort(key=lambda b: -b[0])
            del self.blocks[_TOP_BLOCKS:]

    # -- one test -------------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        if self.state is None:
            yield
            return
        enabled = self._settings(item).enabled
        window = watch.Window(item.nodeid, enabled, self.wide_ranges)
        if enabled:
            self.watched += 1
            window.counters = self.counters.read(self.state)
        self.current = window
        try:
            yield
        finally:
            self.current = None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        if self.state is None or getattr(fixturedef, "scope", "function") == "function":
            yield
            return
        low = watch.peek_id()
        try:
            yield
        finally:
            self.wide_ranges.append((low, watch.peek_id()))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        window = self.current
        if window is not None:
            window.call_id = watch.peek_id()
        try:
            yield
        finally:
            if window is not None:
                window.teardown_id = watch.peek_id()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
        outcome = yield
        window = self.current
        if window is None or not window.enabled or self.state is None:
            return
        try:
            report = outcome.get_result()
        except BaseException:  # making the report failed: pytest reports that itself
            return
        started = time.perf_counter()
        try:
            self._on_report(item, window, report)
        except Exception:
            _guard.internal_error("pytest plugin")
        finally:
            self.overhead += time.perf_counter() - started

    def _on_report(self, item: pytest.Item, window: watch.Window, report: pytest.TestReport) -> None:
        settings = item.stash[_SETTINGS]
        if report.when == "setup":
            if not report.passed:
                window.test_failed = True
            return
        if report.when == "call":
            if not report.passed or hasattr(report, "wasxfail"):
                window.test_failed = True
                return
            failing = self._evaluate(window, settings)
            if failing:
                self._apply(item, report, window, settings, failing, "call")
            return
        # teardown: everything the test left behind is known now
        state = self.state
        watch.collect_garbage(self.gc_policy, window.counters, self.counters.read(state),
                              lambda: self.counters.read(state))
        watch.check_pending(self.state, window, ignore_fixtures=settings.ignore_fixtures,
                            grace=self.grace / _GRACE_RETRIES, retries=_GRACE_RETRIES)
        failing = self._evaluate(window, settings)
        if failing:
            self._apply(item, report, window, settings, failing, "teardown")
        self._record_result(item, window)

    def _evaluate(self, window: watch.Window, settings: Settings) -> list[Finding]:
        failing = []
        for entry in window.entries:
            if entry.evaluated:
                continue
            entry.evaluated = True
            finding = entry.finding
            if finding.kind == "blocked-loop":
                self._note_block(window.nodeid, finding)
            if entry.cancelling:
                # cancel() was called and not yet delivered when the loop closed: it was ending
                self.cancelling += 1
                continue
            if finding.kind == "blocked-loop" and _mostly_gc(finding):
                # the collector paused the loop thread: a property of the heap, not of this test
                self.gc_pauses += 1
                continue
            if settings.ignore_fixtures and entry.lineage in (watch.SETUP, watch.FIXTURE, watch.BEFORE):
                self.ignored[finding.kind] += 1
                continue
            if watch.ignored_by(finding, settings.ignore) is not None:
                self.ignored[finding.kind] += 1
                continue
            if finding.kind in settings.allow:
                self.allowed[finding.kind] += 1
                continue
            failing.append(finding)
            window.reported.append(entry)
        return failing

    def _apply(self, item: pytest.Item, report: pytest.TestReport, window: watch.Window,
               settings: Settings, failing: list[Finding], phase: str) -> None:
        for finding in failing:
            self.counts[finding.kind] += 1
        text = watch.failure_text(item.nodeid, failing, phase)
        kinds = {f.kind for f in failing}
        if window.test_failed or report.failed:
            # the test already failed: show the findings with it, do not add a second failure
            report.sections.append(("taskwatch findings (teardown)", text))
            target = self.failed_tests if item.nodeid in self.failed_tests else self.noted_tests
            target.setdefault(item.nodeid, set()).update(kinds)
            return
        if settings.mode == "warn":
            try:
                item.warn(TaskwatchWarning(text))
            except Warning:  # -W error turned the warning into an exception: fail as asked
                pass
            else:
                self.warned_tests.setdefault(item.nodeid, set()).update(kinds)
                return
        report.outcome = "failed"
        report.longrepr = _Failure(text, watch.headline(failing))
        window.test_failed = True
        self.failed_tests.setdefault(item.nodeid, set()).update(kinds)

    def _record_result(self, item: pytest.Item, window: watch.Window) -> None:
        if self.config.getoption("taskwatch_json") and window.reported:
            self.results.append({"nodeid": item.nodeid,
                                 "findings": [e.finding.as_dict() for e in window.reported]})

    # -- the end --------------------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.config.getoption("taskwatch_json")
        if not path or not self.any_enabled:
            return
        data = {
            "taskwatch": _report.VERSION,
            "tests_watched": self.watched,
            "tests": self.results,
            "outside_tests": [f.as_dict() for f in self.outside],
            "counts": dict(self.counts),
            "allowed": dict(self.allowed),
            "gc_pauses": self.gc_pauses,
            "starved_blocks": self.starved,
            "ignored": dict(self.ignored),
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.any_enabled or self.watched == 0:
            return
        for line in self.summary_lines():
            if line.startswith("=="):
                terminalreporter.write_sep("=", line.strip("= "))
            else:
                terminalreporter.write_line(line)

    def summary_lines(self) -> list[str]:
        lines = ["== taskwatch summary =="]
        tests = {**self.noted_tests, **self.warned_tests, **self.failed_tests}
        head = f"taskwatch: {self.watched} test{'s' if self.watched != 1 else ''} watched"
        if tests:
            parts = [f"{len(group)} {word}" for group, word in (
                (self.failed_tests, "failed"), (self.warned_tests, "warned"),
                (self.noted_tests, "failing anyway")) if group]
            head += f", {len(tests)} with findings ({', '.join(parts)})"
        else:
            head += ", no findings"
        lines.append(head)
        if self.counts:
            lines.append("findings by kind: " + ", ".join(
                f"{n} {kind}" for kind, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))))
        others = []
        if self.allowed:
            others.append("allowed: " + ", ".join(f"{n} {k}" for k, n in sorted(self.allowed.items())))
        if self.ignored:
            others.append("ignored: " + ", ".join(f"{n} {k}" for k, n in sorted(self.ignored.items())))
        if self.cancelling:
            others.append(f"{self.cancelling} task(s) still being cancelled at loop close (not leaks)")
        if self.gc_pauses:
            others.append(f"{self.gc_pauses} block(s) mostly garbage collection (not failed)")
        if self.starved:
            others.append(f"{self.starved} block(s) where a busy machine gave the loop too little "
                          "CPU (not failed)")
        if others:
            lines.append("; ".join(others))
        for nodeid, kinds in list(tests.items())[:20]:
            lines.append(f"  {nodeid}: {', '.join(sorted(kinds))}")
        if len(tests) > 20:
            lines.append(f"  ... and {len(tests) - 20} more")
        blocks = sorted(self.blocks, key=lambda b: -b[0])[:_TOP_BLOCKS]
        if blocks:
            lines.append("slowest event-loop blocks:")
            for duration, nodeid, finding in blocks:
                where = finding.data.get("blocked_at")
                at = f" at {watch._short(where)}" if where else ""
                lines.append(f"  {duration:.3f} s  {nodeid}{at}")
        if self.outside_total:
            kinds = Counter(f.kind for f in self.outside)
            lines.append(f"outside any test: {self.outside_total} finding(s) ("
                         + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                         + "): from wider-scoped fixtures, session teardown or unwatched tests")
            for finding in self.outside[:5]:
                lines.append(f"  [{finding.kind}] {finding.message}")
        lines.append(f"taskwatch: {self.tasks_seen} tasks seen, {self.overhead:.3f} s spent in "
                     "end-of-test checks")
        return lines
