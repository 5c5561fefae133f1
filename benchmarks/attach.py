"""``python -m benchmarks.attach``: how long ``taskwatch ps`` takes to answer, by live task count.

Starts a program with N pending tasks (asyncio or uvloop), waits until they exist, then times
``taskwatch ps --json``'s attach (the in-process call ``_attach.fetch``, so Python's start-up is not
counted) ``--repeat`` times through each way the program can be reached here: the control socket
(``TASKWATCH_CONTROL=1``) and, on Python 3.14+, ``sys.remote_exec``. Reports the median and the
range, and the snapshot's size. The program's loop also keeps a timer ticking, and the longest
gap between its ticks during the attaches shows what the attach cost the program's loop.

    python -m benchmarks.attach --tasks 1000,100000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_PROGRAM = """\
import asyncio, os, sys, time
import taskwatch
taskwatch.install()
N = int(sys.argv[1])
async def worker():
    await asyncio.sleep(3600)
async def ticker(out):
    last = time.monotonic()
    while True:
        await asyncio.sleep(0.01)
        now = time.monotonic()
        gap = now - last
        last = now
        if os.path.exists(out + ".reset"):
            os.unlink(out + ".reset")
            globals()["worst"] = 0.0
        globals()["worst"] = max(globals().get("worst", 0.0), gap)
        with open(out + ".tmp", "w") as f:
            f.write(str(globals()["worst"]))
        os.replace(out + ".tmp", out)
async def main():
    tasks = [asyncio.create_task(worker()) for _ in range(N)]
    asyncio.create_task(ticker(sys.argv[2]))
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.sleep(3600)
if sys.argv[3] == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def measure(tasks: int, loop: str, via: str, repeat: int, tmp: Path) -> dict[str, Any]:
    from taskwatch._live import _attach

    script = tmp / "program.py"
    script.write_text(_PROGRAM)
    gaps = tmp / f"gaps-{tasks}-{via}"
    env = dict(os.environ)
    if via == "socket":
        env["TASKWATCH_CONTROL"] = "1"
    proc = subprocess.Popen([sys.executable, str(script), str(tasks), str(gaps), loop],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit("the program did not start")
        times, size = [], 0
        _attach.fetch(proc.pid, 120)  # the first look (waits start counting)
        time.sleep(0.3)
        Path(str(gaps) + ".reset").touch()
        time.sleep(0.1)
        for _ in range(repeat):
            started = time.perf_counter()
            snap = _attach.fetch(proc.pid, 120)
            times.append(time.perf_counter() - started)
            size = len(json.dumps(snap))
            assert snap["tasks"] >= tasks, snap["tasks"]
            time.sleep(0.2)
        time.sleep(0.1)
        worst = float(gaps.read_text()) if gaps.exists() else float("nan")
        return {"tasks": tasks, "loop": loop, "via": via, "repeat": repeat,
                "median_s": round(statistics.median(times), 4),
                "min_s": round(min(times), 4), "max_s": round(max(times), 4),
                "snapshot_bytes": size, "loop_worst_tick_gap_s": round(worst, 4)}
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.attach", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="1000,100000")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attach")
    args = ap.parse_args(argv)
    ways = ["socket"] + (["remote_exec"] if hasattr(sys, "remote_exec") else [])
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"taskwatch-attach-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for loop in args.loops.split(","):
        for count in (int(n) for n in args.tasks.split(",")):
            for via in ways:
                row = measure(count, loop, via, args.repeat, tmp)
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    version = f"py{sys.version_info[0]}{sys.version_info[1]}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{version}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [f"# Attach latency (`python -m benchmarks.attach`), Python {sys.version.split()[0]}",
             "", "Seconds from the attach call to the parsed snapshot (median [min-max] of "
             f"{args.repeat}); the program's 10 ms ticker's longest gap while attached.", "",
             "| loop | live tasks | via | attach s | snapshot KB | longest tick gap s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['loop']} | {r['tasks']:,} | {r['via']} | {r['median_s']} "
                     f"[{r['min_s']}-{r['max_s']}] | {r['snapshot_bytes'] / 1000:.1f} | "
                     f"{r['loop_worst_tick_gap_s']} |")
    (args.out / f"{version}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
