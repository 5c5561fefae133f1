"""CPython's own asyncio tests, run plainly and with ``taskwatch.install()`` at start-up, compared.

    python -m tests.cpython_asyncio [--python PATH] [--modules test_tasks,...] [--timers-off] ...

Each module of the interpreter's ``test.test_asyncio`` runs in its own subprocess (``runner.py``)
twice: plainly, and with ``site/sitecustomize.py`` first on ``PYTHONPATH`` (it calls
``taskwatch.install()`` with default options, ``TASKWATCH_*`` variables applying, and chains to any
``sitecustomize`` it shadows). A test that passes plainly and fails, errors, crashes, hangs or does
not run with taskwatch is a regression; tests that fail plainly too are not. A crash or hang ends
that process only: the module resumes after the offending test in a new one.

The taskwatch tested is a copy of ``taskwatch/`` taken at start (the working tree, or ``--rev`` from
git) with its C accelerator compiled for the interpreter under test, so edits made while the suite
runs cannot mix into it and every interpreter gets the same code, accelerated as installs are.
The plain and taskwatch runs go in parallel (``--jobs``, 3 by default: many tests sleep), the same
module's two runs side by side so both see the same machine load; ``test_tasks`` and
``test_events`` are split in two (whole classes).
Regressions are rerun once (those tests only, in their module's order, with taskwatch); the ones
that pass on that rerun are listed apart as not reproduced. Crashes, and hangs of tests that ran in
under a third of the time limit plainly, count without a rerun.
Nothing is cached between invocations. Also reported: tests whose ``test.support``
``environment_altered`` flag only taskwatch set (a thread left running, for instance), and
taskwatch's own internal errors (caught and logged by taskwatch, so tests may still pass).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "runner.py"
SITE = HERE / "site"
REPO = HERE.parent.parent

MODULES = ("test_tasks", "test_taskgroups", "test_timeouts", "test_waitfor", "test_runners",
           "test_locks", "test_queues", "test_futures", "test_pep492", "test_eager_task_factory",
           "test_base_events", "test_events", "test_streams")
# Modules run in this many processes (whole classes each), the long pole otherwise.
SHARDS = {"test_tasks": 2, "test_events": 2}
# Rough seconds per module (3.11, plain), to start the long ones first.
_WEIGHT = {"test_events": 12, "test_tasks": 35, "test_base_events": 6, "test_streams": 5,
           "test_locks": 3, "test_eager_task_factory": 3, "test_runners": 3, "test_waitfor": 3,
           "test_timeouts": 2, "test_futures": 2, "test_taskgroups": 2, "test_queues": 1,
           "test_pep492": 1}

GOOD = {"pass", "xfail"}
BAD = {"fail", "error", "crash", "hang", "xpass", "not-run"}
OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass", "crash", "hang", "not-run")
# The taskwatch timers on the program's loop: the watchdog heartbeat, slow-cancel and orphan checks.
TIMERS_OFF = {"TASKWATCH_WATCHDOG": "0", "TASKWATCH_DISABLE": "slow-cancel,orphaned-task"}


@dataclasses.dataclass
class ModuleRun:
    module: str
    mode: str  # "plain" or "taskwatch"
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    absent: bool = False
    wall: float = 0.0
    attempts: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    logs: list[str] = dataclasses.field(default_factory=list)
    header: dict[str, Any] = dataclasses.field(default_factory=dict)


# -- the taskwatch under test ------------------------------------------------------------------------
def prepare_taskwatch(python: str, workdir: Path, source: Path = REPO, rev: str | None = None
                      ) -> tuple[Path, dict[str, Any]]:
    """Copy ``taskwatch/`` (working tree, or ``rev``) to ``workdir/src`` and compile its C
    accelerator for ``python``. Returns the folder to put on PYTHONPATH and what was done."""
    dest = workdir / "src"
    dest.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"source": str(source)}
    commit = _git(source, "rev-parse", rev or "HEAD")
    info["commit"] = commit
    if rev is None:
        shutil.copytree(source / "taskwatch", dest / "taskwatch",
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
        dirty = _git(source, "status", "--porcelain", "--", "taskwatch")
        info["tree"] = "working tree" + (" (uncommitted changes)" if dirty else "")
    else:
        archive = subprocess.run(["git", "-C", str(source), "archive", rev, "taskwatch"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        info["tree"] = f"git {rev}"
    info["speedups_build"] = _build_speedups(python, dest / "taskwatch")
    return dest, info


def _git(source: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(source), *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _build_speedups(python: str, pkg: Path) -> str:
    # taskwatch/_core/_speedups_src/*.c; for older revisions (--rev) taskwatch/_speedups_src/*.c or
    # the single taskwatch/_speedups.c
    home = pkg / "_core" if (pkg / "_core").is_dir() else pkg
    srcs = sorted((home / "_speedups_src").glob("*.c")) or [
        src for src in [pkg / "_speedups.c"] if src.exists()]
    if not srcs:
        return "no C accelerator sources"
    query = ("import sysconfig as s, json; print(json.dumps([s.get_config_var('CC'), "
             "s.get_paths()['include'], s.get_paths()['platinclude'], s.get_config_var('EXT_SUFFIX')]))")
    try:
        cc, inc, platinc, suffix = json.loads(subprocess.run(
            [python, "-c", query], check=True, capture_output=True, text=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError) as exc:
        return f"not built ({exc})"
    compiler = (cc or "cc").split()[0]
    if shutil.which(compiler) is None:
        compiler = "cc"
    out = home / f"_speedups{suffix}"
    cmd = [compiler, "-shared", "-fPIC", "-O2", f"-I{inc}", f"-I{platinc}", *map(str, srcs), "-o",
           str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return "not built (compile failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1] + ")"
    return "built"


# -- running one module --------------------------------------------------------------------------------
def child_env(mode: str, tw_path: Path | None, tw_env: dict[str, str]) -> dict[str, str]:
    """The environment of a child: no taskwatch at all for ``plain``; for ``taskwatch`` the
    sitecustomize and the copy under test first on PYTHONPATH, plus ``tw_env``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TASKWATCH_") and k not in {"PYTEST_CURRENT_TEST", "COV_CORE_SOURCE"}}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and not p.rstrip("/").endswith("_bootstrap")]
    if mode == "taskwatch":
        paths = [str(SITE)] + ([str(tw_path)] if tw_path is not None else []) + paths
        env.update(tw_env)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env["PYTHONFAULTHANDLER"] = "1"
    return env


