"""taskwatch top in a real terminal (tmux): it starts, shows the groups, sorts on a key, and
exits cleanly on q and on Ctrl-C."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from taskwatch._watchdog import _cpu

from .test_live import _Target

SAMPLES = _cpu.unavailable() is None

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]
textual = pytest.importorskip("textual")


class _Terminal:
    """One tmux session running a command in a 160x30 terminal."""

    def __init__(self, command: str, tmp: Path) -> None:
        self.name = f"tw-{uuid.uuid4().hex[:8]}"
        self.rc = tmp / f"{self.name}.rc"
        shell = f"{command}; echo $? > {shlex.quote(str(self.rc))}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "30",
                        shell], check=True, env=dict(os.environ, TERM="xterm-256color"))

    def screen(self) -> str:
        done = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True)
        return done.stdout

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_exit(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.rc.exists() and self.rc.read_text().strip():
                return int(self.rc.read_text())
            time.sleep(0.2)
        raise AssertionError(f"top did not exit; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture(autouse=True)
def _own_control_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A control folder of this test's own (see test_live)."""
    folder = tmp_path_factory.mktemp("control")
    folder.chmod(0o700)
    monkeypatch.setenv("TASKWATCH_CONTROL_DIR", str(folder))


@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_top_shows_sorts_and_quits(tmp_path, quit_key):
    target = _Target(tmp_path, TASKWATCH_CONTROL="1")
    folder = os.environ.get("TASKWATCH_CONTROL_DIR")
    where = f"TASKWATCH_CONTROL_DIR={shlex.quote(folder)} " if folder else ""
    term = _Terminal(f"{where}{shlex.quote(sys.executable)} -m taskwatch top --interval 0.5 "
                     f"{target.pid}", tmp_path)
    try:
        screen = term.wait_for("sorted by CPU" if SAMPLES else "sorted by count")
        assert f"pid {target.pid}" in screen
        if SAMPLES:  # sorted by CPU share: the task that computes first
            assert "main thread CPU" in screen
            deadline = time.monotonic() + 20
            while _rows(term.screen())[0].split()[3:4] != ["crunch"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "crunch [crunch]" in _rows(term.screen())[0], term.screen()
            term.keys("n")
            term.wait_for("sorted by count")
        else:
            assert "CPU shares: none" in screen
        rows = [line for line in term.wait_for("worker [").splitlines() if "worker [" in line]
        assert rows and rows[0].split()[2] == "1,000"
        first_row = _rows(term.screen())[0]
        assert first_row.split()[2] == "1,000"  # sorted by count: the workers first
        term.keys("w")
        term.wait_for("sorted by wait")
        term.keys("a")
        term.wait_for("sorted by age")
        screen = term.wait_for("Lock.acquire")
        assert "stubborn [stubborn]" in screen
        term.keys(quit_key)
        assert term.wait_exit() == 0
    finally:
        term.close()
        target.close()


def _rows(screen: str) -> list[str]:
    """The table's rows: CPU% and CPU s cells ("12.5" or "-"), then a count."""
    def number(cell: str) -> bool:
        return cell == "-" or cell.replace(".", "").isdigit()

    return [line for line in screen.splitlines()
            if len(line.split()) > 3 and line.split()[2].replace(",", "").isdigit()
            and number(line.split()[0]) and number(line.split()[1])]


def test_top_of_a_missing_process_fails_before_the_screen_opens(tmp_path):
    done = subprocess.run([sys.executable, "-m", "taskwatch", "top", "999999999"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "there is no process 999999999" in done.stderr
