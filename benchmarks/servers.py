"""``python -m benchmarks.servers``: taskwatch on real framework servers, loaded by wrk.

An aiohttp app and a Starlette app under uvicorn (both on uvloop; see ``_servers_app.py``), each
handler doing a little work and spawning two tasks per request, served by a fresh process per
measurement and loaded from another process by ``wrk`` (``apt-get install wrk``) over loopback.
With two or more CPUs the server is pinned to one (``taskset``, every thread of it) and wrk to
another. Each measurement: start the server, 1 s of wrk warm-up, then the measured wrk run; the
server's CPU time (``/proc/PID/task/*/schedstat``, every thread: the loop's and taskwatch's) and
its request count (its own counter, read through ``GET /_stats``) are read just before and just
after that run.

Reported per app and mode: req/s (wrk), server CPU µs per request, p50 and p99 latency (wrk),
garbage collections per 1,000 requests, the server's context switches per second, and tasks
taskwatch saw per request (proof it was on). Rounds alternate: round r runs the apps and the
mode list rotated by r. Ratios are taken against ``plain`` *within each round* and the table
gives their median and [min–max]; ``plain2`` is the same plain server again, the noise control:
an effect is resolved only when it lies outside the control's spread.

    python -m benchmarks.servers                        # 8 rounds x 2 apps x 4 modes, 5 s each
    python -m benchmarks.servers --quick                # smoke run: 1 round, 1 s
    python -m benchmarks.servers --apps aiohttp --modes plain,plain2,taskwatch,factory-ctx
    python -m benchmarks.servers --idle                 # wake-ups/s of an idle server, per thread
    python -m benchmarks.servers --profile              # cProfile call counts per request

Writes ``benchmarks/results/servers/<python>.json`` and ``.md`` (``--quick``: under
``benchmarks/results/quick/``, which git ignores). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only, by design
APPS = ("aiohttp", "starlette")
MODES = ("plain", "plain2", "taskwatch", "nowatchdog")
LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return []


def _threads(pid: int) -> dict[str, dict[str, int]]:
    """Per thread of ``pid``: on-CPU ns, run-queue wait ns, voluntary and involuntary switches."""
    out: dict[str, dict[str, int]] = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                run_ns, wait_ns = (int(x) for x in f.read().split()[:2])
            vol = invol = 0
            name = ""
            with open(f"{base}/{tid}/status") as f:
                for line in f:
                    if line.startswith("Name:"):
                        name = line.split(None, 1)[1].strip()
                    elif line.startswith("voluntary_ctxt_switches"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol = int(line.split()[1])
        except (OSError, ValueError):
            continue
        out[tid] = {"run_ns": run_ns, "wait_ns": wait_ns, "vol": vol, "invol": invol,
                    "name": name}  # type: ignore[dict-item]
    return out


def _sum(threads: dict[str, dict[str, int]], key: str) -> int:
    return sum(t[key] for t in threads.values())


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; /proc/stat, not idle nor iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def split_mode(mode: str, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """``MODE[@DIR][#NAME=VALUE...]`` (see ``_servers_app``): the bare mode, and ``env`` with the
    variables and the taskwatch source folder it names."""
    mode, *extra = mode.split("#")
    for item in extra:
        name, _, value = item.partition("=")
        env[name] = value
    mode, _, source = mode.partition("@")
    if source:
        env["BENCH_TASKWATCH_FROM"] = source
    return mode, env


class Server:
    """One server process (pinned with taskset when asked)."""

    def __init__(self, app: str, mode: str, cpu: int | None, env: dict[str, str] | None = None):
        mode, env = split_mode(mode, dict(env or _env()))
        cmd = [sys.executable, "-m", "benchmarks._servers_app", app, mode]
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("READY"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise RuntimeError(f"{app}/{mode} did not start: {line!r} {err[-500:]}")
        parts = line.split()
        self.port = int(parts[1])
        self.http = parts[2] if len(parts) > 2 else ""
        self.pid = self.proc.pid

    def stop(self) -> str:
        try:
            self.proc.send_signal(signal.SIGTERM)
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own server's group only
            _, err = self.proc.communicate()
        return err


def _env() -> dict[str, str]:
    drop = ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONWARNINGS",
            "BENCH_PROFILE", "BENCH_TASKWATCH_FROM")
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith(("TASKWATCH_", "OTEL_"))}


def _wrk(port: int, seconds: float, connections: int, cpu: int | None,
         script: str) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", script,
           f"http://{HOST}:{port}/item/42"]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"wrk printed no result: {out[-500:]}")


def measure(app: str, mode: str, args: argparse.Namespace, script: str) -> dict[str, Any]:
    srv = Server(app, mode, args.server_cpu)
    try:
        _wrk(srv.port, args.warmup, args.connections, args.client_cpu, script)
        s0 = _get(srv.port, "/_stats")
        kids0, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds()
        t0, th0 = time.perf_counter(), _threads(srv.pid)
        w = _wrk(srv.port, args.duration, args.connections, args.client_cpu, script)
        th1, t1 = _threads(srv.pid), time.perf_counter()
        kids1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_seconds()
        s1 = _get(srv.port, "/_stats")
    finally:
        err = srv.stop()
    served = max(1, s1["requests"] - s0["requests"])
    wall = t1 - t0
    cpu_s = (_sum(th1, "run_ns") - _sum(th0, "run_ns")) / 1e9
    per_thread = {}
    side = 0.0  # CPU of every thread but the loop's (taskwatch's thread, libuv's workers)
    for tid, a in th1.items():
        b = th0.get(tid, {"run_ns": 0, "wait_ns": 0, "vol": 0, "invol": 0})
        per_thread[f"{a['name']}:{tid}"] = {
            "cpu_share": (a["run_ns"] - b["run_ns"]) / 1e9 / wall,
            "vol_per_s": (a["vol"] - b["vol"]) / wall, "invol_per_s": (a["invol"] - b["invol"]) / wall}
        if tid != str(srv.pid):
            side += (a["run_ns"] - b["run_ns"]) / 1e9
    gcs = [b - a for a, b in zip(s0["gc"], s1["gc"])]
    wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    res = {
        "app": app, "mode": mode, "http": srv.http,
        # CPUs' worth of work by everything but this server and wrk during the run: the noise
        "others_cpu": max(0.0, (busy1 - busy0) - cpu_s - wrk_cpu) / wall,
        "rps": w["requests"] / (w["duration_us"] / 1e6),
        "cpu_us_per_req": cpu_s / served * 1e6,
        "cpu_share": cpu_s / wall,
        "side_threads_cpu_us_per_req": side / served * 1e6,
        # share of the run the server's threads were runnable but waited for their CPU: another
        # process (or the hypervisor) took the server's core
        "server_wait_share": (_sum(th1, "wait_ns") - _sum(th0, "wait_ns")) / 1e9 / wall,
        "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000, "p999_ms": w["p999_us"] / 1000,
        "served": served, "wrk_requests": w["requests"], "wrk_errors": w["errors"],
        "gc_per_1k_req": [g * 1000 / served for g in gcs],
        "ctx_switches_per_s": ((_sum(th1, "vol") - _sum(th0, "vol")) +
                               (_sum(th1, "invol") - _sum(th0, "invol"))) / wall,
        "threads": per_thread,
        "factory": s1.get("factory"),
    }
    if "tasks_created" in s1:
        res["tasks_per_req"] = (s1["tasks_created"] - s0["tasks_created"]) / served
    findings = [ln for ln in err.splitlines() if ln.startswith("[")]
    if findings:
        res["server_stderr"] = findings[:5]
    return res


def _others_now(seconds: float) -> float:
    """CPUs' worth of work the rest of the machine is doing right now (nothing of ours runs)."""
    b0, t0 = _busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (_busy_seconds() - b0) / (time.perf_counter() - t0)


def measure_quiet(app: str, mode: str, args: argparse.Namespace, script: str) -> dict[str, Any]:
    """``measure``, on a machine whose other work stays under ``--max-others`` CPUs: wait for a
    quiet moment first (up to ``--quiet-wait`` s), and measure again (up to ``--retries`` times)
    when other work came up during the run. The result says how it went."""
    waited = 0.0
    tries = 0
    while True:
        if args.max_others is not None:
            t0 = time.perf_counter()
            while (time.perf_counter() - t0 < args.quiet_wait
                   and _others_now(0.5) > args.max_others):
                time.sleep(1.0)
            waited += time.perf_counter() - t0
        r = measure(app, mode, args, script)
        tries += 1
        noisy = args.max_others is not None and (r["others_cpu"] > args.max_others or
                                                  r["server_wait_share"] > args.max_others / 2)
        if not noisy or tries > args.retries:
            r["tries"], r["waited_s"], r["noisy"] = tries, round(waited, 1), noisy
            return r
        _say(f"    disturbed (others {r['others_cpu']:.2f} CPUs, server waited for its CPU "
             f"{r['server_wait_share']:.1%} of the run): again")


METRICS = ("rps", "cpu_us_per_req", "p50_ms", "p99_ms")


def _ratios(runs: list[dict[str, Any]], apps: list[str], modes: list[str]) -> dict[str, Any]:
    """Per app and mode: median of raw values, and per-round ratios to plain (median, min, max)."""
    out: dict[str, Any] = {}
    for app in apps:
        base = {r["round"]: r for r in runs if r["app"] == app and r["mode"] == "plain"}
        for mode in modes:
            mine = [r for r in runs if r["app"] == app and r["mode"] == mode]
            if not mine:
                continue
            row: dict[str, Any] = {"rounds": len(mine)}
            for m in METRICS:
                vals = [r[m] for r in mine]
                rat = [r[m] / base[r["round"]][m] for r in mine if r["round"] in base]
                row[m] = statistics.median(vals)
                row[m + "_ratio"] = statistics.median(rat) if rat else None
                row[m + "_ratio_range"] = [min(rat), max(rat)] if rat else None
            row["gc_per_1k_req"] = [statistics.median(r["gc_per_1k_req"][g] for r in mine)
                                    for g in range(3)]
            row["ctx_switches_per_s"] = statistics.median(r["ctx_switches_per_s"] for r in mine)
            row["others_cpu_max"] = max(r["others_cpu"] for r in mine)
            row["noisy_runs"] = sum(1 for r in mine if r.get("noisy"))
            row["server_wait_share_max"] = max(r["server_wait_share"] for r in mine)
            row["side_threads_cpu_us_per_req"] = statistics.median(
                r["side_threads_cpu_us_per_req"] for r in mine)
            if any("tasks_per_req" in r for r in mine):
                row["tasks_per_req"] = statistics.median(r.get("tasks_per_req", 0) for r in mine)
            out[f"{app}/{mode}"] = row
    return out


def _fmt_ratio(row: dict[str, Any], m: str) -> str:
    r, rng = row[m + "_ratio"], row[m + "_ratio_range"]
    return "–" if r is None else f"{r:.3f}x [{rng[0]:.3f}–{rng[1]:.3f}]"


def _markdown(doc: dict[str, Any]) -> str:
    h = doc["header"]
    lines = [f"# Real-server overhead (`python -m benchmarks.servers`)", "",
             f"Python {h['python']}, uvloop {h['uvloop']}, aiohttp {h['aiohttp']}, uvicorn "
             f"{h['uvicorn']}, starlette {h['starlette']}, {h['cpu_model']} x{h['cpu_count']}; "
             f"commit {h['git_commit']} (taskwatch source digest {h['taskwatch_source']}"
             f"{', CHANGED DURING THE RUN' if h.get('taskwatch_source_changed_during_run') else ''}); wrk -t1 -c{h['connections']}, {h['duration']} s measured "
             f"after {h['warmup']} s warm-up, server on CPU {h['server_cpu']}, wrk on CPU "
             f"{h['client_cpu']}; {h['rounds']} rounds; load average before/after: "
             f"{h['load_before']} / {h['load_after']}.", "",
             "Ratios: median of per-round ratios to `plain` [min–max over rounds]. `plain2` is the "
             "noise control. *others' CPU*: CPUs' worth of work by the rest of the machine during a "
             "run; *server's CPU wait*: share of the run the server was runnable but not running "
             "(another process or the hypervisor had its CPU); both the largest over the rounds; "
             + (f"runs were taken only while it stayed under {h['max_others']} (a disturbed run was "
                "measured again; runs still disturbed are counted in the JSON as `noisy`)."
                if h.get("max_others") is not None else "no quiet was waited for."), "",
             "| app | mode | req/s | req/s vs plain | CPU µs/req | CPU/req vs plain | p50 ms | "
             "p99 ms | p99 vs plain | GC gen0/1/2 per 1k req | ctx sw/s | other threads' CPU µs/req | "
             "tasks/req | others' CPU (max) | server's CPU wait (max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in doc["summary"].items():
        app, mode = key.split("/", 1)
        gc_s = "/".join(f"{g:.1f}" for g in row["gc_per_1k_req"])
        tpr = f"{row['tasks_per_req']:.2f}" if "tasks_per_req" in row else "–"
        lines.append(
            f"| {app} | {mode} | {row['rps']:.0f} | {_fmt_ratio(row, 'rps')} | "
            f"{row['cpu_us_per_req']:.1f} | {_fmt_ratio(row, 'cpu_us_per_req')} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {_fmt_ratio(row, 'p99_ms')} | {gc_s} | "
            f"{row['ctx_switches_per_s']:.0f} | {row['side_threads_cpu_us_per_req']:.2f} | {tpr} | "
            f"{row['others_cpu_max']:.2f}{' (' + str(row['noisy_runs']) + ' noisy)' if row.get('noisy_runs') else ''} | "
            f"{row['server_wait_share_max']:.1%} |")
    if doc.get("idle"):
        lines += ["", "## Idle server (no requests)", "",
                  "| app | mode | wake-ups/s (all threads) | per thread | CPU % |", "|---|---|---|---|---|"]
        for r in doc["idle"]:
            per = ", ".join(f"{k}: {v:.1f}/s" for k, v in r["per_thread"].items())
            lines.append(f"| {r['app']} | {r['mode']} | {r['wakeups_per_s']:.1f} | {per} | "
                         f"{r['cpu_percent']:.3f} |")
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _header(args: argparse.Namespace) -> dict[str, Any]:
    import importlib.metadata as md

    def ver(d: str) -> str | None:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            return None

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "taskwatch"], cwd=REPO,
                           text=True, capture_output=True).stdout.strip()
    from ._harness import source_digest

    return {"python": platform.python_version(), "uvloop": ver("uvloop"),
            "taskwatch_source": source_digest(),
            "aiohttp": ver("aiohttp"), "uvicorn": ver("uvicorn"), "starlette": ver("starlette"),
            "httptools": ver("httptools"), "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "git_commit": commit + ("+uncommitted taskwatch changes" if dirty else ""),
            "connections": args.connections, "duration": args.duration, "warmup": args.warmup,
            "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "rounds": args.rounds,
            "max_others": args.max_others,
            "load_before": _load()}


