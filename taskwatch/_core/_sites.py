"""Code sites: cheap keys on the hot path, readable frames later.

A site is a ``(code object, instruction offset)`` pair read off a live frame. Keeping the pair costs a
tuple slot and keeps no frame, locals or traceback alive; turning it into ``file:line function`` text
happens only when a finding or a report needs it (architecture principle 1).

It is also the one home of the rule for whose code a frame is, in three nested circles:

* internal (``is_internal``, ``is_internal_file``): asyncio, taskwatch and the loop libraries, the
  machinery between the program and the loop; a site skips it to reach the line that asked;
* library (``is_library_file``): the internal files plus the standard library, installed packages
  and frozen modules; ``code_base`` names which one;
* the application's own (``is_app_file``): everything else. A finding names these lines, and
  ``library_affair`` says when none of the program's lines is involved at all.
"""

from __future__ import annotations

import asyncio
import os
import sys
from types import CodeType, FrameType
from typing import Any, NamedTuple

from ._accel import speedups

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_TASKWATCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # the package
# Libraries whose frames sit between the user's line and the loop: creation and cancel sites skip
# them so that the site is the user's own line, never a frame inside asyncio or taskwatch.
_INTERNAL_PARTS = (
    os.sep + "uvloop" + os.sep,
    os.sep + "anyio" + os.sep + "_backends" + os.sep,
    os.sep + "anyio" + os.sep + "_core" + os.sep,
    os.sep + "anyio" + os.sep + "from_thread.py",
    os.sep + os.path.join("opentelemetry", "instrumentation", "asyncio") + os.sep,
    os.sep + "aiomonitor" + os.sep,
    os.sep + "pytest_asyncio" + os.sep,
    os.sep + "contextlib.py",
)
_CACHE_LIMIT = 20_000

# id(code) -> (code, True if the frame belongs to asyncio/taskwatch/a loop library). Keyed by id:
# hashing a code object hashes its bytecode and constants, far too slow for the hot path; the code
# object is kept in the value so an id is never confused with a reused one.
_internal: dict[int, tuple[CodeType, bool]] = {}
# Codes of the frames that run the event loop itself (Runner.run, run_forever, Handle._run and
# taskwatch's own run wrappers). A walk that reaches one without meeting a user frame is in a loop
# callback: the user's line that started the loop is not where a task was created or cancelled.
_boundary: set[int] = set()
_boundary_codes: list[CodeType] = []  # keeps the ids above valid


def add_boundary(code: CodeType) -> None:
    _boundary_codes.append(code)
    _boundary.add(id(code))
    forget_classes()


def forget_classes() -> None:
    """Drop the cached internal/boundary class of every code object (after either rule changed)."""
    _internal.clear()
    if speedups is not None:
        speedups.invalidate()


_entries: set[int] = set()  # Runner.run, run_until_complete: where the main task is created
# Frames a main task is created through: task-creation functions and the runners.
_creation_files = tuple(os.path.join(_ASYNCIO_DIR, name) for name in (
    "tasks.py", "taskgroups.py", "base_events.py", "runners.py")) + (_TASKWATCH_DIR,)
_creation_parts = (os.sep + os.path.join("uvloop", "__init__.py"),)


def add_entry(code: CodeType) -> None:
    """A loop entry point (run_until_complete and its wrappers): a boundary for callbacks, but the
    main task created right there is the program's own, created at the line that started the loop."""
    add_boundary(code)
    _entries.add(id(code))


def capture_at_boundary(frame: FrameType | None, depth: int) -> tuple[Any, ...] | None:
    """The slow path for a walk that met a loop frame: the main task (created by Runner.run or
    run_until_complete, through task-creation functions only) gets the line that started the loop;
    a task created from a loop callback gets no user site (None)."""
    while frame is not None:
        code = frame.f_code
        if not is_internal(code):
            return _capture_from(frame, depth)
        if id(code) in _boundary and id(code) not in _entries:
            return None
        filename = code.co_filename
        if not (filename.startswith(_creation_files) or filename.endswith(_creation_parts)
                or id(code) in _entries):
            return None  # a callback frame (timeouts, streams...) created it
        frame = frame.f_back
    return None


def _capture_from(frame: FrameType, depth: int) -> tuple[Any, ...]:
    out = [frame.f_code, frame.f_lasti]
    left = depth - 1
    frame = frame.f_back
    while left and frame is not None and not is_internal(frame.f_code):
        out.append(frame.f_code)
        out.append(frame.f_lasti)
        left -= 1
        frame = frame.f_back
    return tuple(out)


