"""The JSON report of report-format.md, and the human summary printed at exit."""

from __future__ import annotations

import collections
import json
import platform
import time
from typing import Any

from .._core._findings import Finding
from .._core._state import State
from .._version import VERSION
from .._watchdog._cpu import section, text


def build(state: State) -> dict[str, Any]:
    """The report as a JSON-ready dict."""
    with state.lock:
        findings = list(state.findings)
    return {
        "taskwatch": VERSION,
        "python": platform.python_version(),
        "loop": state.loop_kind(),
        "started_at": state.started_at,
        "ended_at": time.time(),
        "findings": [f.as_dict() for f in findings],
        "stats": state.stats(),
        "cpu": section(state),
    }


def write(state: State, path: str) -> None:
    data = build(state)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")


def summary(findings: list[Finding], stats: dict[str, Any], cpu: dict[str, Any] | None = None) -> str:
    """Counts by kind, then each finding as one paragraph, then where the CPU went (with
    ``cpu_sampling``): what the session prints on stderr."""
    return _findings(findings, stats) + (text(cpu) if cpu else "")


def _findings(findings: list[Finding], stats: dict[str, Any]) -> str:
    lines = []
    counts = collections.Counter(f.kind for f in findings)
    total = stats.get("findings_by_kind") or dict(counts)
    created = stats.get("tasks_created", 0)
    if not total:
        lines.append(f"taskwatch: no findings ({created} tasks watched).")
        return "\n".join(lines) + "\n"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(total.items()))
    lines.append(f"taskwatch: {sum(total.values())} finding(s) in {created} tasks: {kinds}")
    for index, finding in enumerate(findings, 1):
        lines.append("")
        lines.append(f"{index}. [{finding.kind}] {finding.message}")
    if stats.get("dropped_findings"):
        lines.append(f"\n({stats['dropped_findings']} more findings were dropped: max_findings reached)")
    return "\n".join(lines) + "\n"
