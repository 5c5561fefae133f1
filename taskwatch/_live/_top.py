"""``taskwatch top PID``: the ``ps`` view, refreshed live in the terminal (Textual, the ``top``
extra), sortable by CPU share, count, age and wait.

Each refresh is one attach (``_attach.fetch``) run in a worker thread, so the screen never waits
on the program; waits grow from one refresh to the next (see ``_waits``). ``q`` or Ctrl-C quits.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from . import _attach

SORTS = {"c": ("CPU", "cpu"), "n": ("count", "count"), "a": ("age", "age"),
         "w": ("wait", "wait")}
_COLUMNS = (("cpu", "CPU%", 6), ("busy", "CPU s", 8), ("count", "count", 7),
            ("task", "coroutine [names]", 40), ("state", "state", 22), ("wait", "waiting for", 12), ("age", "age", 12), ("site", "created at", 44),
            ("cancel", "cancel pending", 16))


class TopApp(App[int]):
    """One screen: a status line, the groups' table, the key bindings."""

    TITLE = "taskwatch top"
    CSS = "#status { height: 4; padding: 0 1; } DataTable { height: 1fr; }"
    BINDINGS = [
        Binding("c", "sort('c')", "sort by CPU"),
        Binding("n", "sort('n')", "sort by count"),
        Binding("a", "sort('a')", "sort by age"),
        Binding("w", "sort('w')", "sort by wait"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, pid: int, interval: float, timeout: float, first: dict[str, Any]) -> None:
        super().__init__()
        self.pid, self.interval, self.timeout = pid, interval, timeout
        self.snap = first
        # by CPU share where the program samples it, else by count
        self.sort_key = "c" if first.get("cpu", {}).get("sampling") else "n"
        self.problem: str | None = None
        self.fetching = False

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        table: DataTable[Any] = DataTable(zebra_stripes=True, cursor_type="row")
        for key, label, width in _COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._show()
        self.set_interval(self.interval, self._refresh)

    def action_sort(self, key: str) -> None:
        self.sort_key = key
        self._show()

    def _refresh(self) -> None:
        if not self.fetching:
            self.fetching = True
            self.run_worker(self._fetch, thread=True, exclusive=True)

    def _fetch(self) -> None:
        try:
            snap = _attach.fetch(self.pid, self.timeout)
            self.call_from_thread(self._update, snap, None)
        except _attach.AttachError as exc:
            self.call_from_thread(self._update, None, str(exc))

    def _update(self, snap: dict[str, Any] | None, problem: str | None) -> None:
        self.fetching = False
        if snap is not None:
            self.snap = snap
        self.problem = problem
        self._show()

    def _show(self) -> None:
        snap = self.snap
        stats = snap["stats"]
        name, field = SORTS[self.sort_key]
        argv = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(snap["argv"]))
        status = (f"pid {snap['pid']}  python {argv}  (Python {snap['python']})  "
                  f"{snap['tasks']:,} live tasks in {len(snap['groups']):,} groups  "
                  f"sorted by {name}\n"
                  f"loop lag p99 {stats.get('loop_lag_p99_s') or 0:.3f} s  "
                  f"blocks {stats.get('blocks') or 0} (max {stats.get('max_block_s') or 0:.3f} s)  "
                  f"tasks created {stats.get('tasks_created') or 0:,}, failed "
                  f"{stats.get('tasks_failed') or 0:,}  findings {len(snap['findings'])}  "
                  f"at {time.strftime('%H:%M:%S')}")
        status += "\n" + _cpu_line(snap.get("cpu") or {})
        if self.problem:
            status += f"\n{self.problem}"
        self.query_one("#status", Static).update(status)
        table = self.query_one(DataTable)
        table.clear()
        for group in sorted(snap["groups"], key=lambda g: -_sort_value(g, field)):
            table.add_row(*_cells(group), key=str(group["group"]))


def _cpu_line(cpu: dict[str, Any]) -> str:
    """The main thread's CPU since the last refresh: how much, and how much outside any task."""
    if not cpu.get("sampling"):
        return f"CPU shares: none ({cpu.get('why', 'not sampled')})"
    spent, window = cpu.get("share_window_cpu_s") or 0.0, cpu.get("share_window_s") or 0.0
    busy = f"{100.0 * spent / window:.0f}% of a CPU" if window > 0 else "-"
    return (f"main thread CPU {busy} since the last look, sampled every "
            f"{cpu['interval_s'] * 1000:g} ms")


def _sort_value(group: dict[str, Any], field: str) -> float:
    if field == "cpu":
        return float(group.get("cpu_share") or 0.0)
    if field == "count":
        return float(group["count"])
    if field == "age":
        return float(group["age_s"][1] or 0.0)
    return float(group["waiting_s"][1] or -1.0)


def _cells(group: dict[str, Any]) -> tuple[Text, ...]:
    names = ", ".join(t["name"] or f"#{t['id']}" for t in group["tasks"][:2])
    coro = group["coro"].rsplit(".", 1)[-1]
    state = "running" if group["state"] == "running" else (
        "on " + (group["waiting_on"] or "?"))
    wait = group["waiting_s"][1]
    age = group["age_s"][1]
    created = group["created_at"]
    site = f"{os.path.basename(created['file'])}:{created['line']} in {created['function']}" \
        if created else "loop or library"
    cancel = ""
    if group["cancelling"]:
        cancel = f"{group['cancelling'][0]['pending_s']:.1f} s"
    share, busy = group.get("cpu_share"), group.get("busy_s")
    cells = ("-" if share is None else f"{100.0 * share:.1f}",
             "-" if busy is None else f"{busy:.2f}", f"{group['count']:,}", f"{coro} [{names}]", state,
             "-" if wait is None else f"{wait:.1f} s", "-" if age is None else f"{age:.1f} s",
             site, cancel)
    return tuple(Text(cell) for cell in cells)  # plain text: "[name]" is no markup


def run(pid: int, interval: float, timeout: float) -> int:
    """Attach once (an error is raised before the screen opens), then run the screen."""
    first = _attach.fetch(pid, timeout)
    TopApp(pid, interval, timeout, first).run()
    return 0
