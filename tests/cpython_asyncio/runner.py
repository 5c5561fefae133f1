"""Child process: run one module of the interpreter's own ``test`` package, one JSON line per event.

    python runner.py test.test_asyncio.test_tasks OUT.jsonl [--only F] [--exclude F] [--test-timeout S]
                     [--shard I/N]

Runs under the interpreter being tested (3.11+, standard library only; it is a script, not part of
the ``tests`` package). Each test writes a ``start`` line before it runs and an ``end`` line after,
flushed, so a crash or a hang names the test that was running: ``faulthandler`` ends the process
with the stacks on stderr when one test runs longer than ``--test-timeout``. ``--only``/``--exclude``
name files with one test id a line (reruns, and resuming a module after a crash).
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import json
import os
import signal
import sys
import time
import traceback
import unittest

_RANK = {"pass": 0, "skip": 1, "xfail": 2, "xpass": 3, "fail": 4, "error": 5}
_DETAIL = 3000  # characters kept of a traceback (its end: the assertion or exception line)

try:
    from test import support as _support
except ImportError:  # pragma: no cover - every CPython build here ships the test package
    _support = None


def _taskwatch_counters() -> tuple[int, dict[str, int]] | None:
    """(internal errors, findings by kind) of an installed taskwatch, or None (plain run)."""
    tw = sys.modules.get("taskwatch")
    if tw is None:
        return None
    try:
        if not tw.is_installed():
            return None
        guard = sys.modules["taskwatch._core._guard"]
        state = sys.modules["taskwatch._core._hooks"].current()
        return guard.count, dict(state.counts)
    except Exception:
        return None


def _header(module: str) -> dict:
    info: dict = {"event": "header", "module": module, "python": sys.version.split()[0],
                  "executable": sys.executable, "pid": os.getpid()}
    tw = sys.modules.get("taskwatch")
    if tw is not None:
        site = sys.modules.get("sitecustomize")
        info["taskwatch"] = {
            "file": getattr(tw, "__file__", None),
            "installed": bool(tw.is_installed()),
            "options": repr(tw._hooks.current().options) if tw.is_installed() else None,
            "speedups": getattr(sys.modules.get("taskwatch._core._accel"), "speedups", None) is not None,
            "install_error": getattr(site, "install_error", None),
        }
    return info


class JsonResult(unittest.TestResult):
    """Writes each test's outcome as it ends; subtests fold into their test's outcome."""

    def __init__(self, emit, test_timeout: float | None) -> None:
        super().__init__()
        self.emit = emit
        self.test_timeout = test_timeout
        self.current: dict | None = None
        self.started = 0.0
        self.counters = None

    def _text(self, err, test) -> str:
        try:
            text = self._exc_info_to_string(err, test)
        except Exception:
            text = "".join(traceback.format_exception(*err))
        return text[-_DETAIL:]

    def startTest(self, test) -> None:
        super().startTest(test)
        self.current = {"id": test.id(), "outcome": "pass", "detail": None}
        if _support is not None:
            _support.environment_altered = False
        self.counters = _taskwatch_counters()
        self.emit({"event": "start", "id": test.id()})
        self.started = time.perf_counter()
        if self.test_timeout:
            faulthandler.dump_traceback_later(self.test_timeout, exit=True)

    def _set(self, test, outcome: str, detail: str | None) -> None:
        cur = self.current
        if cur is None or cur["id"] != test.id():
            # setUpClass/setUpModule/tearDown* errors come without startTest
            self.emit({"event": "end", "id": test.id(), "outcome": outcome, "detail": detail,
                       "fixture": True})
            return
        if _RANK[outcome] >= _RANK[cur["outcome"]]:
            cur["outcome"] = outcome
            if detail is not None:
                cur["detail"] = detail

    def addError(self, test, err) -> None:
        self._set(test, "error", self._text(err, test))

    def addFailure(self, test, err) -> None:
        self._set(test, "fail", self._text(err, test))

    def addSkip(self, test, reason) -> None:
        self._set(test, "skip", str(reason))

    def addExpectedFailure(self, test, err) -> None:
        self._set(test, "xfail", None)

    def addUnexpectedSuccess(self, test) -> None:
        self._set(test, "xpass", None)

    def addSubTest(self, test, subtest, err) -> None:
        if err is None:
            return
        failed = issubclass(err[0], test.failureException)
        self._set(test, "fail" if failed else "error",
                  f"[subtest {subtest._subDescription()}]\n" + self._text(err, test))

    def stopTest(self, test) -> None:
        if self.test_timeout:
            faulthandler.cancel_dump_traceback_later()
        cur, self.current = self.current, None
        if cur is not None:
            cur["event"] = "end"
            cur["secs"] = round(time.perf_counter() - self.started, 4)
            if _support is not None and _support.environment_altered:
                cur["env_changed"] = True
            after = _taskwatch_counters()
            if after is not None and self.counters is not None:
                errors = after[0] - self.counters[0]
                if errors:
                    cur["tw_internal_errors"] = errors
                found = {k: n - self.counters[1].get(k, 0) for k, n in after[1].items()
                         if n != self.counters[1].get(k, 0)}
                if found:
                    cur["tw_findings"] = found
            self.emit(cur)
        super().stopTest(test)


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def _shard(tests: list, spec: str) -> list:
    """The tests of part i of n: whole classes (their fixtures run once), the biggest classes
    first to the part with fewest tests so far; the same split in every run of a module."""
    index, count = (int(x) for x in spec.split("/"))
    if count <= 1:
        return tests
    by_class: dict[str, list] = {}
    for test in tests:
        by_class.setdefault(f"{type(test).__module__}.{type(test).__qualname__}", []).append(test)
    sizes = [0] * count
    mine = set()
    for name in sorted(by_class, key=lambda n: (-len(by_class[n]), n)):
        part = sizes.index(min(sizes))
        sizes[part] += len(by_class[name])
        if part == index:
            mine.add(name)
    return [t for t in tests if f"{type(t).__module__}.{type(t).__qualname__}" in mine]


def _ids(path: str | None) -> set[str] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("module")
    parser.add_argument("out")
    parser.add_argument("--only")
    parser.add_argument("--exclude")
    parser.add_argument("--test-timeout", type=float, default=60.0)
    parser.add_argument("--shard", default="0/1", help="i/n: run the i-th of n parts (whole classes)")
    args = parser.parse_args(argv)
    faulthandler.enable()
    # A process started in the background inherits SIGINT ignored; Python then keeps it ignored
    # and asyncio.Runner's Ctrl-C tests wait forever. Tests expect Python's usual handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = open(args.out, "a", encoding="utf-8")

    def emit(record: dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    emit(_header(args.module))
    try:
        absent = importlib.util.find_spec(args.module) is None
    except ImportError:
        absent = True
    if absent:
        emit({"event": "absent"})
        return 0
    try:
        suite = unittest.defaultTestLoader.loadTestsFromName(args.module)
    except Exception:
        emit({"event": "load-error", "detail": traceback.format_exc()[-_DETAIL:]})
        return 2
    tests = list(_flatten(suite))
    only, exclude = _ids(args.only), _ids(args.exclude) or set()
    tests = _shard(tests, args.shard)
    tests = [t for t in tests if (only is None or t.id() in only) and t.id() not in exclude]
    emit({"event": "loaded", "ids": [t.id() for t in tests]})
    result = JsonResult(emit, args.test_timeout)
    unittest.TestSuite(tests).run(result)
    emit({"event": "done", "tw_final": _taskwatch_counters()})
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
