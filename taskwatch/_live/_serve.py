"""The program's side of an attach: answer a snapshot request, never on the loop's thread.

Two ways a request arrives, neither a network port:

* Python 3.14+: ``taskwatch ps`` runs a two-line script in the program with ``sys.remote_exec``
  (PEP 768: same user, ptrace rights, remote debugging not disabled). The script only hands the
  request to :func:`answer_later`, which takes the snapshot on taskwatch's own thread and writes it
  to the reply file the request names; the program's main thread pays a function call.
  The script runs when the main thread next runs Python code, which a loop idle in ``epoll_wait``
  may not do for minutes: ``taskwatch ps`` also leaves a knock, ``<pid>.knock`` in the control
  folder, which taskwatch's thread looks for twice a second (one ``stat``) and answers by waking
  the loops with a no-op callback. A knock asks for nothing else: the request itself still needs
  ``sys.remote_exec``'s rights.
* Any version, opt-in (``control=True``): a Unix socket in a folder only the owner can enter,
  ``<tmp>/taskwatch-<uid>/<pid>.sock``, served by a daemon thread: one request, a line of JSON
  (``{"what": "snapshot"}``), one JSON answer, closed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
import sys
import threading
import time
from typing import Any

from .._core._files import write_whole
from .._core._guard import internal_error, logger

_REQUEST_LIMIT = 4096


def control_dir() -> str:
    """Where control sockets live: the same path for the program and ``taskwatch ps``."""
    base = os.environ.get("TASKWATCH_CONTROL_DIR") or os.path.join(
        tempfile.gettempdir(), f"taskwatch-{os.getuid()}")
    return base


def control_path(pid: int) -> str:
    return os.path.join(control_dir(), f"{pid}.sock")


def knock_path(pid: int) -> str:
    return os.path.join(control_dir(), f"{pid}.knock")


def private_dir(path: str) -> str:
    """Make (or check) a folder that only this user can enter; refuse one that others could."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"taskwatch: {path} must be a folder of this user that nobody else can enter "
            f"(mode 0700); it is not, so nothing is served from it")
    return path


def respond(request: dict[str, Any]) -> str:
    """The answer to one request, as JSON text: ``{"what": "snapshot"}`` is the snapshot;
    ``{"what": "timeline", "path": P}`` writes the flight recorder's last ``flight_window``
    seconds to P (the requester's file: same user) and says where."""
    from .._core import _hooks
    from . import _snapshot

    state = _hooks.current()
    if state is None:
        return json.dumps({"error": "taskwatch is not installed in this process "
                                    "(call taskwatch.install() at start-up)"})
    what = request.get("what")
    if what == "snapshot":
        return json.dumps(_snapshot.take(state), default=str)
    if what == "timeline":
        timeline = state.timeline
        if timeline is None:
            return json.dumps({"error": "the program records no timeline: start it with "
                                        "TASKWATCH_FLIGHT_RECORDER=FOLDER (or "
                                        "install(flight_recorder=...))"})
        path = request.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            return json.dumps({"error": "a timeline request needs an absolute path"})
        try:
            timeline.dump(path)
        except OSError as exc:
            return json.dumps({"error": f"the program could not write {path}: {exc}"})
        return json.dumps({"timeline": path, "window_s": timeline.window})
    return json.dumps({"error": f"unknown request {what!r}"})


def answer_later(request: dict[str, Any]) -> None:
    """Called by the remote_exec script on the program's main thread: answer on taskwatch's
    thread and write the answer where the request says."""
    from .._core import _hooks

    reply = str(request.get("reply", ""))
    state = _hooks.current()
    if state is None or not reply:
        write_reply(reply, json.dumps({"error": "taskwatch is not installed in this process"}))
        return
    state.ticker.at(0.0, lambda: _answer(request, reply))


def _answer(request: dict[str, Any], reply: str) -> None:
    try:
        write_reply(reply, respond(request))
    except BaseException:
        internal_error("answer a request")
        try:
            write_reply(reply, json.dumps({"error": "taskwatch failed to answer (an internal "
                                                    "error, logged in the program)"}))
        except OSError:
            pass


def write_reply(path: str, text: str) -> None:
    """Whole or not at all, readable by this user only."""
    if not path:
        return
    write_whole(path, lambda handle: handle.write(text), private=True)


class ControlSocket:
    """``control=True``: the opt-in Unix socket, as an instrument (its ``after_fork`` closes the
    parent's socket in a child, which serves none)."""

    def __init__(self) -> None:
        self.path = control_path(os.getpid())
        self.pid = os.getpid()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        private_dir(control_dir())
        if os.path.exists(self.path):
            os.unlink(self.path)  # a dead process of the same pid left it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(4)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,),
                                        name="taskwatch-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if os.getpid() == self.pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def after_fork(self) -> None:
        sock, self._sock = self._sock, None  # the parent's: closed here, left in place
        if sock is not None:
            sock.close()

    def _serve(self, sock: socket.socket) -> None:
        while self._sock is sock:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed by stop()
            try:
                with conn:
                    conn.settimeout(5)
                    data = conn.recv(_REQUEST_LIMIT)
                    try:
                        request = json.loads(data.decode("utf-8").splitlines()[0])
                    except (ValueError, UnicodeDecodeError, IndexError):
                        request = None
                    if not isinstance(request, dict):
                        answer = json.dumps({"error": "a request is one line of JSON"})
                    else:
                        answer = respond(request)
                    conn.sendall(answer.encode())
            except OSError:
                continue
            except BaseException:
                internal_error("control socket")


KNOCK_PERIOD = 0.5


class Knock:
    """Python 3.14+: wake the loops when ``taskwatch ps`` knocks (see the module docstring)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.path = knock_path(os.getpid())
        self.running = True

    def start(self) -> None:
        self.state.ticker.at(time.monotonic() + KNOCK_PERIOD, self._look)

    def stop(self) -> None:
        self.running = False

    def after_fork(self) -> None:
        self.path = knock_path(os.getpid())

    def _look(self) -> float | None:
        if not self.running:
            return None
        if os.path.exists(self.path):
            try:
                os.unlink(self.path)
            except OSError:
                pass
            for probe in self.state.live_probes():
                loop = probe.loop_ref()
                if loop is not None and probe.run_thread is not None:
                    try:
                        loop.call_soon_threadsafe(_nothing)
                    except RuntimeError:  # closed meanwhile
                        pass
        return time.monotonic() + KNOCK_PERIOD


def _nothing() -> None:
    """The callback a knock puts on a loop: it only makes the loop's thread run Python code."""


def start_knock(state: Any) -> Knock | None:
    if not hasattr(sys, "remote_exec"):
        return None
    knock = Knock(state)
    state.instruments.add(knock)
    knock.start()
    return knock


def start_control(state: Any) -> ControlSocket | None:
    control = ControlSocket()
    try:
        control.start()
    except OSError as exc:
        logger.warning("taskwatch: control=True: cannot listen on %s: %s", control.path, exc)
        return None
    state.instruments.add(control)
    return control