def idle(apps: list[str], modes: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Wake-ups per second of an idle server (voluntary + involuntary switches of each thread)."""
    out = []
    for app in apps:
        for mode in modes:
            srv = Server(app, mode, args.server_cpu)
            try:
                _get(srv.port, "/item/1")  # one request: the loop has run a task
                time.sleep(args.idle_settle)
                t0, a = time.perf_counter(), _threads(srv.pid)
                time.sleep(args.idle_seconds)
                b, t1 = _threads(srv.pid), time.perf_counter()
            finally:
                srv.stop()
            wall = t1 - t0
            per = {}
            for tid, x in b.items():
                y = a.get(tid, {"vol": 0, "invol": 0})
                per[f"{x['name']}:{tid}"] = ((x["vol"] - y["vol"]) + (x["invol"] - y["invol"])) / wall
            cpu = (_sum(b, "run_ns") - _sum(a, "run_ns")) / 1e9 / wall * 100
            r = {"app": app, "mode": mode, "seconds": wall, "wakeups_per_s": sum(per.values()),
                 "per_thread": per, "cpu_percent": cpu}
            _say(f"idle {app:<9} {mode:<12} wake-ups/s={r['wakeups_per_s']:.1f} "
                 f"({', '.join(f'{k} {v:.1f}' for k, v in per.items())}) CPU {cpu:.3f}%")
            out.append(r)
    return out


def profile(apps: list[str], modes: list[str], args: argparse.Namespace, script: str) -> None:
    """cProfile call counts per request, request path with and without taskwatch (distorts time:
    read the counts). Prints the functions called per request that differ between the modes."""
    import pstats

    for app in apps:
        counts: dict[str, dict[str, float]] = {}
        for mode in modes:
            with tempfile.TemporaryDirectory() as tmp:
                env = _env()
                env["BENCH_PROFILE"] = os.path.join(tmp, "prof")
                srv = Server(app, mode, args.server_cpu, env=env)
                try:
                    s0 = _get(srv.port, "/_stats")
                    _wrk(srv.port, args.duration, args.connections, args.client_cpu, script)
                    s1 = _get(srv.port, "/_stats")
                finally:
                    srv.stop()
                served = max(1, s1["requests"] - s0["requests"])
                st = pstats.Stats(env["BENCH_PROFILE"]).stats  # type: ignore[attr-defined]
            c: dict[str, float] = {}
            for (fn, line, name), (cc, nc, tt, ct, callers) in st.items():
                short = fn.replace(str(REPO) + os.sep, "")
                for marker in ("site-packages" + os.sep, "lib" + os.sep + "python"):
                    if marker in short:
                        short = short.split(marker, 1)[1]
                c[f"{short}:{line}({name})"] = nc / served
            counts[mode] = c
            _say(f"profile {app} {mode}: {served} requests")
        keys = set().union(*counts.values())
        rows = []
        for k in keys:
            vals = [counts[m].get(k, 0.0) for m in modes]
            if max(vals) >= 0.5 and max(vals) - min(vals) >= 0.05:
                rows.append((max(vals) - min(vals), k, vals))
        rows.sort(reverse=True)
        print(f"\n## {app}: calls per request that differ between modes ({', '.join(modes)})")
        for _, k, vals in rows[:40]:
            print("  " + "  ".join(f"{v:7.2f}" for v in vals) + "  " + k)
        for m in modes:
            total = sum(counts[m].values())
            print(f"  total profiled calls per request, {m}: {total:.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.servers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 1 s: a smoke run")
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--modes", default=",".join(MODES),
                    help="see benchmarks/_servers_app.py; 'plain' is always run (the base)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--max-others", type=float, default=None, metavar="CPUS",
                    help="measure only while the rest of the machine uses at most CPUS (e.g. 0.15): "
                    "wait for a quiet moment, redo a run that other work disturbed")
    ap.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for quiet (s)")
    ap.add_argument("--retries", type=int, default=3, help="re-measurements of a disturbed run")
    ap.add_argument("--idle", action="store_true", help="measure idle wake-ups instead")
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--idle-settle", type=float, default=2.0)
    ap.add_argument("--profile", action="store_true", help="cProfile call counts per request")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so a server being measured is stopped by its finally
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 1.0
        args.idle_seconds, args.idle_settle = 1.0, 0.5
    apps = [a for a in args.apps.split(",") if a]
    modes = [m for m in args.modes.split(",") if m]
    if "plain" not in modes:
        modes.insert(0, "plain")
    cpus = _cpus()
    args.server_cpu, args.client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    if not shutil.which("wrk") and not args.idle:
        _say("wrk is not installed (apt-get install wrk): nothing measured")
        return 2
    out_dir = args.out or (REPO / "benchmarks" / "results" /
                           ("quick" if args.quick else "servers"))
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "py" + "".join(platform.python_version_tuple()[:2])
    header = _header(args)
    _say(f"servers: python {header['python']}, apps {apps}, modes {modes}, {args.rounds} rounds, "
         f"load {header['load_before']}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        script = f.name
    try:
        if args.profile:
            profile(apps, modes, args, script)
            return 0
        doc: dict[str, Any] = {"header": header, "runs": [], "summary": {}, "idle": []}
        if args.idle:
            doc["idle"] = idle(apps, modes, args)
            name = f"idle-{tag}"
        else:
            name = tag
            for rnd in range(args.rounds):
                order_apps = apps[rnd % len(apps):] + apps[:rnd % len(apps)]
                k = rnd % len(modes)
                for app in order_apps:
                    for mode in modes[k:] + modes[:k]:
                        t = time.perf_counter()
                        r = measure_quiet(app, mode, args, script)
                        r["round"] = rnd
                        doc["runs"].append(r)
                        _say(f"[{rnd + 1}/{args.rounds}] {app:<9} {mode:<16} rps={r['rps']:.0f} "
                             f"cpu/req={r['cpu_us_per_req']:.1f}us p50={r['p50_ms']:.2f} "
                             f"p99={r['p99_ms']:.2f}ms cpu={r['cpu_share']:.2f} "
                             f"tasks/req={r.get('tasks_per_req', 0):.2f} others={r['others_cpu']:.2f} "
                             f"wait={r['server_wait_share']:.3f} "
                             f"load={_load()} "
                             f"({time.perf_counter() - t:.1f} s)")
            doc["summary"] = _ratios(doc["runs"], apps, modes)
        header["load_after"] = _load()
        from ._harness import source_digest

        if source_digest() != header["taskwatch_source"]:
            header["taskwatch_source_changed_during_run"] = True
            _say("WARNING: taskwatch's source changed during the run; its numbers mix versions")
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        md = _markdown(doc) if doc["summary"] or doc["idle"] else ""
        (out_dir / f"{name}.md").write_text(md)
        print(md)
        _say(f"wrote {out_dir / (name + '.json')} and .md")
    finally:
        os.unlink(script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