def _default_boundaries() -> None:
    import asyncio.base_events
    import asyncio.events
    import asyncio.runners

    for func in (asyncio.events.Handle._run, asyncio.base_events.BaseEventLoop.run_forever):
        code = getattr(func, "__code__", None)
        if code is not None:
            add_boundary(code)
    for func in (asyncio.runners.Runner.run, asyncio.base_events.BaseEventLoop.run_until_complete):
        code = getattr(func, "__code__", None)
        if code is not None:
            add_entry(code)


class Frame(NamedTuple):
    """One resolved frame, the report's FRAME."""

    file: str
    line: int
    function: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function}

    def short(self) -> str:
        return f"{_display_path(self.file)}:{self.line} in {self.function}"


def add_internal_path(part: str) -> None:
    """Treat frames whose file path contains ``part`` as library frames (skipped in sites)."""
    global _INTERNAL_PARTS
    if part not in _INTERNAL_PARTS:
        _INTERNAL_PARTS = _INTERNAL_PARTS + (part,)
        forget_classes()


def is_internal(code: CodeType) -> bool:
    """True for code in asyncio, taskwatch or an event-loop library (cached per code object)."""
    entry = _internal.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    flag = _classify(code.co_filename)
    if len(_internal) >= _CACHE_LIMIT:
        _internal.clear()
    _internal[id(code)] = (code, flag)
    return flag


def is_internal_file(filename: str) -> bool:
    """True for a file inside asyncio, taskwatch or a loop library."""
    return _classify(filename)


def is_asyncio_file(filename: str) -> bool:
    """True for a file of the asyncio package itself."""
    return filename.startswith(_ASYNCIO_DIR)


def _library_dirs() -> tuple[str, ...]:
    import site
    import sysconfig

    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.realpath(path) + os.sep)
            dirs.add(os.path.abspath(path) + os.sep)
    try:
        for path in [*site.getsitepackages(), site.getusersitepackages()]:
            dirs.add(os.path.abspath(path) + os.sep)
    except Exception:
        pass
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()
_LIBRARY_DIRS_LONGEST_FIRST = tuple(sorted(_LIBRARY_DIRS, key=len, reverse=True))


def is_library_file(filename: str) -> bool:
    """True for the standard library, installed packages and frozen modules: code that is not the
    application's own (a finding names the application's line that called into it)."""
    return filename.startswith(_LIBRARY_DIRS) or filename.startswith("<") or _classify(filename)


def is_app_file(filename: str) -> bool:
    """True for the application's own code: neither the standard library nor an installed package
    nor taskwatch's machinery."""
    return not is_library_file(filename)


def code_base(filename: str) -> str | None:
    """The installed package or standard-library module a file belongs to (its folder or file
    under the library folder); None for the application's own code."""
    for prefix in _LIBRARY_DIRS_LONGEST_FIRST:  # site-packages inside a stdlib tree wins
        if filename.startswith(prefix):
            return prefix + filename[len(prefix):].split(os.sep, 1)[0]
    return None


def library_affair(code: CodeType | None, *callers: CodeType | None) -> bool:
    """A library's own task handled by library code: ``code`` (the task's coroutine) and each of
    ``callers`` that is known (where it was created, where it was cancelled) are library code.
    No line of the program is involved, so it is not the program's finding."""
    if code is None or not is_library_file(code.co_filename):
        return False
    return all(caller is None or is_library_file(caller.co_filename) for caller in callers)


def _classify(filename: str) -> bool:
    if filename.startswith((_ASYNCIO_DIR, _TASKWATCH_DIR, "uvloop" + os.sep)):  # uvloop's .pyx
        return True
    return any(part in filename for part in _INTERNAL_PARTS)


def capture(frame: FrameType | None, depth: int) -> tuple[Any, ...] | None:
    """Return the user's stack at ``frame`` as a flat ``(code, lasti, code, lasti, ...)`` tuple.

    Frames inside asyncio/taskwatch are skipped until the first user frame (the site); from there the
    contiguous user frames outward are kept, up to ``depth``. ``None`` means no user frame at all:
    the loop or a library created the task from a callback.
    """
    internal = _internal
    boundary = _boundary
    start = frame
    while frame is not None:
        code = frame.f_code
        entry = internal.get(id(code))
        flag = entry[1] if entry is not None and entry[0] is code else is_internal(code)
        if not flag:
            break
        if id(code) in boundary:
            return capture_at_boundary(start, depth)
        frame = frame.f_back
    if frame is None:
        return None
    out = [frame.f_code, frame.f_lasti]
    left = depth - 1
    frame = frame.f_back
    while left and frame is not None:
        code = frame.f_code
        entry = internal.get(id(code))
        flag = entry[1] if entry is not None and entry[0] is code else is_internal(code)
        if flag:
            break
        out.append(code)
        out.append(frame.f_lasti)
        left -= 1
        frame = frame.f_back
    return tuple(out)


