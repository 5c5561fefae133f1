"""The bits of ``TaskRecord.flags``, in one place: the Python record, the C record and every
detector use these values (the accelerator's loader checks the C module agrees)."""

from __future__ import annotations

import enum


class RecordFlag(enum.IntFlag):
    """The bits of ``TaskRecord.flags``: the one home of every bit (the C record sets PRECISE and
    RELEASED with the same values, checked by ``_accel`` when it loads the module)."""

    FOREIGN = 1  # built by another factory: its cancel() is not observed
    REPORTED_SWALLOWED = 2  # a finding was raised for the task: swallowed-cancel
    REPORTED_SLOW = 4  # ... slow-cancel
    REPORTED_LEAK = 8  # ... leaked-task (or destroyed-pending: not both)
    REPORTED_ORPHAN = 16  # ... orphaned-task
    REPORTED_LOST = 32  # ... exception-never-retrieved
    PRECISE = 64  # a done callback closes the record the moment the task ends
    RELEASED = 128  # closed when the task object was freed, not when it ended
    REPORTED = (REPORTED_SWALLOWED | REPORTED_SLOW | REPORTED_LEAK | REPORTED_ORPHAN
                | REPORTED_LOST)  # any finding


# Plain ints for the hot paths: an IntFlag operand turns every ``flags & BIT`` into a Python call.
FOREIGN = int(RecordFlag.FOREIGN)
REPORTED_SWALLOWED = int(RecordFlag.REPORTED_SWALLOWED)
REPORTED_SLOW = int(RecordFlag.REPORTED_SLOW)
REPORTED_LEAK = int(RecordFlag.REPORTED_LEAK)
REPORTED_ORPHAN = int(RecordFlag.REPORTED_ORPHAN)
REPORTED_LOST = int(RecordFlag.REPORTED_LOST)
PRECISE = int(RecordFlag.PRECISE)
RELEASED = int(RecordFlag.RELEASED)
REPORTED = int(RecordFlag.REPORTED)
