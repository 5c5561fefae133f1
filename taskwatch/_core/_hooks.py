"""Loop hooks: reach every event loop the program creates, asyncio's and uvloop's, and chain.

Rather than replacing the policy (``uvloop.install()`` and ``Runner(loop_factory=...)`` bypass it) or
patching ``_set_running_loop`` (uvloop binds it at import), taskwatch wraps a few methods of the loop
classes themselves: ``__init__`` (a new loop gets its probe before any task exists),
``run_until_complete``/``run_forever`` (loops made before ``install()``), ``set_task_factory`` and
``get_task_factory`` (the program's factory runs behind taskwatch's and reads back as set),
``call_exception_handler`` (asyncio's own reports, whatever handler the program set) and ``close``.
uvloop is hooked when the program imports it, never imported by taskwatch. Every change is recorded
and undone by :func:`unhook`.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import importlib.abc
import importlib.machinery
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from . import _guard, _sites, _task
from ._probe import Probe
from ._state import State

_getframe = sys._getframe
_UNSET: Any = object()  # a keyword the caller did not pass
_tasks = asyncio.tasks
_TASK = asyncio.tasks.Task  # the Task class taskwatch's own derives from
_get_ident = threading.get_ident

_patches: list[tuple[Any, str, Any, bool]] = []  # (owner, attribute, original, owner had it)
_state: State | None = None
_finder: _PostImportFinder | None = None


def current() -> State | None:
    return _state


def _patch(owner: Any, name: str, replacement: Any) -> Any:
    had = name in vars(owner)
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    _patches.append((owner, name, original, had))
    return original


def attach(loop: Any) -> None:
    """Give ``loop`` its probe and put taskwatch's factory in front of the loop's own."""
    state = _state
    if state is None or not state.options.enabled:
        return
    try:
        if loop in state.probes:
            return
        cls = type(loop)
        get = _originals.get((_owner_of(cls), "get_task_factory"))
        setf = _originals.get((_owner_of(cls), "set_task_factory"))
        if get is None or setf is None:
            return
        probe = state.attach(loop, get(loop))
        if probe is None:
            return
        setf(loop, probe.factory)
        state.on_attach(probe, loop)
    except BaseException:
        _guard.internal_error("attach to loop")


def detach(loop: Any) -> None:
    """Give the loop back the factory the program set (or none)."""
    state = _state
    if state is None:
        return
    probe = state.probes.get(loop)
    if probe is None:
        return
    cls = type(loop)
    get = _originals.get((_owner_of(cls), "get_task_factory"))
    setf = _originals.get((_owner_of(cls), "set_task_factory"))
    try:
        if get is not None and setf is not None and get(loop) == probe.factory and not loop.is_closed():
            setf(loop, probe.inner)
    except BaseException:
        _guard.internal_error("detach from loop")
    state.retire(probe)


def _run_starts(loop: Any) -> Any:
    """A loop starts to run (outermost run call only): its probe notes the thread, the watchdog
    starts looking. Returns the probe, or None when there is nothing to note."""
    attach(loop)
    state = _state
    if state is None:
        return None
    probe = state.probes.get(loop)
    if probe is None or probe.run_thread is not None:
        return None
    probe.run_thread = _get_ident()
    watchdog = probe.watchdog
    if watchdog is not None:
        try:
            watchdog.started()
        except BaseException:
            _guard.internal_error("watchdog (loop started)")
    return probe


def _run_ends(probe: Any) -> None:
    probe.run_thread = None
    watchdog = probe.watchdog
    if watchdog is not None:
        try:
            watchdog.finished()
        except BaseException:
            _guard.internal_error("watchdog (loop stopped)")


# Code objects of the run hooks: a loop thread whose innermost Python frame is one of these is
# inside uvloop's C loop, waiting for I/O (the watchdog's notion of idle).
RUN_CODES: set[Any] = set()

_originals: dict[tuple[Any, str], Callable[..., Any]] = {}
_owners: list[Any] = []


def _owner_of(cls: type) -> Any:
    for owner in _owners:
        if issubclass(cls, owner):
            return owner
    return None


def _hook_loop_class(owner: Any) -> None:
    """Wrap the methods of one loop class (asyncio.BaseEventLoop or uvloop.Loop)."""
    if owner in _owners:
        return
    _owners.append(owner)
    names = ("__init__", "run_forever", "run_until_complete", "set_task_factory",
             "get_task_factory", "call_exception_handler", "close", "create_task")
    for name in names:
        _originals[(owner, name)] = getattr(owner, name)
    orig_init = _originals[(owner, "__init__")]
    orig_forever = _originals[(owner, "run_forever")]
    orig_until = _originals[(owner, "run_until_complete")]
    orig_set = _originals[(owner, "set_task_factory")]
    orig_get = _originals[(owner, "get_task_factory")]
    orig_handler = _originals[(owner, "call_exception_handler")]
    orig_close = _originals[(owner, "close")]
    orig_create = _originals[(owner, "create_task")]
    direct = owner is asyncio.BaseEventLoop  # uvloop passes the name its own way: keep its path

    def create_task(self: Any, coro: Any, *, name: Any = _UNSET, context: Any = _UNSET,
                    **kwargs: Any) -> Any:
        probe = getattr(self._task_factory, "probe", None)
        if not kwargs and probe is not None and probe.inner is None and probe.__class__ is Probe:
            self._check_closed()
            if _tasks.Task is not _TASK:
                # The program swapped asyncio's Task class (CPython's tests run the pure-Python
                # Task so): build what the loop builds without a factory, unwatched.
                task = _tasks.Task(coro, loop=self, name=None if name is _UNSET else name,
                                   context=None if context is _UNSET else context)
                if task._source_traceback:
                    del task._source_traceback[-1]
                return task
            return probe.create_task(self, coro, None if name is _UNSET else name,
                                     None if context is _UNSET else context, _getframe(1))
        # Anything else takes the loop's own path, with exactly the keywords the caller gave: 3.14
        # hands them to the task factory verbatim, and a program's factory may not take name=.
        if name is not _UNSET:
            kwargs["name"] = name
        if context is not _UNSET:
            kwargs["context"] = context
        return orig_create(self, coro, **kwargs)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        attach(self)

    def run_forever(self: Any, *args: Any, **kwargs: Any) -> Any:
        probe = _run_starts(self)
        if probe is None:
            return orig_forever(self, *args, **kwargs)
        try:
            return orig_forever(self, *args, **kwargs)
        finally:
            _run_ends(probe)

    def run_until_complete(self: Any, future: Any) -> Any:
        probe = _run_starts(self)
        if probe is None:
            return orig_until(self, future)
        try:
            return orig_until(self, future)
        finally:
            _run_ends(probe)

    def set_task_factory(self: Any, factory: Any) -> None:
        state = _state
        probe = state.probes.get(self) if state is not None else None
        if probe is None or probe.closed:
            orig_set(self, factory)
            return
        orig_set(self, factory)  # validates exactly as the loop does
        probe.inner = factory
        orig_set(self, probe.factory)

    def get_task_factory(self: Any) -> Any:
        state = _state
        probe = state.probes.get(self) if state is not None else None
        if probe is None or probe.closed:
            return orig_get(self)
        return probe.inner

    def call_exception_handler(self: Any, context: dict[str, Any]) -> None:
        state = _state
        if state is not None:
            try:
                probe = state.probes.get(self)
                if probe is not None:
                    probe.on_loop_exception(context)
            except BaseException:
                _guard.internal_error("exception handler")
        return orig_handler(self, context)

    def close(self: Any) -> None:
        state = _state
        if state is not None and not self.is_closed():
            probe = state.probes.get(self)
            if probe is not None and not self.is_running():
                try:
                    probe.report_leaks("the event loop was closed",
                                       "it was left behind with the closed loop")
                except BaseException:
                    _guard.internal_error("leak check at close")
                state.retire(probe)
        return orig_close(self)

    for name, func in (("__init__", __init__), ("run_forever", run_forever),
                       ("run_until_complete", run_until_complete),
                       ("set_task_factory", set_task_factory), ("get_task_factory", get_task_factory),
                       ("call_exception_handler", call_exception_handler), ("close", close),
                       ("create_task", create_task)):
        if name == "create_task" and not direct:
            continue
        original = _originals[(owner, name)]
        func.__name__ = getattr(original, "__name__", name)
        func.__qualname__ = f"{owner.__qualname__}.{name}"
        func.__doc__ = getattr(original, "__doc__", None)
        func.__wrapped__ = original  # type: ignore[attr-defined]
        if name in ("run_forever", "run_until_complete"):
            RUN_CODES.add(func.__code__)
        if name == "run_forever":
            _sites.add_boundary(func.__code__)
        elif name == "run_until_complete":
            _sites.add_entry(func.__code__)
        _patch(owner, name, func)


def _register_wrapper(func: Any, inner_name: str, local: str) -> None:
    """Let the factory see through another library's coroutine wrapper to the user's coroutine."""
    from ._hotpath import WRAPPERS

    code = getattr(func, "__code__", None)
    for const in (code.co_consts if code is not None else ()):
        if getattr(const, "co_name", None) == inner_name:
            WRAPPERS[id(const)] = (const, local)


def _hook_uvloop(module: Any) -> None:
    global _RUN_FUNCTIONS
    try:
        _hook_loop_class(module.Loop)
        _RUN_FUNCTIONS = _run_functions()
        _register_wrapper(getattr(module, "run", None), "wrapper", "main")
    except BaseException:
        _guard.internal_error("hook uvloop")


def _hook_otel_asyncio(module: Any) -> None:
    try:
        from ._hotpath import WRAPPERS

        method = getattr(getattr(module, "AsyncioInstrumentor", None), "trace_coroutine", None)
        code = getattr(method, "__code__", None)
        if code is not None:
            WRAPPERS[id(code)] = (code, "coro")
    except BaseException:
        _guard.internal_error("hook opentelemetry asyncio")


_POST_IMPORT = {"uvloop": _hook_uvloop,
                "opentelemetry.instrumentation.asyncio": _hook_otel_asyncio}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Hooks uvloop (and sees through OTel's coroutine wrapper) right after the program imports
    them: taskwatch never imports them itself."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        callback = _POST_IMPORT.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return None
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            if _state is not None:
                callback(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_RUNNER_EXIT = getattr(getattr(asyncio.runners, "Runner", None), "__exit__", None)
_RUNNER_EXIT_CODE = getattr(_RUNNER_EXIT, "__code__", None)


def _run_functions() -> frozenset[Any]:
    """``asyncio.run`` (and uvloop.run on 3.11, which has its own ``with Runner()``): a ``with``
    block there that ends without an exception means the main coroutine returned."""
    codes = {asyncio.runners.run.__code__}
    uvloop = sys.modules.get("uvloop")
    run = getattr(uvloop, "run", None)
    if getattr(run, "__code__", None) is not None:
        codes.add(run.__code__)
    return frozenset(codes)


_RUN_FUNCTIONS: frozenset[Any] = frozenset({asyncio.runners.run.__code__})


def _shutdown_reason() -> str:
    """Why the runner is shutting its loop down. ``asyncio.run``/``uvloop.run`` leave a
    ``with Runner()`` block whose ``__exit__`` calls ``close()``: its ``exc_val`` is what ended the
    main coroutine (``sys.exc_info()`` would also see an unrelated exception being handled around
    the ``asyncio.run()`` call)."""
    frame = sys._getframe(2)
    for _ in range(4):  # _cancel_all_tasks <- Runner.close <- Runner.__exit__
        if frame is None:
            break
        if frame.f_code is _RUNNER_EXIT_CODE:
            exc = frame.f_locals.get("exc_val")
            caller = frame.f_back
            if exc is None and caller is not None and caller.f_code in _RUN_FUNCTIONS:
                return "the runner shut down its loop (the main coroutine had returned)"
            if exc is None:  # __exit__(None, None, None) called by hand (pytest-asyncio): no claim
                return "the runner shut down its loop"
            if isinstance(exc, KeyboardInterrupt):
                return ("the runner shut down its loop after KeyboardInterrupt (Ctrl-C or SIGINT) "
                        "interrupted the main coroutine")
            if isinstance(exc, asyncio.CancelledError):
                return "the runner shut down its loop after the main coroutine was cancelled"
            return ("the runner shut down its loop after the main coroutine raised "
                    f"{type(exc).__name__}")
        frame = frame.f_back
    return "the runner shut down its loop"  # close() called by hand: no claim about why


def _cancel_all_tasks_hook(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def _cancel_all_tasks(loop: Any) -> None:
        state = _state
        if state is not None:
            probe = state.probes.get(loop)
            if probe is not None:
                try:
                    probe.report_leaks(_shutdown_reason())
                except BaseException:
                    _guard.internal_error("leak check at shutdown")
        return original(loop)

    return _cancel_all_tasks


_fork_registered = False


def _after_fork_in_child() -> None:
    """Only the forking thread survives a fork: locks another thread held are held forever in the
    child, and taskwatch's thread is gone. Make both anew."""
    _guard.after_fork()
    state = _state
    if state is not None:
        try:
            state.lock = threading.RLock()
            state.instruments.call("after_fork")
            state.ticker.after_fork()
        except BaseException:
            _guard.internal_error("after fork")


