"""TaskRecord.flags: one home for every bit, and the C record agrees with it."""

from __future__ import annotations

import pytest

from taskwatch._core import _accel, _flags
from taskwatch._core._flags import RecordFlag


def test_each_bit_is_its_own_and_reported_is_every_finding_bit() -> None:
    single = [f for f in RecordFlag if f is not RecordFlag.REPORTED]
    values = [int(f) for f in single]
    assert all(v and v & (v - 1) == 0 for v in values)  # powers of two
    assert len(set(values)) == len(values)
    reported = [f for f in single if f.name.startswith("REPORTED_")]
    assert int(RecordFlag.REPORTED) == sum(int(f) for f in reported)


def test_the_plain_ints_are_the_flags_values() -> None:
    """The hot paths use plain ints (an IntFlag operand makes ``&`` a Python call)."""
    for flag in RecordFlag:
        value = getattr(_flags, flag.name)
        assert type(value) is int and value == int(flag)


@pytest.mark.skipif(_accel.speedups is None, reason="the C accelerator is not built here")
def test_the_c_record_uses_the_same_bits() -> None:
    c = _accel.speedups
    assert (c.FLAG_PRECISE, c.FLAG_RELEASED) == (_flags.PRECISE, _flags.RELEASED)
