"""Files taskwatch writes (the JSON report, timelines, attach replies) are whole or absent: a
reader never sees half of one, whatever stops the writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TextIO


def write_whole(path: str, write: Callable[[TextIO], None], *, private: bool = False) -> None:
    """Run ``write`` on a temporary file beside ``path``, then rename it over ``path``; on any
    failure the temporary file is removed and the error raised. ``private``: mode 0600 (a trace
    or a snapshot names the program's files and functions)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