def hook(state: State) -> None:
    """Install every hook for ``state`` (idempotent per process; undone by :func:`unhook`)."""
    global _state, _finder, _fork_registered
    _state = state
    if not _fork_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_registered = True
    _hook_loop_class(asyncio.BaseEventLoop)
    for name, callback in _POST_IMPORT.items():
        if name in sys.modules:
            callback(sys.modules[name])
    _finder = _PostImportFinder()
    sys.meta_path.insert(0, _finder)
    _patch(asyncio.runners, "_cancel_all_tasks",
           _cancel_all_tasks_hook(asyncio.runners._cancel_all_tasks))
    from . import _never_awaited

    if hasattr(warnings, "_warn_unawaited_coroutine"):
        _patch(warnings, "_warn_unawaited_coroutine",
               _never_awaited.make_hook(warnings._warn_unawaited_coroutine, current))
    _task.on_cancel = _on_cancel
    _task.on_exception_read = _on_exception_read
    _task.seen_hooks = bool(state.precise_ends)


def _probe_for_task(task: Any) -> Any:
    state = _state
    if state is None:
        return None
    try:
        return state.probes.get(task.get_loop())
    except Exception:
        return None


def _on_cancel(task: Any, msg: Any, frame: Any, via: int | None) -> None:
    probe = _probe_for_task(task)
    if probe is not None:
        probe.on_cancel(task, msg, frame, via)


def _on_exception_read(task: Any, frame: Any) -> None:
    """exception() returned an error: the probe checks whether gather() is discarding it."""
    probe = _probe_for_task(task)
    if probe is not None and "lost-exception" in probe.state.kinds:
        probe.on_exception_read(task, frame)


def unhook() -> None:
    """Undo every change :func:`hook` and :func:`attach` made."""
    global _state, _finder
    state = _state
    if state is not None:
        for loop in list(state.probes.keys()):
            detach(loop)
    _task.on_cancel = None
    _task.on_exception_read = None
    _task.seen_hooks = False
    while _patches:
        owner, name, original, had = _patches.pop()
        if had:
            setattr(owner, name, original)
        else:
            try:
                delattr(owner, name)
            except AttributeError:
                pass
    _originals.clear()
    _owners.clear()
    if _finder is not None:
        try:
            sys.meta_path.remove(_finder)
        except ValueError:
            pass
        _finder = None
    _state = None
