"""Internal errors: counted, logged once per place, never raised into the user's program.

Every hook body that runs inside the user's program (task factory, done callback, cancel override,
exception handler, watchdog, sinks) catches its own failures and reports them here.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("taskwatch")

_lock = threading.Lock()
_seen: set[str] = set()
count = 0


def internal_error(where: str) -> None:
    """Record an exception being handled now; log its traceback the first time ``where`` fails."""
    global count
    with _lock:
        count += 1
        first = where not in _seen
        _seen.add(where)
    if first:
        try:
            logger.error("taskwatch internal error in %s (further errors there are only counted)",
                         where, exc_info=True)
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