def run_module(python: str, module: str, mode: str, env: dict[str, str], workdir: Path, *,
               only: list[str] | None = None, test_timeout: float = 15.0,
               module_timeout: float = 600.0, max_restarts: int = 60, tag: str = "",
               shard: tuple[int, int] = (0, 1)) -> ModuleRun:
    """Run ``test.test_asyncio.<module>`` (or one shard of it) in a subprocess, resuming after a
    crash or hang in a new one."""
    run = ModuleRun(module, mode)
    name = f"{mode}{tag}-{module}" + (f"-{shard[0]}of{shard[1]}" if shard[1] > 1 else "")
    cwd = workdir / "cwd" / name  # the tests write files in the current directory
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done_ids: set[str] = set()
    expected: list[str] | None = None
    for attempt in range(max_restarts + 1):
        run.attempts = attempt + 1
        out = workdir / f"{name}-{attempt}.jsonl"
        log = workdir / f"{name}-{attempt}.log"
        run.logs.append(str(log))
        cmd = [python, str(RUNNER), f"test.test_asyncio.{module}", str(out),
               "--test-timeout", str(test_timeout), "--shard", f"{shard[0]}/{shard[1]}"]
        if only is not None:
            only_file = workdir / f"{name}.only"
            only_file.write_text("\n".join(only) + "\n")
            cmd += ["--only", str(only_file)]
        if done_ids:
            excl = workdir / f"{name}-{attempt}.exclude"
            excl.write_text("\n".join(sorted(done_ids)) + "\n")
            cmd += ["--exclude", str(excl)]
        timed_out = False
        with open(log, "wb") as logf:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, module_timeout - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        events = _read_events(out)
        in_flight = None
        finished = False
        for ev in events:
            kind = ev.get("event")
            if kind == "header" and not run.header:
                run.header = ev
            elif kind == "absent":
                run.absent = True
            elif kind == "load-error":
                run.results[f"{module}:load"] = {"outcome": "error", "detail": ev.get("detail")}
            elif kind == "loaded" and expected is None:
                expected = ev.get("ids") or []
            elif kind == "start":
                in_flight = ev["id"]
            elif kind == "end":
                rec = {k: v for k, v in ev.items() if k not in {"event", "id"}}
                run.results[ev["id"]] = rec
                done_ids.add(ev["id"])
                if ev["id"] == in_flight:
                    in_flight = None
            elif kind == "done":
                finished = True
                if ev.get("tw_final") is not None:
                    run.header["tw_final"] = ev["tw_final"]
        # kill stray children the tests may have left (their group is the session we started)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if finished or run.absent or not events:
            if not finished and not run.absent:
                run.notes.append(f"attempt {attempt + 1}: no output, exit code {rc} (see {log})")
            elif rc != 0 and finished:
                run.notes.append(f"exit code {rc} after the last test (see {log})")
            elif timed_out:
                run.notes.append(f"hung after the last test, killed (see {log})")
            break
        tail = _tail(log)
        if timed_out:
            how, what = "hang", f"module timeout ({module_timeout:.0f} s), killed"
        elif "Timeout (" in tail and rc == 1:
            how, what = "hang", f"over {test_timeout:.0f} s, stopped by faulthandler"
        elif rc is not None and rc < 0:
            how, what = "crash", f"killed by {_signame(-rc)}"
        else:
            how, what = "crash", f"process exited with code {rc}"
        if in_flight is not None:
            run.results[in_flight] = {"outcome": how, "detail": what, "log_tail": tail}
            done_ids.add(in_flight)
        run.notes.append(f"attempt {attempt + 1}: {how} in {in_flight or 'module set-up/tear-down'}"
                         f" ({what}; see {log})")
        if in_flight is None or timed_out:
            break
    if expected is not None:
        for test_id in expected:
            if test_id not in run.results:
                run.results[test_id] = {"outcome": "not-run", "detail": "; ".join(run.notes)}
    run.wall = time.monotonic() - started
    return run


