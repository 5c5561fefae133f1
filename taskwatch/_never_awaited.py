"""never-awaited: a coroutine object dropped without being awaited or scheduled.

CPython reports these through ``warnings._warn_unawaited_coroutine(coro)``; taskwatch wraps that
function, turns the coroutine's origin (when origin tracking is on) into a finding, then calls the
original so the RuntimeWarning is exactly what the program would print anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from . import _guard, _sites
from ._findings import never_awaited


def make_hook(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def _warn_unawaited_coroutine(coro: Any) -> None:
        try:
            _report(coro)
        except BaseException:
            _guard.internal_error("never-awaited hook")
        original(coro)

    _warn_unawaited_coroutine.__wrapped__ = original  # type: ignore[attr-defined]
    return _warn_unawaited_coroutine


def _report(coro: Any) -> None:
    from ._hooks import current

    state = current()
    if state is None or "never-awaited" not in state.kinds:
        return
    code = getattr(coro, "cr_code", None)
    if code is not None and _sites.is_internal(code):
        return
    origin = [
        _sites.Frame(filename, lineno, funcname)
        for filename, lineno, funcname in reversed(getattr(coro, "cr_origin", None) or ())
    ]
    created_at = None
    for frame in reversed(origin):
        if not _sites.is_internal_file(frame.file):
            created_at = frame
            break
    if created_at is None:
        # No origin tracking: the frame running when the coroutine was dropped is, for the common
        # `send_email()` statement without await, the very line that created it.
        stack = _sites.capture(sys._getframe(1), 1)
        if stack:
            created_at = _sites.site(stack)
    state.emit(never_awaited(_sites.qualified_name(code), created_at, origin))
