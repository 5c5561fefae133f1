"""The optional C accelerator (taskwatch/_speedups_src/), or ``None`` when it is not built.

The per-task hot path costs about 500 bytecodes in Python; the C module does the same work for a
fraction of that. taskwatch works the same without it (the pure-Python path in ``_hotpath`` is the
reference), so a machine without a compiler only loses speed. ``TASKWATCH_SPEEDUPS=0`` keeps it from
loading at all (tests of the pure-Python path); the ``speedups`` option turns it off per install.
On a free-threaded build it is never loaded (it would re-enable the GIL).
"""

from __future__ import annotations

import asyncio
import os
import sys
from types import ModuleType


def _free_threaded() -> bool:
    """A free-threaded build (3.13t+): importing a C extension that does not declare free-threading
    support would turn the GIL back on for the whole process, so the accelerator stays unloaded."""
    if not hasattr(sys, "_is_gil_enabled"):  # before 3.13 no build is free-threaded
        return False
    import sysconfig

    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


speedups: ModuleType | None = None
if os.environ.get("TASKWATCH_SPEEDUPS", "").strip().lower() not in {"0", "false", "no", "off"}:
    # The C path builds on the C Task's layout: with the pure-Python Task it stays off.
    if asyncio.Task is getattr(asyncio.tasks, "_CTask", None) and not _free_threaded():
        try:
            from . import _speedups as speedups
        except ImportError:
            speedups = None
    if speedups is not None:
        from ._flags import PRECISE, RELEASED

        if (getattr(speedups, "FLAG_PRECISE", None), getattr(speedups, "FLAG_RELEASED", None)) != (
                PRECISE, RELEASED):
            speedups = None  # built from other sources (a stale build): the Python path
