"""Which ``except`` clause caught an exception thrown into a suspended coroutine.

A swallowed cancellation is easiest to fix when the finding names the ``except`` line that caught
the ``CancelledError``. When ``cancel()`` is called, the target task is suspended at an ``await``;
its await chain is kept as cheap keys ``(code, instruction offset)``. Only if the task then swallows
the cancel are those keys resolved: the code object's exception table gives the handler that covers
the ``await``; ``finally`` and ``with`` clean-ups re-raise, so the handler that covers *their* code is
followed outward, frame by frame, to the first ``except`` clause.
"""

from __future__ import annotations

import dis
import linecache
from types import CodeType
from typing import Any

from . import _sites

_MAX_HOPS = 16
_cache: dict[tuple[int, int], tuple[CodeType, int | None]] = {}
_CACHE_LIMIT = 2048


def await_keys(task: Any) -> tuple[tuple[CodeType, int], ...] | None:
    """``(code, f_lasti)`` of each coroutine frame a suspended task waits in, outermost first;
    None while the task is running (the cancel lands at an ``await`` not reached yet)."""
    try:
        coro = task.get_coro()
    except Exception:
        return None
    if coro is None or getattr(coro, "cr_running", False):
        return None
    keys = []
    obj = coro
    for _ in range(64):
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None) or getattr(
            obj, "gi_frame", None)
        if frame is None:
            break
        keys.append((frame.f_code, frame.f_lasti))
        obj = getattr(obj, "cr_await", None) or getattr(obj, "ag_await", None) or getattr(
            obj, "gi_yieldfrom", None)
        if obj is None:
            break
    return tuple(keys) or None


def except_site(keys: tuple[tuple[CodeType, int], ...] | None) -> _sites.Frame | None:
    """The first ``except`` clause, innermost frame first, that covers where the task waited."""
    for code, lasti in reversed(keys or ()):
        if _sites.is_internal(code):
            continue
        line = _except_line(code, lasti)
        if line is not None:
            return _sites.Frame(code.co_filename, line, code.co_qualname)
    return None


def _except_line(code: CodeType, offset: int) -> int | None:
    key = (id(code), offset)
    hit = _cache.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    try:
        line = _find(code, offset)
    except Exception:  # an unusual code object: say nothing rather than something wrong
        line = None
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[key] = (code, line)
    return line


def _find(code: CodeType, offset: int) -> int | None:
    entries = dis.Bytecode(code).exception_entries
    if not entries:
        return None
    lines = {}
    for instruction in dis.get_instructions(code):
        lineno = instruction.positions.lineno if instruction.positions else None
        lines[instruction.offset] = lineno
    offsets = sorted(lines)
    for _ in range(_MAX_HOPS):
        entry = next((e for e in entries if e.start <= offset < e.end), None)
        if entry is None:
            return None
        line = next((lines[o] for o in offsets if o >= entry.target and lines[o]), None)
        if line is not None:
            text = linecache.getline(code.co_filename, line).lstrip()
            if text.startswith("except"):
                return line
        offset = entry.target  # a finally/with clean-up: it re-raises into the enclosing handler
    return None