def _read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:  # a line cut short by a crash
                    pass
    except FileNotFoundError:
        pass
    return events


def _tail(path: Path, size: int = 3000) -> str:
    try:
        data = path.read_bytes()[-size:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# -- the whole comparison -------------------------------------------------------------------------------
@dataclasses.dataclass
class Comparison:
    python: str
    version: str
    taskwatch: dict[str, Any]
    tw_env: dict[str, str]
    plain: dict[str, ModuleRun]
    tw: dict[str, ModuleRun]
    regressions: dict[str, list[dict[str, Any]]]  # module -> [{id, plain, taskwatch, detail}]
    unconfirmed: dict[str, list[dict[str, Any]]]
    changes: dict[str, list[dict[str, Any]]]  # other outcome changes (fixed, newly skipped)
    env_changed: dict[str, list[str]]  # environment altered with taskwatch only
    # taskwatch's own failures it caught and logged (tests may pass): module -> {"where: error": n}
    internal_errors: dict[str, dict[str, int]]
    elapsed: float
    jobs: int

    def regression_ids(self) -> list[str]:
        return [r["id"] for rows in self.regressions.values() for r in rows]

    def to_json(self) -> dict[str, Any]:
        return {
            "python": self.python, "version": self.version, "taskwatch": self.taskwatch,
            "tw_env": self.tw_env, "elapsed": self.elapsed, "jobs": self.jobs,
            "regressions": self.regressions, "unconfirmed": self.unconfirmed,
            "changes": self.changes, "env_changed": self.env_changed,
            "internal_errors": self.internal_errors,
            "runs": {mode: {m: dataclasses.asdict(r) for m, r in runs.items()}
                     for mode, runs in (("plain", self.plain), ("taskwatch", self.tw))},
        }


def compare(python: str, modules: list[str] | tuple[str, ...] = MODULES, *, jobs: int = 3,
            tw_env: dict[str, str] | None = None, rev: str | None = None,
            workdir: Path | None = None, test_timeout: float = 15.0, module_timeout: float = 600.0,
            confirm: bool = True, max_rerun: int = 300, progress: Any = None) -> Comparison:
    """Run ``modules`` plainly and with taskwatch under ``python``; classify every test."""
    started = time.monotonic()
    tw_env = dict(tw_env or {})
    workdir = Path(workdir or tempfile.mkdtemp(prefix="taskwatch-cpython-asyncio-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tw_path, tw_info = prepare_taskwatch(python, workdir, rev=rev)
    tw_info["workdir"] = str(workdir)
    if tw_info["speedups_build"] != "built" and "TASKWATCH_SPEEDUPS" not in tw_env:
        # Without it an editable install's finder would load another tree's compiled module.
        tw_env["TASKWATCH_SPEEDUPS"] = "0"
    envs = {"plain": child_env("plain", None, {}), "taskwatch": child_env("taskwatch", tw_path, tw_env)}
    order = sorted(modules, key=lambda m: -_WEIGHT.get(m, 2))
    parts = [(m, (i, SHARDS.get(m, 1))) for m in order for i in range(SHARDS.get(m, 1))]
    parts.sort(key=lambda p: -_WEIGHT.get(p[0], 2) / p[1][1])
    jobs_list = [(m, shard, mode) for m, shard in parts for mode in ("plain", "taskwatch")]
    pieces: dict[tuple[str, str], list[ModuleRun]] = {}
    kw = {"test_timeout": test_timeout, "module_timeout": module_timeout}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_module, python, m, mode, envs[mode], workdir, shard=shard, **kw):
                   (m, shard, mode) for m, shard, mode in jobs_list}
        for fut in concurrent.futures.as_completed(futures):
            m, shard, mode = futures[fut]
            run = fut.result()
            pieces.setdefault((m, mode), []).append(run)
            if progress is not None:
                part = f" {shard[0] + 1}/{shard[1]}" if shard[1] > 1 else ""
                progress(f"  {mode:9} {m + part:28} {run.wall:6.1f} s"
                         + ("  (absent)" if run.absent else f"  {len(run.results)} tests")
                         + ("".join(f"\n      {n}" for n in run.notes)))
    runs: dict[str, dict[str, ModuleRun]] = {"plain": {}, "taskwatch": {}}
    for m in order:
        for mode in ("plain", "taskwatch"):
            runs[mode][m] = _merge(m, mode, pieces[(m, mode)])
    regressions: dict[str, list[dict[str, Any]]] = {}
    changes: dict[str, list[dict[str, Any]]] = {}
    env_changed: dict[str, list[str]] = {}
    for m in order:
        plain, tw = runs["plain"][m], runs["taskwatch"][m]
        if plain.absent and tw.absent:
            continue
        for test_id in sorted(set(plain.results) | set(tw.results), key=_id_order(plain, tw)):
            p = plain.results.get(test_id, {"outcome": "not-run"})
            t = tw.results.get(test_id, {"outcome": "not-run"})
            row = {"id": test_id, "plain": p["outcome"], "taskwatch": t["outcome"],
                   "plain_secs": p.get("secs"), "secs": t.get("secs"),
                   "detail": t.get("detail"), "tw_findings": t.get("tw_findings"),
                   "tw_internal_errors": t.get("tw_internal_errors"), "log_tail": t.get("log_tail")}
            if p["outcome"] in GOOD and t["outcome"] in BAD:
                regressions.setdefault(m, []).append(row)
            elif p["outcome"] != t["outcome"]:
                changes.setdefault(m, []).append(row)
            if t.get("env_changed") and not p.get("env_changed"):
                env_changed.setdefault(m, []).append(test_id)
    unconfirmed: dict[str, list[dict[str, Any]]] = {}
    total = sum(map(len, regressions.values()))
    if confirm and total > max_rerun:
        confirm = False
        if progress is not None:
            progress(f"  {total} regressions: more than {max_rerun}, not rerun")
    # What a rerun could not clear: a crash (even if the rerun's collections happen to differ), or
    # a hang of a test that took under a third of the limit plainly (load does not explain it).
    to_rerun = {m: [r for r in rows if not _settled(r, test_timeout)]
                for m, rows in regressions.items()}
    to_rerun = {m: rows for m, rows in to_rerun.items() if rows}
    if confirm and to_rerun:
        if progress is not None:
            progress(f"  rerunning {sum(map(len, to_rerun.values()))} regressed tests with taskwatch")
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(run_module, python, m, "taskwatch", envs["taskwatch"], workdir,
                                   only=[r["id"] for r in rows], tag="-rerun", **kw): m
                       for m, rows in to_rerun.items()}
            for fut in concurrent.futures.as_completed(futures):
                m = futures[fut]
                rerun = fut.result()
                kept = []
                for row in regressions[m]:
                    if not _settled(row, test_timeout):
                        row["rerun"] = rerun.results.get(row["id"], {"outcome": "not-run"})["outcome"]
                        if row["rerun"] not in BAD:
                            unconfirmed.setdefault(m, []).append(row)
                            continue
                    kept.append(row)
                if kept:
                    regressions[m] = kept
                else:
                    del regressions[m]
    internal_errors = {m: found for m, run in runs["taskwatch"].items()
                       if (found := _internal_errors(run))}
    header = next((r.header for r in runs["taskwatch"].values() if r.header), {})
    tw_info["in_child"] = header.get("taskwatch")
    return Comparison(python=python, version=header.get("python", "?"), taskwatch=tw_info,
                      tw_env=tw_env, plain=runs["plain"], tw=runs["taskwatch"],
                      regressions=regressions, unconfirmed=unconfirmed, changes=changes,
                      env_changed=env_changed, internal_errors=internal_errors,
                      elapsed=time.monotonic() - started, jobs=jobs)


