"""The instruments: how the wings (logging, the watchdog, OpenTelemetry, pytest) listen to the core.

In the spirit of trio's ``Instruments``: an instrument is any object, and the core calls only the
hooks it has. A hook that raises is an internal error (counted, logged once) and its instrument is
dropped, so a broken sink never reaches the program and never fails again.

Hooks, called on whichever thread the event happens on:

* ``finding(finding)``: a finding was stored (its kind is on and its site not silenced);
* ``loop_attached(probe, loop)``: a loop got its probe;
* ``stats(out)``: ``stats()`` is building its dict; add counters to ``out``;
* ``after_fork()``: in a forked child, where the other threads and the locks they held are gone;
* ``task_cancelled(task, rec)``: a ``cancel()`` of a watched task was recorded.

Three more are paid per task, so the hot path (C or Python) calls them directly instead of through
:meth:`Instruments.call`; an error there is counted and the instrument stays:

* ``task_created(rec, context)``: before the task is built, with the context taskwatch made for it
  (None when the caller or a foreign factory supplies one);
* ``task_ended(rec, task)``: at the end of the task's done callback, for the tasks whose records
  close as they end (``State.precise_ends``, which OpenTelemetry sets; a cancelled task); others
  close when first seen done or when freed;
* ``task_gate()``: returns the tuple that lets the C hot path skip the two hooks above for tasks that
  cannot matter to the instrument (``TaskSpans.c_gate``), or None. Used only when a single
  instrument has per-task hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._guard import internal_error

HOOKS = ("finding", "loop_attached", "stats", "after_fork", "task_cancelled")
TASK_HOOKS = ("task_created", "task_ended")


class Instruments:
    """The installed state's registry of instruments, in the order they were added."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._items: list[Any] = []
        self._hooks: dict[str, list[tuple[Any, Callable[..., Any]]]] = {}
        self._on_change = on_change

    def add(self, instrument: Any) -> None:
        """Start calling ``instrument``'s hooks (adding one twice is harmless)."""
        if any(item is instrument for item in self._items):
            return
        self._items.append(instrument)
        self._rebuild()

    def remove(self, instrument: Any) -> None:
        """Stop calling ``instrument``'s hooks (removing an absent one is harmless)."""
        kept = [item for item in self._items if item is not instrument]
        if len(kept) != len(self._items):
            self._items = kept
            self._rebuild()

    def __contains__(self, instrument: Any) -> bool:
        return any(item is instrument for item in self._items)

    def has(self, hook: str) -> bool:
        """Whether any instrument has ``hook``: lets a caller skip building its arguments."""
        return hook in self._hooks

    def call(self, hook: str, *args: Any) -> None:
        """Call ``hook`` on every instrument that has it; drop one whose hook raises."""
        for instrument, method in self._hooks.get(hook, ()):
            try:
                method(*args)
            except BaseException:
                internal_error(f"instrument {type(instrument).__qualname__}.{hook}")
                self.remove(instrument)

    def task_hooks(self) -> tuple[Any, Any, Any]:
        """``(task_created, task_ended, gate)`` for the hot path: a single callable or None each
        (several instruments' hooks are called in turn), and the gate of a lone instrument."""
        created = _one(self._hooks.get("task_created", ()))
        ended = _one(self._hooks.get("task_ended", ()))
        owners = {id(instrument) for hook in TASK_HOOKS for instrument, _ in self._hooks.get(hook, ())}
        gate = None
        if len(owners) == 1:
            ((_, make_gate),) = self._hooks.get("task_gate", ()) or ((None, None),)
            if make_gate is not None:
                try:
                    gate = make_gate()
                except BaseException:
                    internal_error("instrument task_gate")
        return created, ended, gate

    def _rebuild(self) -> None:
        hooks: dict[str, list[tuple[Any, Callable[..., Any]]]] = {}
        for instrument in self._items:
            for name in (*HOOKS, *TASK_HOOKS, "task_gate"):
                method = getattr(instrument, name, None)
                if callable(method):
                    hooks.setdefault(name, []).append((instrument, method))
        self._hooks = hooks  # replaced whole: a call on another thread keeps the list it started
        if self._on_change is not None:
            self._on_change()


def _one(pairs: list[tuple[Any, Callable[..., Any]]] | tuple[()]) -> Any:
    if not pairs:
        return None
    if len(pairs) == 1:
        return pairs[0][1]
    return _InTurn(tuple(method for _, method in pairs))


class _InTurn:
    """Several instruments' per-task hook, called one after the other."""

    __slots__ = ("methods",)

    def __init__(self, methods: tuple[Callable[..., Any], ...]) -> None:
        self.methods = methods

    def __call__(self, *args: Any) -> None:
        for method in self.methods:
            try:
                method(*args)
            except BaseException:
                internal_error(f"instrument {getattr(method, '__qualname__', method)}")
