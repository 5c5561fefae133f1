"""``python -m benchmarks [--quick] [--only churn,server] [--contenders ...] [--rounds N]``.

Writes ``latest.json`` and ``latest.md`` to ``--out`` (default benchmarks/results; with
``--quick`` benchmarks/results/quick, which git ignores). Exits 1 only
when the harness itself is broken (a worker crashed, or a plain-loop baseline failed); missing
packages are skips and missed targets are results, so neither fails the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._contenders import CONTENDERS
from ._harness import WORKLOAD_ORDER, machine, make_plan, run_plan, source_digest
from ._report import write


def _names(text: str | None, known: tuple[str, ...], what: str) -> list[str]:
    if not text:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown {what} {', '.join(bad)}; known: {', '.join(known)}")
    return [n for n in known if n in names]  # canonical order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, 1 round: keeps the harness working in CI")
    ap.add_argument("--only", metavar="WORKLOAD[,..]", help=", ".join(WORKLOAD_ORDER))
    ap.add_argument("--contenders", metavar="NAME[,..]", help=", ".join(CONTENDERS))
    ap.add_argument("--rounds", type=int, help="rounds per contender (default 5, quick 1)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply workload sizes (e.g. 0.2 for a moderate run)")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default=None,
                    help="loop under the instrumented contenders (default uvloop if installed)")
    ap.add_argument("--jobs", type=int, help="workers at once (default 1; quick 2) - "
                    "more than 1 distorts timings")
    ap.add_argument("--out", type=Path, help="output directory (default benchmarks/results, "
                    "quick: benchmarks/results/quick so CI never overwrites a full run)")
    args = ap.parse_args(argv)
    results = Path(__file__).parent / "results"
    out_dir = args.out or (results / "quick" if args.quick else results)

    loop = args.loop
    if loop is None:
        try:
            import importlib.util

            loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        except ValueError:
            loop = "asyncio"
    plan = make_plan(args.quick, _names(args.only, WORKLOAD_ORDER, "workload"),
                     _names(args.contenders, CONTENDERS, "contender"), args.rounds,
                     args.scale, loop)
    if args.jobs:
        plan.jobs = args.jobs
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    say(f"benchmarks: {len(plan.workloads)} workloads x {len(plan.contenders)} contenders x "
        f"{plan.rounds} rounds, loop={plan.loop}, sizes={plan.sizes}")
    t0 = time.perf_counter()
    before = source_digest()
    runs = run_plan(plan, say)
    facts = machine()
    if facts["taskwatch_source"] != before:
        facts["taskwatch_source_changed_during_run"] = True
        say("WARNING: taskwatch's source changed during the run; its numbers mix versions")
    plan_doc = {"mode": "quick" if plan.quick else "full", "rounds": plan.rounds,
                "workloads": plan.workloads, "contenders": plan.contenders, "loop": plan.loop,
                "sizes": plan.sizes, "params": plan.params, "scale": args.scale,
                "wall_seconds": round(time.perf_counter() - t0, 1)}
    js, md, doc = write(out_dir, facts, plan_doc, runs, plan.skipped)
    say(f"wrote {js} and {md} in {plan_doc['wall_seconds']} s")
    for t in doc["targets"]:
        say(f"  target: {t['status']:<14} {t['target']}")
    for t in doc["references"]:
        value = "–" if t["value"] is None else f"{t['value']:.2f}"
        say(f"  reference: {value:<10} {t['target']}")
    broken = [r for r in runs if r["status"] == "crashed" or
              (r["contender"].startswith("plain-") and r["status"] == "failed")]
    for r in broken:
        say(f"HARNESS PROBLEM: {r['workload']} {r['contender']}: {r.get('reason')}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
