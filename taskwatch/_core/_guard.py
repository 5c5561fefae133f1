"""Internal errors: counted, logged once per place, never raised into the user's program.

Every hook body that runs inside the user's program (task factory, done callback, cancel override,
exception handler, watchdog, sinks) catches its own failures and reports them here.
"""

from __future__ import annotations

import logging
import sys
import threading

logger = logging.getLogger("taskwatch")

_lock = threading.Lock()
_seen: set[str] = set()
count = 0


def internal_error(where: str) -> None:
    """Record an exception being handled now; log its traceback the first time ``where`` fails.

    A KeyboardInterrupt or SystemExit on the main thread is no error of taskwatch's: a signal
    handler raised it while taskwatch's code happened to run (Ctrl-C, ``sys.exit`` in a SIGTERM
    handler). It is re-raised, as it would have been in the program's own code."""
    if isinstance(sys.exception(), (KeyboardInterrupt, SystemExit)) and \
            threading.current_thread() is threading.main_thread():
        raise  # noqa: PLE0704 - the exception the caller is handling
    _count(where, "", exc_info=True)


def report_later(where: str, text: str) -> None:
    """An internal error caught where reporting it was not safe (a sample that ran inside the
    program's code, maybe inside ``internal_error`` itself), reported now from another place:
    counted, and ``text`` (its formatted traceback) logged the first time ``where`` fails."""
    _count(where, "\n" + text.rstrip())


def _count(where: str, detail: str, exc_info: bool = False) -> None:
    """Count one internal error at ``where``; log it the first time ``where`` fails."""
    global count
    with _lock:
        count += 1
        first = where not in _seen
        _seen.add(where)
    if first:
        try:
            logger.error("taskwatch internal error in %s (further errors there are only counted)%s",
                         where, detail, exc_info=exc_info)
        except Exception:
            pass


def after_fork() -> None:
    """In a forked child: a lock held by another thread at the fork would never be released."""
    global _lock
    _lock = threading.Lock()


def reset() -> None:
    """Forget what was logged (tests and re-install)."""
    global count
    with _lock:
        count = 0
        _seen.clear()
