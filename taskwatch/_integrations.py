"""The wings install() starts around the core: logging, the watchdog, the CPU sampler, the
timeline, the dump signal, OpenTelemetry.

Each is independent and guarded: one failing to start is an internal error, never an exception
in the user's program. All but the dump signal listen as instruments on the state.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from ._core import _guard
from ._core._options import Options
from ._core._state import State

OTEL_EXTRA = "pip install 'taskwatch[otel]'"


def check(options: Options) -> None:
    """Before anything is installed: fail now for a part that cannot start (a missing extra)."""
    if options.otel:
        try:
            from .otel import _wiring as otel  # noqa: F401  (imports the OpenTelemetry API and SDK)
        except ImportError as exc:
            raise ImportError(
                f"taskwatch: option 'otel' needs the OpenTelemetry SDK, which cannot be imported "
                f"here ({type(exc).__name__}: {exc}); install the otel extra: {OTEL_EXTRA}",
                name=getattr(exc, "name", None)) from exc


def start(state: State) -> None:
    options = state.options
    if options.log:
        from ._sinks._log import LogSink

        state.instruments.add(LogSink())  # first: a finding is logged before it is exported
    if options.watchdog and "blocked-loop" in state.kinds:
        try:
            from ._core import _hooks
            from ._watchdog import _watch as _watchdog

            _watchdog.enable(state, frozenset(_hooks.RUN_CODES))
        except BaseException:
            _guard.internal_error("start watchdog")
    if options.cpu_sampling:
        try:
            from ._watchdog import _cpu

            state.cpu = _cpu.start(state)
        except BaseException:
            _guard.internal_error("start the cpu sampler")
    if options.recording:
        try:
            from ._timeline._writer import Timeline

            state.timeline = Timeline(state)
            state.timeline.start()
        except BaseException:
            _guard.internal_error("start timeline")
    try:
        from ._live import _serve

        state.knock = _serve.start_knock(state)  # Python 3.14+: taskwatch ps attaches
        if options.control:
            state.control = _serve.start_control(state)
    except BaseException:
        _guard.internal_error("start the live view's channels")
    if options.dump_signal:
        _install_dump_signal(state, options.dump_signal)
    if options.otel:
        from .otel import _wiring as otel  # importable: check() ran first

        otel.enable(state)


def stop(state: State) -> None:
    if state.options.otel:
        try:
            from .otel import _wiring as otel

            otel.disable(state)
        except BaseException:
            _guard.internal_error("stop OpenTelemetry")
    try:
        from ._watchdog import _watch as _watchdog

        _watchdog.disable(state)
    except BaseException:
        _guard.internal_error("stop watchdog")
    if state.cpu is not None:
        try:
            state.instruments.remove(state.cpu)
            state.cpu.stop()
        except BaseException:
            _guard.internal_error("stop the cpu sampler")
    if state.timeline is not None:
        try:
            state.timeline.stop()
        except BaseException:
            _guard.internal_error("stop timeline")
    for name in ("control", "knock"):
        part = getattr(state, name, None)
        if part is not None:
            try:
                state.instruments.remove(part)
                part.stop()
            except BaseException:
                _guard.internal_error(f"stop {name}")
    previous = getattr(state, "saved_signal", None)
    if previous is not None:
        signum, handler = previous
        try:
            signal.signal(signum, handler)
        except (ValueError, OSError):
            pass


def _install_dump_signal(state: State, name: str) -> None:
    signum = getattr(signal, name)

    def handler(_signum: int, _frame: Any) -> None:
        try:
            from ._sinks._dump import render

            sys.stderr.write(render(state))
            timeline = state.timeline
            if timeline is not None and timeline.folder is not None:
                timeline.dump_soon(f"{name} received")
            sys.stderr.flush()
        except BaseException:
            _guard.internal_error("dump signal")

    try:
        state.saved_signal = (signum, signal.signal(signum, handler))  # type: ignore[attr-defined]
    except ValueError:
        _guard.logger.warning("taskwatch: dump_signal=%s needs install() in the main thread", name)
