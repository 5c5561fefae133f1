"""Findings to the ``taskwatch`` logger (option ``log``), an instrument on the installed state.

An error finding logs at ERROR, a warning at WARNING, each with the finding's dict in
``extra={"taskwatch": ...}``. A site that keeps producing the same kind logs ten records and is
counted after that (the report has every finding): a leak in a loop must not flood the log.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from .._core._findings import Finding

logger = logging.getLogger("taskwatch")
PER_SITE = 10  # log records per (kind, site)
_MAX_SITES = 10_000  # distinct (kind, site) keys remembered; past that the counts start over


class LogSink:
    """Logs findings; one per installed state."""

    def __init__(self) -> None:
        self._seen: collections.Counter[tuple[str, Any]] = collections.Counter()
        self._lock = threading.Lock()

    def finding(self, finding: Finding) -> None:
        key = (finding.kind, finding.site)
        with self._lock:
            if len(self._seen) >= _MAX_SITES and key not in self._seen:
                self._seen.clear()
            self._seen[key] += 1
            repeat = self._seen[key]
        if repeat > PER_SITE:
            return
        level = logging.ERROR if finding.severity == "error" else logging.WARNING
        suffix = " (further findings of this kind at this site are only counted)" if (
            repeat == PER_SITE) else ""
        logger.log(level, "[%s] %s%s", finding.kind, finding.message, suffix,
                   extra={"taskwatch": finding.as_dict(), "taskwatch_kind": finding.kind})
