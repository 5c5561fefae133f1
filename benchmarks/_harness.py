"""Runs the plan: one fresh worker process per (round, workload, contender), contenders rotated.

Rotating the contender order every round spreads slow drifts of the machine (thermal state,
page cache, a noisy neighbour) over all contenders instead of charging them to whoever runs last.
A contender that is skipped (package missing) is not retried; one that fails is not retried for
that workload, so a broken contender costs one process, not ``rounds`` of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ._contenders import ONLY
from ._worker import MARK

REPO = Path(__file__).resolve().parent.parent
WORKLOAD_ORDER = ("churn", "fanout", "server", "memory", "watchdog")

_BLOCKS_FULL = [[kind, d] for d in (0.1, 0.2, 0.3, 0.5) for kind in ("sleep", "busy")]
FULL: dict[str, tuple[int, dict[str, Any]]] = {
    "churn": (100_000, {}),
    "fanout": (100_000, {"depth": 4, "fan": 10}),
    "server": (5_000, {"warmup": 0.5, "connections": 32}),  # size = measured milliseconds
    "memory": (1_000_000, {}),
    "watchdog": (200_000, {"block_threshold": 0.05, "gap": 0.3, "blocks": _BLOCKS_FULL}),
}
QUICK: dict[str, tuple[int, dict[str, Any]]] = {
    "churn": (2_000, {}),
    "fanout": (1_000, {"depth": 3, "fan": 6}),
    "server": (300, {"warmup": 0.1, "connections": 4}),
    "memory": (5_000, {}),
    "watchdog": (2_000, {"block_threshold": 0.05, "gap": 0.1, "blocks": [["sleep", 0.1]]}),
}
_MIN_SIZE = {"churn": 1_000, "fanout": 100, "server": 300, "memory": 1_000, "watchdog": 100}


@dataclass
class Plan:
    workloads: list[str]
    contenders: list[str]
    rounds: int
    sizes: dict[str, int]
    params: dict[str, dict[str, Any]]
    loop: str = "uvloop"
    timeout: float = 1800.0
    quick: bool = False
    jobs: int = 1
    skipped: dict[str, str] = field(default_factory=dict)


def make_plan(quick: bool, workloads: list[str], contenders: list[str], rounds: int | None,
              scale: float, loop: str) -> Plan:
    table = QUICK if quick else FULL
    sizes = {w: max(_MIN_SIZE[w], int(table[w][0] * scale)) for w in workloads}
    params = {w: dict(table[w][1]) for w in workloads}
    return Plan(workloads, contenders, rounds or (1 if quick else 5), sizes, params, loop,
                timeout=120.0 if quick else 1800.0, quick=quick, jobs=2 if quick else 1)


def _worker_env() -> dict[str, str]:
    """The parent's environment minus anything that would switch a contender on or off."""
    drop = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONWARNINGS")
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith(("TASKWATCH_", "OTEL_"))}


def run_one(plan: Plan, workload: str, contender: str) -> dict[str, Any]:
    """Spawn one worker and return its JSON result (or a crash/timeout record)."""
    cmd = [sys.executable, "-m", "benchmarks._worker", workload, contender,
           str(plan.sizes[workload]), "--loop", plan.loop, "--params",
           json.dumps(plan.params[workload])]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_worker_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    note = ""
    try:
        out, err = proc.communicate(timeout=plan.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # our own worker's process group only
        out, err = proc.communicate()
        note = f"killed after {plan.timeout:.0f} s"
    for line in reversed(out.splitlines()):
        if line.startswith(MARK):
            result = json.loads(line[len(MARK):])
            if note:
                result["note"] = note + " (after reporting)"
            return result
    tail = " | ".join(err.strip().splitlines()[-3:])
    return {"workload": workload, "contender": contender, "status": "crashed",
            "reason": note or f"exit {proc.returncode}: {tail}"}


def run_plan(plan: Plan, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every round runs every workload for every contender, the contender order rotated.

    ``plan.jobs`` > 1 runs that many workers at once: only for ``--quick``, where the numbers
    do not matter and the point is that every code path ran.
    """
    results: list[dict[str, Any]] = []
    broken: set[tuple[str, str]] = set()  # (workload or "*", contender)

    def one(rnd: int, workload: str, contender: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = run_one(plan, workload, contender)
        res["round"] = rnd
        say(_progress(rnd, plan.rounds, res, time.perf_counter() - t0))
        return res

    with ThreadPoolExecutor(max_workers=max(1, plan.jobs)) as pool:
        for rnd in range(plan.rounds):
            k = rnd % len(plan.contenders)
            order = plan.contenders[k:] + plan.contenders[:k]
            for workload in plan.workloads:
                todo = [c for c in order if c not in plan.skipped
                        and workload in ONLY.get(c, (workload,))
                        and (workload, c) not in broken and ("*", c) not in broken]
                for res in pool.map(lambda c: one(rnd, workload, c), todo):
                    results.append(res)
                    c = res["contender"]
                    if res["status"] == "skipped":
                        plan.skipped[c] = res.get("reason", "")
                    elif str(res.get("reason", "")).startswith("setup:"):
                        broken.add(("*", c))  # it cannot even switch on: same everywhere
                    elif res["status"] != "ok":
                        broken.add((workload, c))
    return results


_PRIMARY = {"churn": "us_per_task", "fanout": "us_per_task", "server": "rps",
            "memory": "rss_after_mb", "watchdog": "us_per_tick"}


def _progress(rnd: int, rounds: int, res: dict[str, Any], took: float) -> str:
    head = f"[{rnd + 1}/{rounds}] {res['workload']:<8} {res['contender']:<28}"
    if res["status"] != "ok":
        return f"{head} {res['status']}: {res.get('reason', '')}"
    metric = _PRIMARY[res["workload"]]
    active = "" if res["proof"]["active"] else "  NOT ACTIVE"
    return f"{head} {metric}={res['metrics'][metric]:.4g}{active}  ({took:.1f} s)"


def source_digest() -> str | None:
    """Digest of taskwatch's source tree: a run whose code changed midway is flagged."""
    files = sorted([*(REPO / "taskwatch").rglob("*.py"), *(REPO / "taskwatch").rglob("*.c"),
                    *(REPO / "taskwatch").rglob("*.h")])
    if not files:
        return None
    h = hashlib.sha1()
    for f in files:
        h.update(str(f.relative_to(REPO)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _speedups_built() -> bool:
    import importlib.machinery

    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return any(f.name.endswith(suffixes) for f in (REPO / "taskwatch").rglob("_speedups.*"))


def machine() -> dict[str, Any]:
    """Python, uvloop and machine facts for the report header (no contender imported here)."""
    import importlib.metadata as md

    def ver(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "taskwatch"], cwd=REPO,
                           text=True, capture_output=True).stdout.strip()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "uvloop": ver("uvloop"),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "git_commit": (commit + ("+uncommitted taskwatch changes" if dirty else "")) or None,
        "taskwatch_source": source_digest(),
        # the C accelerator built for this interpreter (the hot path is Python without it)
        "taskwatch_speedups": _speedups_built(),
        "packages": {d: ver(d) for d in ("aiomonitor", "opentelemetry-sdk",
                                         "opentelemetry-instrumentation-asyncio", "taskwatch")},
    }
