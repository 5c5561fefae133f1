"""``taskwatch ps``'s side of an attach: ask a running program for its snapshot.

The control socket first (the program opted in with ``control=True``), then, on Python 3.14+,
``sys.remote_exec``; every way it can fail says what to do instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import Any

from ._serve import control_dir, control_path, knock_path, private_dir

_SCRIPT = """\
import sys
_tw = sys.modules.get("taskwatch")
if _tw is not None and _tw.is_installed():
    from taskwatch._live import _serve
    _serve.answer_later({request!r})
else:
    import json, os
    _tmp = {reply!r} + ".tmp"
    with open(os.open(_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as _f:
        _f.write(json.dumps({{"error": "taskwatch is not installed in this process "
                                       "(call taskwatch.install() at start-up)"}}))
    os.replace(_tmp, {reply!r})
"""


class AttachError(Exception):
    """Attaching is not possible; the message says why and what to do."""


class _Stale(Exception):
    """A control socket that nothing listens on (its process was killed)."""


def fetch(pid: int, timeout: float = 10.0) -> dict[str, Any]:
    """The snapshot of process ``pid``."""
    return ask(pid, {"what": "snapshot"}, timeout)


def ask(pid: int, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Process ``pid``'s answer to ``request`` (see ``_serve.respond``)."""
    _check_process(pid)
    path = control_path(pid)
    can_exec = hasattr(sys, "remote_exec")
    if os.path.exists(path):
        try:
            data = _via_socket(path, request, timeout)
        except _Stale:
            if not can_exec:
                raise AttachError(
                    f"{path} exists but nothing answers on it: an earlier process with this pid "
                    f"left it, or the program uninstalled taskwatch. On Python 3.11-3.13 "
                    f"(sys.remote_exec is 3.14+) start the program with TASKWATCH_CONTROL=1 (or "
                    f"install(control=True)) to attach.") from None
            data = _via_remote_exec(pid, request, timeout)
    elif can_exec:
        data = _via_remote_exec(pid, request, timeout)
    else:
        raise AttachError(
            f"process {pid} has no taskwatch control socket ({path}), and Python "
            f"{sys.version.split()[0]} cannot run code in another process (sys.remote_exec is "
            f"3.14+). On Python 3.11-3.13, start the program with TASKWATCH_CONTROL=1 (or "
            f"taskwatch.install(control=True)); on 3.14+, run taskwatch ps with the program's "
            f"Python version.")
    if "error" in data:
        raise AttachError(f"process {pid}: {data['error']}")
    return data


def _check_process(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise AttachError(f"there is no process {pid}") from None
    except PermissionError:
        raise AttachError(f"process {pid} belongs to another user: run taskwatch ps as that user "
                          f"(or as root)") from None


def _via_socket(path: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    except PermissionError:
        raise AttachError(f"no permission to open {path}: run taskwatch ps as the program's "
                          f"user") from None
    except (ConnectionRefusedError, FileNotFoundError):
        raise _Stale() from None
    except socket.timeout:
        raise AttachError(f"the program did not answer on {path} within {timeout:g} s. {_STARVED}") from None
    return _parsed(b"".join(chunks).decode("utf-8", "replace"))


# Both channels answer from taskwatch's thread, which needs the GIL.
_STARVED = ("A loop running short CPU-bound steps back to back (each awaiting sleep(0) or quick "
            "I/O) starves every other thread of the program of the GIL in CPython, taskwatch's "
            "too, for seconds at a time: such a program answers when its load drops; "
            "--timeout waits longer.")


def _via_remote_exec(pid: int, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="taskwatch-ps-")  # 0700: only this user
    try:
        reply = os.path.join(folder, "reply.json")
        script = os.path.join(folder, "ask.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(_SCRIPT.format(request={**request, "reply": reply}, reply=reply))
        try:
            sys.remote_exec(pid, script)  # type: ignore[attr-defined]
            _knock(pid)
        except PermissionError as exc:
            raise AttachError(f"cannot attach to process {pid}: {exc}. Attaching needs ptrace "
                              f"rights: the same user, and {_ptrace_scope()}; or root. Or start "
                              f"the program with TASKWATCH_CONTROL=1 to use a control socket "
                              f"instead.") from None
        except (RuntimeError, OSError, ValueError) as exc:
            text = str(exc)
            hint = ""
            if "disable" in text.lower() or "not enabled" in text.lower():
                hint = (" Remote debugging is switched off there (PYTHON_DISABLE_REMOTE_DEBUG or "
                        "-X disable_remote_debug): start the program with TASKWATCH_CONTROL=1 to "
                        "use a control socket instead.")
            else:
                hint = (f" Is it a Python {sys.version_info[0]}.{sys.version_info[1]} program? "
                        f"taskwatch ps must run on the program's Python version"
                        f"{_exe(pid)}; or start the program with TASKWATCH_CONTROL=1.")
            raise AttachError(f"cannot attach to process {pid}: {text}.{hint}") from None
        deadline = time.monotonic() + timeout
        while not os.path.exists(reply):
            if time.monotonic() > deadline:
                raise AttachError(
                    f"process {pid} did not answer within {timeout:g} s. Is taskwatch installed "
                    f"there? Its main thread picks the request up when it next runs Python code: "
                    f"a main thread blocked in C code or waiting with nothing scheduled answers "
                    f"late; --timeout waits longer. {_STARVED}")
            time.sleep(0.02)
        with open(reply, encoding="utf-8") as handle:
            return _parsed(handle.read())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.unlink(knock_path(pid))  # not taken: the program is not watching for it
        except OSError:
            pass


def _knock(pid: int) -> None:
    """Wake the program's loops, so that an idle main thread runs the script soon."""
    try:
        private_dir(control_dir())
        with open(knock_path(pid), "w", encoding="ascii"):
            pass
    except OSError:
        pass  # it answers anyway once its loop wakes


def _parsed(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise AttachError(f"the program's answer is not JSON: {text[:200]!r}") from None
    if not isinstance(data, dict):
        raise AttachError("the program's answer is not a snapshot")
    return data


def _ptrace_scope() -> str:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope", encoding="ascii") as handle:
            scope = handle.read().strip()
    except OSError:
        return "the system allowing ptrace between processes of a user"
    return (f"/proc/sys/kernel/yama/ptrace_scope at 0 (it is {scope} here; 1 allows only a "
            f"parent to attach)")


def _exe(pid: int) -> str:
    try:
        return f" (it runs {os.readlink(f'/proc/{pid}/exe')})"
    except OSError:
        return ""
