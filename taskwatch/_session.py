"""The debugging session: install with session defaults, report at exit, follow child processes.

Child Python processes are followed the way ``opentelemetry-instrument`` does it: a directory with a
``sitecustomize`` module goes first on ``PYTHONPATH``; it installs taskwatch from the ``TASKWATCH_*``
variables the parent exported, then chains to any other ``sitecustomize``.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import Any

import taskwatch

from . import _options, _report
from ._hooks import current

BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")
SESSION_ENV = "TASKWATCH_SESSION"
JSON_ENV = "TASKWATCH_SESSION_JSON"
SESSION_DEFAULTS = {"coroutine_origin": 1}


def export_to_children(cli_options: dict[str, Any], json_path: str | None) -> None:
    """Put the session's options and the bootstrap directory into the environment children inherit."""
    for name, value in cli_options.items():
        spec = next(s for s in _options.SPECS if s.name == name)
        if isinstance(value, (tuple, list)):
            value = ",".join(value)
        os.environ[spec.env] = str(value)
    for name, value in SESSION_DEFAULTS.items():
        spec = next(s for s in _options.SPECS if s.name == name)
        os.environ.setdefault(spec.env, str(value))
    os.environ[SESSION_ENV] = "1"
    if json_path:
        os.environ[JSON_ENV] = os.path.abspath(json_path)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if BOOTSTRAP_DIR not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *paths])


def start(cli_options: dict[str, Any]) -> None:
    """Install for the session (defaults < TASKWATCH_* < command line)."""
    merged = dict(SESSION_DEFAULTS)
    for name in SESSION_DEFAULTS:
        spec = next(s for s in _options.SPECS if s.name == name)
        if spec.env in os.environ:
            merged.pop(name)
    merged.update(cli_options)
    taskwatch.install(**merged)


def finish(json_path: str | None, *, always_print: bool = True) -> dict[str, Any] | None:
    """Collect garbage (so dropped tasks surface), print the summary, write the JSON report."""
    state = current()
    if state is None:
        return None
    try:
        gc.collect()
    except Exception:
        pass
    data = _report.build(state)
    findings = taskwatch.findings()
    if findings or always_print:
        try:
            sys.stderr.flush()
            sys.stderr.write("\n" + _report.summary(findings, data["stats"]))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    if json_path:
        _report.write(state, json_path)
    return data


def bootstrap_child() -> None:
    """Run from the bootstrap sitecustomize in a child process of a session."""
    if os.environ.get(SESSION_ENV) != "1" or current() is not None:
        return
    try:
        taskwatch.install()
    except ValueError as exc:  # the parent validated these; a child must not die of them
        sys.stderr.write(f"{exc}\n")
        return
    json_path = os.environ.get(JSON_ENV)
    child_json = f"{json_path}.{os.getpid()}.json" if json_path else None
    atexit.register(finish, child_json, always_print=False)
