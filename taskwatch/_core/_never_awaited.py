"""never-awaited: a coroutine object dropped without being awaited or scheduled.

CPython reports these through ``warnings._warn_unawaited_coroutine(coro)``; taskwatch wraps that
function, turns the coroutine's origin (when origin tracking is on) into a finding, then calls the
original so the RuntimeWarning is exactly what the program would print anyway.
"""

from __future__ import annotations

import linecache
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from . import _guard, _sites
from ._findings import never_awaited


def make_hook(original: Callable[[Any], None],
              current: Callable[[], Any]) -> Callable[[Any], None]:
    """The interpreter's hook for a coroutine never awaited: report it to the installed state
    (``current()``, None when none), then do what ``original`` does."""

    def _warn_unawaited_coroutine(coro: Any) -> None:
        try:
            _report(coro, current())
        except BaseException:
            _guard.internal_error("never-awaited hook")
        try:
            _warn(coro)
        except (Warning, KeyboardInterrupt):
            raise  # -W error turns the warning into an exception, exactly as without taskwatch
        except BaseException:
            _guard.internal_error("never-awaited warning")
            original(coro)

    _warn_unawaited_coroutine.__wrapped__ = original  # type: ignore[attr-defined]
    return _warn_unawaited_coroutine


def _warn(coro: Any) -> None:
    """Issue the RuntimeWarning CPython issues, attributed to the same frame.

    CPython's own function warns with stacklevel=2 (the frame that dropped the coroutine); called
    from this wrapper that would name taskwatch instead, so the warning is issued here with the
    same text, category and source, one level further out.
    """
    text = f"coroutine '{coro.__qualname__}' was never awaited\n"
    origin = getattr(coro, "cr_origin", None)
    if origin is not None:
        entries = [(filename, lineno, funcname, linecache.getline(filename, lineno))
                   for filename, lineno, funcname in reversed(origin)]
        text += "Coroutine created at (most recent call last)\n"
        text += "".join(traceback.format_list(entries))
    warnings.warn(text.rstrip("\n"), category=RuntimeWarning, stacklevel=3, source=coro)


def _report(coro: Any, state: Any) -> None:
    """Judge by where the coroutine was created (origin tracking), not by whose coroutine it is:
    ``asyncio.sleep(1)`` without ``await`` in the program is the program's bug, while a coroutine
    asyncio made and dropped itself is not."""
    if state is None or "never-awaited" not in state.kinds:
        return
    code = getattr(coro, "cr_code", None)
    origin = [
        _sites.Frame(filename, lineno, funcname)
        for filename, lineno, funcname in reversed(getattr(coro, "cr_origin", None) or ())
    ]
    created_at = None
    if origin:
        app = [f for f in origin if not _sites.is_library_file(f.file)]
        if app:
            created_at = app[-1]
        elif all(_sites.is_internal_file(f.file) for f in origin):
            return  # asyncio or the loop library made it: not the program's coroutine to await
    elif code is not None and _sites.is_internal(code):
        return  # no origin to tell who made it: never blame the program for asyncio's own
    if created_at is None:
        # Made inside a library (``session.post(...)`` builds the request coroutine), or no origin
        # tracking: the frame running when the coroutine was dropped is, for the common statement
        # without ``await``, the program's very line.
        stack = _sites.capture(sys._getframe(2), 1)
        if stack:
            created_at = _sites.site(stack)
    if created_at is None and origin:
        created_at = next((f for f in reversed(origin) if not _sites.is_internal_file(f.file)), None)
    state.emit(never_awaited(_sites.qualified_name(code), created_at, origin))
