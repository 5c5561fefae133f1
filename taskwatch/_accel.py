"""The optional C accelerator (taskwatch/_speedups.c), or ``None`` when it is not built.

The per-task hot path costs about 500 bytecodes in Python; the C module does the same work for a
fraction of that. taskwatch works the same without it (the pure-Python path in ``_hotpath`` is the
reference), so a machine without a compiler only loses speed. ``TASKWATCH_SPEEDUPS=0`` keeps it from
loading at all (tests of the pure-Python path); the ``speedups`` option turns it off per install.
"""

from __future__ import annotations

import asyncio
import os
from types import ModuleType

speedups: ModuleType | None = None
if os.environ.get("TASKWATCH_SPEEDUPS", "").strip().lower() not in {"0", "false", "no", "off"}:
    # The C path builds on the C Task's layout: with the pure-Python Task it stays off.
    if asyncio.Task is getattr(asyncio.tasks, "_CTask", None):
        try:
            from . import _speedups as speedups
        except ImportError:
            speedups = None