def capture_any(frame: FrameType | None, depth: int) -> tuple[Any, ...]:
    """Like :func:`capture`, but falls back to the innermost non-taskwatch frame (for callbacks)."""
    stack = capture(frame, depth)
    if stack is not None:
        return stack
    while frame is not None and frame.f_code.co_filename.startswith(_TASKWATCH_DIR):
        frame = frame.f_back
    if frame is None:
        return ()
    return (frame.f_code, frame.f_lasti)


_lines: dict[tuple[CodeType, int], int] = {}


def line_of(code: CodeType, lasti: int) -> int:
    """Source line of an instruction offset (cached; computed only when a report needs it)."""
    key = (code, lasti)
    line = _lines.get(key)
    if line is None:
        line = code.co_firstlineno
        for start, end, number in code.co_lines():
            if start <= lasti < end and number is not None:
                line = number
                break
        if len(_lines) >= _CACHE_LIMIT:
            _lines.clear()
        _lines[key] = line
    return line


def resolve(stack: tuple[Any, ...] | None) -> list[Frame]:
    """Turn a captured flat stack into frames, outermost first (traceback order)."""
    if not stack:
        return []
    frames = [
        Frame(stack[i].co_filename, line_of(stack[i], stack[i + 1]), stack[i].co_qualname)
        for i in range(0, len(stack), 2)
    ]
    frames.reverse()
    return frames


def site(stack: tuple[Any, ...] | None) -> Frame | None:
    """The innermost frame of a captured stack: the user's line."""
    if not stack:
        return None
    return Frame(stack[0].co_filename, line_of(stack[0], stack[1]), stack[0].co_qualname)


_modules: dict[str, str] = {}


def module_of(filename: str) -> str:
    """Dotted module name of a source file, from ``sys.modules`` (cached)."""
    name = _modules.get(filename)
    if name is None:
        name = ""
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) == filename:
            name = "__main__"  # also loaded as __mp_main__ by multiprocessing
        for mod_name, module in list(sys.modules.items()) if not name else ():
            if getattr(module, "__file__", None) == filename:
                name = "__main__" if mod_name == "__main__" else mod_name
                if mod_name != "__main__":
                    break
        if not name and filename in ("<string>", "<stdin>"):
            name = "__main__"  # python -c / piped scripts
        if not name:
            name = os.path.splitext(os.path.basename(filename))[0]
        _modules[filename] = name
    return name


def qualified_name(code: CodeType | None) -> str:
    """``module.qualname`` of a coroutine's code, e.g. ``app.jobs.send_metrics``."""
    if code is None:
        return "<unknown>"
    return f"{module_of(code.co_filename)}.{code.co_qualname}"


def _display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith(".." + os.sep + "..") else rel


# Task-creation functions that only pass on a coroutine they were given: a task made through them
# was made by whoever called them (ids of their code objects, filled in by _creation_functions()).
_forwarding: set[int] = set()
_forwarding_codes: list[CodeType] = []


def _creation_functions() -> None:
    import asyncio.base_events
    import asyncio.taskgroups
    import asyncio.tasks

    tasks = asyncio.tasks
    for func in (tasks.ensure_future, getattr(tasks, "_ensure_future", None), tasks.create_task,
                 tasks.gather, tasks.shield, tasks.wait_for,
                 asyncio.taskgroups.TaskGroup.create_task,
                 asyncio.base_events.BaseEventLoop.create_task):
        code = getattr(func, "__code__", None)
        if code is not None:
            _forwarding_codes.append(code)
            _forwarding.add(id(code))


def made_by_library(frame: FrameType | None = None) -> bool:
    """Whether a task whose coroutine is asyncio's (or a loop library's) was made by that library
    (``shutdown_asyncgens``, staggered connects), not by the program (``create_task(event.wait())``,
    ``ensure_future(asyncio.sleep(10))``): the first frame past taskwatch and the task-creation
    functions decides. ``frame`` is where the task is being created (default: the caller's)."""
    if frame is None:
        frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if id(code) in _forwarding or code.co_filename.startswith(_TASKWATCH_DIR):
            frame = frame.f_back
            continue
        return is_internal(code)
    return True


def display_path(path: str) -> str:
    """A path as users like to read it: relative to the working directory when close to it."""
    return _display_path(path)


_default_boundaries()
_creation_functions()
if speedups is not None:
    from ._guard import internal_error

    def _classify_for_c(code: CodeType) -> bool:
        return is_internal(code)  # looked up at each call, so tests can break it

    speedups.configure(internal_error, _classify_for_c, _boundary, made_by_library)