def _internal_errors(run: ModuleRun) -> dict[str, int]:
    """taskwatch's internal errors in a run's logs: "where: exception line" -> how many were logged
    (taskwatch logs the first of each place; the per-test counts are in the results)."""
    found: dict[str, int] = {}
    for log in run.logs:
        lines = _tail(Path(log), 1 << 24).splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("taskwatch internal error in "):
                continue
            where = line[len("taskwatch internal error in "):].split(" (further")[0]
            exc = next((ln.strip()[:200] for ln in lines[i + 1:i + 80]
                        if ln.strip() and not ln[0].isspace() and not ln.startswith("Traceback")),
                       "?")
            key = f"{where}: {exc}"
            found[key] = found.get(key, 0) + 1
    counted = sum(r.get("tw_internal_errors", 0) for r in run.results.values())
    if counted and not found:
        found["(counted, not logged)"] = counted
    return found


def _settled(row: dict[str, Any], test_timeout: float) -> bool:
    """A regression no rerun is needed for (see compare())."""
    if row["taskwatch"] == "crash":
        return True
    return row["taskwatch"] == "hang" and (row.get("plain_secs") or 0.0) < test_timeout / 3


def _merge(module: str, mode: str, pieces: list[ModuleRun]) -> ModuleRun:
    """One module's shards as one run (wall: the shards' sum)."""
    if len(pieces) == 1:
        return pieces[0]
    pieces.sort(key=lambda r: r.logs[0] if r.logs else "")
    run = ModuleRun(module, mode, absent=all(r.absent for r in pieces))
    for piece in pieces:
        run.results.update(piece.results)
        run.wall += piece.wall
        run.attempts += piece.attempts
        run.notes += piece.notes
        run.logs += piece.logs
        run.header = run.header or piece.header
    return run


