#!/usr/bin/env python3
"""Run real asyncio libraries' own test suites plainly and under ``pytest --taskwatch`` (issue 21).

For each suite: download the sdist from PyPI (``pip download --no-binary :all: --no-deps``),
install it and its test dependencies into the running interpreter's environment, then run its
tests from the unpacked sdist twice per loop (asyncio, and uvloop where the suite takes its loop
from the policy): once plainly, once with ``--taskwatch --taskwatch-json``. Outcomes come from
``--junitxml`` (of the first round); times are the medians of ``--rounds`` alternating runs.
Prints a Markdown table and writes ``results.json`` to the work folder.

Usage (in a venv with taskwatch installed, e.g. ``pip install -e '.[test]'``)::

    python integrations/suites/run_suites.py [--work /tmp/suites-work] [--only NAME ...]
                                             [--loops asyncio,uvloop] [--timeout 600]
                                             [--rounds 3]

Tests use only the loopback interface and temporary files; the network is used only by pip.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import statistics
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, version, folder of tests inside the sdist, extra pip requirements, loop choice.
# "policy": the suite gets its loops from asyncio's policy (pytest-asyncio's default
# event_loop_policy fixture, unittest's IsolatedAsyncioTestCase), so -p uvloop_policy runs it on
# uvloop. None: the suite cannot run on uvloop (reason given).
SUITES = [
    dict(name="aiosqlite", version="0.22.1", tests="aiosqlite/tests/smoke.py", deps=[], uvloop="policy"),
    dict(name="janus", version="2.0.0", tests="tests", deps=["pytest-benchmark"], uvloop="policy"),
    dict(name="async-timeout", version="5.0.1", tests="tests", deps=[], uvloop="policy"),
    dict(name="aiolimiter", version="1.3.0", tests="tests", deps=["dunamai>=1.24.1"],
         uvloop="policy"),
    dict(name="aiofiles", version="25.1.0", tests="tests", deps=[], uvloop="policy"),
    dict(name="asgiref", version="3.13.0", tests="tests", deps=["packaging", "pytest-benchmark"],
         uvloop="policy"),
    dict(name="asyncstdlib", version="3.14.0", tests="unittests", deps=[],
         uvloop=None, no_uvloop="its tests run on asyncstdlib's own minimal coroutine driver "
                                "(unittests/utility.py: sync), not on an asyncio loop"),
]


def sh(cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def fetch(suite, work: Path) -> Path:
    sdists = work / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    spec = f"{suite['name']}=={suite['version']}"
    stem = suite["name"].replace("-", "_")
    found = [p for p in sdists.glob("*.tar.gz")
             if p.name.lower().replace("-", "_").startswith(f"{stem}_{suite['version']}".lower())]
    if not found:
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
            "-d", str(sdists), spec])
        found = [p for p in sdists.glob("*.tar.gz")
                 if p.name.lower().replace("-", "_").startswith(f"{stem}_{suite['version']}".lower())]
    archive = found[0]
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        src = work / top
        if not src.exists():
            tar.extractall(work, filter="data")
    sh([sys.executable, "-m", "pip", "install", "-q", str(src), *suite["deps"]])
    return src


def outcomes(junit: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    if not junit.exists():
        return result
    for case in ET.parse(junit).getroot().iter("testcase"):
        nodeid = f"{case.get('classname')}::{case.get('name')}"
        tags = {child.tag for child in case}
        if "skipped" in tags:
            outcome = "skipped"
        elif "failure" in tags or "error" in tags:
            # an error at teardown after a passed call is reported as a second testcase entry
            outcome = "failed"
        else:
            outcome = "passed"
        if result.get(nodeid) == "failed":
            continue
        result[nodeid] = outcome
    return result


def run_pytest(suite, src: Path, out: Path, loop: str, watched: bool, timeout: int, tag: str = ""):
    tag = f"{suite['name']}-{loop}-{'taskwatch' if watched else 'plain'}{tag}"
    junit, tw_json, log = out / f"{tag}.xml", out / f"{tag}.taskwatch.json", out / f"{tag}.log"
    for p in (junit, tw_json):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", suite["tests"], "-p", "no:cacheprovider", "-q",
           "-o", "addopts=", "-p", "no:randomly", f"--junitxml={junit}", "-rfE"]
    env = dict(os.environ)
    env.pop("TASKWATCH_LOG", None)
    if loop == "uvloop":
        cmd += ["-p", "uvloop_policy"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    if watched:
        cmd += ["--taskwatch", f"--taskwatch-json={tw_json}"]
    print("+", " ".join(cmd), f"(in {src})", flush=True)
    start = time.perf_counter()
    try:
        with open(log, "w") as handle:
            proc = subprocess.run(cmd, cwd=src, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        status = "timeout"
    elapsed = time.perf_counter() - start
    findings = json.loads(tw_json.read_text()) if tw_json.exists() else None
    return dict(status=status, seconds=round(elapsed, 2), outcomes=outcomes(junit),
                findings=findings, log=str(log))


def summarize(name, loop, plain, watched):
    passed_plain = {k for k, v in plain["outcomes"].items() if v == "passed"}
    passed_watch = {k for k, v in watched["outcomes"].items() if v == "passed"}
    breaks = sorted(passed_plain - {k for k in passed_plain if k in passed_watch})
    kinds: dict[str, int] = {}
    per_test = []
    if watched["findings"]:
        for entry in watched["findings"]["tests"]:
            for f in entry["findings"]:
                kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
                per_test.append((entry["nodeid"], f["kind"], f.get("message", "")))
        for f in watched["findings"].get("outside_tests", []):
            kinds["(outside) " + f["kind"]] = kinds.get("(outside) " + f["kind"], 0) + 1
            per_test.append(("<outside any test>", f["kind"], f.get("message", "")))
    return dict(suite=name, loop=loop, tests=len(plain["outcomes"]),
                passed_plain=len(passed_plain), passed_taskwatch=len(passed_watch),
                breaks=breaks, kinds=kinds, findings=per_test,
                seconds_plain=plain["seconds"], seconds_taskwatch=watched["seconds"],
                ratio=round(watched["seconds"] / plain["seconds"], 2) if plain["seconds"] else None,
                status_plain=plain["status"], status_taskwatch=watched["status"])


def table(rows) -> str:
    lines = ["| suite | loop | tests | pass plain | pass --taskwatch | broken by taskwatch | "
             "findings (kind: count) | time plain s | time taskwatch s | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r["kinds"].items())) or "none"
        lines.append(f"| {r['suite']} | {r['loop']} | {r['tests']} | {r['passed_plain']} | "
                     f"{r['passed_taskwatch']} | {len(r['breaks'])} | {kinds} | "
                     f"{r['seconds_plain']} | {r['seconds_taskwatch']} | {r['ratio']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/suites-work", type=Path)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of each mode, alternating; the times are their medians")
    args = ap.parse_args()
    work: Path = args.work.resolve()
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    rows = json.loads(results_path.read_text()) if results_path.exists() else []
    for suite in SUITES:
        if args.only and suite["name"] not in args.only:
            continue
        src = fetch(suite, work)
        for loop in args.loops.split(","):
            if loop == "uvloop" and not suite["uvloop"]:
                print(f"# {suite['name']}: not on uvloop: {suite['no_uvloop']}", flush=True)
                continue
            plain = run_pytest(suite, src, out, loop, False, args.timeout)
            watched = run_pytest(suite, src, out, loop, True, args.timeout)
            # more rounds, alternating, for the times only (outcomes and findings: round one)
            times_plain, times_watched = [plain["seconds"]], [watched["seconds"]]
            for _ in range(args.rounds - 1):
                times_plain.append(run_pytest(suite, src, out, loop, False, args.timeout,
                                              tag="-again")["seconds"])
                times_watched.append(run_pytest(suite, src, out, loop, True, args.timeout,
                                                tag="-again")["seconds"])
            plain["seconds"] = statistics.median(times_plain)
            watched["seconds"] = statistics.median(times_watched)
            row = summarize(suite["name"], loop, plain, watched)
            row["rounds"] = args.rounds
            row["all_seconds_plain"], row["all_seconds_taskwatch"] = times_plain, times_watched
            row["version"] = suite["version"]
            rows = [r for r in rows if (r["suite"], r["loop"]) != (suite["name"], loop)] + [row]
            results_path.write_text(json.dumps(rows, indent=2, default=str) + "\n")
            print(f"# {suite['name']} on {loop}: {row['tests']} tests, plain {row['passed_plain']}"
                  f" passed, taskwatch {row['passed_taskwatch']} passed, breaks {row['breaks']},"
                  f" findings {row['kinds']}, ratio {row['ratio']}", flush=True)
    order = [s["name"] for s in SUITES]
    rows.sort(key=lambda r: (order.index(r["suite"]) if r["suite"] in order else 99, r["loop"]))
    print(table(rows))
    for r in rows:
        for nodeid, kind, msg in r["findings"]:
            print(f"\n[{r['suite']}/{r['loop']}] {nodeid}: {kind}\n  {msg}")
        for b in r["breaks"]:
            print(f"\n[{r['suite']}/{r['loop']}] BREAK {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