def _id_order(plain: ModuleRun, tw: ModuleRun) -> Any:
    order = {test_id: i for i, test_id in enumerate(plain.results)}
    return lambda test_id: (order.get(test_id, len(order)), test_id)


# -- text report ----------------------------------------------------------------------------------------
def _reason(detail: str | None) -> str:
    """What went wrong, in one line: the exception line of the last traceback (the first line
    at column 0 after it), or the detail's first line (crash, hang, skip reason)."""
    if not detail:
        return ""
    lines = detail.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if starts:
        for ln in lines[starts[-1] + 1:]:
            if ln.strip() and not ln[0].isspace():
                return ln.strip()[:200]
    return next((ln.strip()[:200] for ln in lines if ln.strip()), "")


def _test_name(test_id: str) -> str:
    """``Class.test_x`` of a full id, the method name alone when the class does not matter."""
    return ".".join(test_id.rsplit(".", 2)[-2:])


def _groups(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows grouped by outcome change and failure line, biggest group first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = f"[{row['plain']} -> {row['taskwatch']}] {_reason(row['detail'])}"
        groups.setdefault(key, []).append(row)
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


def _counts(run: ModuleRun) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for rec in run.results.values():
        counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
    return counts


def _short(counts: dict[str, int]) -> str:
    keys = ("pass", "fail", "error", "skip")
    text = "/".join(str(counts[k]) for k in keys)
    extra = [f"{k} {counts[k]}" for k in ("xfail", "xpass", "crash", "hang", "not-run") if counts[k]]
    return text + (" +" + ",".join(extra) if extra else "")


def format_report(c: Comparison, *, details: bool = False) -> str:
    """The comparison as text; regressions grouped by failure line, or each listed (details)."""
    tw = c.taskwatch
    child = tw.get("in_child") or {}
    lines = [
        f"CPython asyncio suite on Python {c.version} ({c.python}): plain vs taskwatch.install()",
        f"taskwatch: {tw.get('tree')} at {tw.get('commit', '')[:12]}, C accelerator "
        f"{tw.get('speedups_build')}, loaded in child: {child.get('speedups')}, "
        f"installed: {child.get('installed')}"
        + (f", INSTALL ERROR {child.get('install_error')}" if child.get("install_error") else ""),
    ]
    if c.tw_env:
        lines.append("taskwatch environment: " + " ".join(f"{k}={v}" for k, v in c.tw_env.items()))
    lines.append("")
    lines.append(f"{'module':24} {'tests':>5}  {'plain p/f/e/s':22} {'taskwatch p/f/e/s':30} "
                 f"{'regr':>4} {'unconf':>6}  {'plain s':>7} {'tw s':>6}")
    totals = {"tests": 0, "regr": 0, "unconf": 0, "plain": 0.0, "tw": 0.0}
    for m, plain in c.plain.items():
        twr = c.tw[m]
        if plain.absent and twr.absent:
            lines.append(f"{m:24} {'absent':>5}")
            continue
        n = len(set(plain.results) | set(twr.results))
        r = len(c.regressions.get(m, ()))
        u = len(c.unconfirmed.get(m, ()))
        totals["tests"] += n
        totals["regr"] += r
        totals["unconf"] += u
        totals["plain"] += plain.wall
        totals["tw"] += twr.wall
        lines.append(f"{m:24} {n:5}  {_short(_counts(plain)):22} {_short(_counts(twr)):30} "
                     f"{r:4} {u:6}  {plain.wall:7.1f} {twr.wall:6.1f}")
    lines.append(f"{'total':24} {totals['tests']:5}  {'':22} {'':30} {totals['regr']:4} "
                 f"{totals['unconf']:6}  {totals['plain']:7.1f} {totals['tw']:6.1f}")
    lines.append(f"elapsed {c.elapsed:.1f} s with {c.jobs} parallel jobs "
                 f"(the plain and taskwatch runs side by side)")
    for m in c.plain:
        for run in (c.plain[m], c.tw[m]):
            for note in run.notes:
                lines.append(f"  note: {run.mode} {m}: {note}")
    if c.regressions:
        lines += ["", f"REGRESSIONS ({totals['regr']}): pass plainly, not with taskwatch"]
        for m, rows in c.regressions.items():
            if details:
                for row in rows:
                    lines.append(f"  {row['id']}  [{row['plain']} -> {row['taskwatch']}]  "
                                 f"{_reason(row['detail'])}")
                continue
            lines.append(f"  {m}:")
            for key, group in _groups(rows):
                methods = sorted({r["id"].rsplit(".", 1)[-1] for r in group})
                shown = ", ".join(methods[:6]) + (f", ... ({len(methods)} names)"
                                                  if len(methods) > 6 else "")
                lines.append(f"    {len(group):4}  {key}\n          {shown}")
    else:
        lines += ["", "No regressions."]
    if c.unconfirmed:
        lines += ["", "Not reproduced on rerun (failed once with taskwatch, passed when rerun):"]
        for rows in c.unconfirmed.values():
            for row in rows:
                lines.append(f"  {row['id']}  [{row['plain']} -> {row['taskwatch']}]  "
                             f"{_reason(row['detail'])}")
    if c.changes:
        lines += ["", "Other outcome changes (not regressions):"]
        for rows in c.changes.values():
            for row in rows:
                lines.append(f"  {row['id']}  [{row['plain']} -> {row['taskwatch']}]")
    if c.internal_errors:
        lines += ["", "taskwatch internal errors (caught and logged by taskwatch; tests may pass):"]
        for m, found in c.internal_errors.items():
            tests = sum(1 for r in c.tw[m].results.values() if r.get("tw_internal_errors"))
            count = sum(r.get("tw_internal_errors", 0) for r in c.tw[m].results.values())
            lines.append(f"  {m}: {count} in {tests} tests")
            for key in found:
                lines.append(f"      {key}")
    if c.env_changed:
        lines += ["", "Environment changed (test.support.environment_altered) with taskwatch only:"]
        for m, ids in c.env_changed.items():
            lines.append(f"  {m}: {len(ids)} tests, e.g. {ids[0]}")
    lines.append(f"\nlogs and JSON lines: {tw.get('workdir')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cpython_asyncio",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter under test (default: this one)")
    parser.add_argument("--modules", default=",".join(MODULES),
                        help="comma-separated test_asyncio modules (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=3, help="parallel subprocesses (default 3)")
    parser.add_argument("--rev", help="test this git revision of taskwatch instead of the working tree")
    parser.add_argument("--timers-off", action="store_true",
                        help="taskwatch run without its loop timers: " +
                        " ".join(f"{k}={v}" for k, v in TIMERS_OFF.items()))
    parser.add_argument("--tw-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the taskwatch run (e.g. TASKWATCH_SPEEDUPS=0)")
    parser.add_argument("--test-timeout", type=float, default=15.0,
                        help="seconds one test may run before it counts as hung "
                        "(default 15; the slowest take about 5)")
    parser.add_argument("--no-rerun", action="store_true", help="do not rerun regressions")
    parser.add_argument("--workdir", type=Path, help="where logs go (default: a new temp folder)")
    parser.add_argument("--json", type=Path, help="write the full comparison as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--list", action="store_true",
                        help="list every regressed test (default: grouped by failure line)")
    args = parser.parse_args(argv)
    tw_env = dict(TIMERS_OFF) if args.timers_off else {}
    for item in args.tw_env:
        name, _, value = item.partition("=")
        tw_env[name] = value
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    progress = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    result = compare(args.python, modules, jobs=args.jobs, tw_env=tw_env, rev=args.rev,
                     workdir=args.workdir, test_timeout=args.test_timeout,
                     confirm=not args.no_rerun, progress=progress)
    print(format_report(result, details=args.list), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=1))
    return 1 if result.regressions else 0


__all__ = ["MODULES", "TIMERS_OFF", "Comparison", "compare", "format_report", "main",
           "run_module", "prepare_taskwatch"]
