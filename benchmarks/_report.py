"""Medians, min-max spread, ratios to plain uvloop / plain asyncio, targets, and the two files.

Medians over rounds, because one descheduled round on a 2-core machine should not move the
result; min-max is printed next to every median so a reader can see how much noise there is.
Numbers from a contender that could not prove it was active are kept but never meet a target.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UVLOOP, ASYNCIO = "plain-uvloop", "plain-asyncio"


@dataclass(frozen=True)
class Column:
    metric: str
    label: str
    spread: bool = False  # print [min–max]
    ratios: bool = False  # print × plain uvloop / × plain asyncio
    fmt: str = "{:.3g}"


_GC = [Column("gc_ms", "GC ms", fmt="{:.0f}"), Column("gc_gen2_max_ms", "longest gen-2 GC ms",
                                                     fmt="{:.0f}")]
COLUMNS: dict[str, list[Column]] = {
    "churn": [Column("us_per_task", "µs/task", True, True), *_GC],
    "fanout": [Column("us_per_task", "µs/task", True, True), *_GC],
    "server": [Column("rps", "req/s", True, True, "{:.0f}"), Column("p50_ms", "p50 ms"),
               Column("p99_ms", "p99 ms"), Column("cpu_us_per_req", "server CPU µs/req",
                                                  True, True)],
    "memory": [Column("rss_after_mb", "RSS after, MiB", True, True, "{:.1f}"),
               Column("rss_growth_mb", "growth MiB", fmt="{:.1f}"),
               Column("maxrss_mb", "peak MiB", fmt="{:.1f}"), Column("us_per_task", "µs/task"),
               *_GC],
    "watchdog": [Column("us_per_tick", "µs/loop iteration", True, True),
                 Column("detected", "blocks detected", fmt="{:.0f}"),
                 Column("mean_err_ms", "mean err ms (reported−true)"),
                 Column("max_abs_err_ms", "max abs err ms"),
                 Column("median_detect_ms", "first report ms after block start"),
                 Column("median_after_end_ms", "… after block end"),
                 Column("reported_during_block", "reported during block", fmt="{:.0f}")],
}
TITLES = {
    "churn": "churn: trivial tasks, create_task + gather in batches of 1,000",
    "fanout": "fan-out tree: tasks spawning tasks, a share cancelled and a share failing",
    "server": "server: asyncio.start_server HTTP/1.1 keep-alive on 127.0.0.1, 2 tasks/request",
    "memory": "memory: resident memory after the tasks (batches of 1,000)",
    "watchdog": "watchdog: bare loop iterations, then blocks of known length",
}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(runs: list[dict[str, Any]], workloads: list[str],
              contenders: list[str]) -> dict[str, Any]:
    """Per workload and contender: status, metric stats over rounds, proof, ratios."""
    out: dict[str, Any] = {}
    for w in workloads:
        per: dict[str, Any] = {}
        for c in contenders:
            mine = [r for r in runs if r["workload"] == w and r["contender"] == c]
            if not mine:
                continue
            ok = [r for r in mine if r["status"] == "ok"]
            bad = [r for r in mine if r["status"] != "ok"]
            entry: dict[str, Any] = {"status": "ok" if ok else bad[0]["status"],
                                     "reason": bad[0].get("reason") if bad else None}
            if ok:
                keys = {k for r in ok for k, v in r["metrics"].items()
                        if isinstance(v, (int, float))}
                entry["metrics"] = {k: _stats([r["metrics"][k] for r in ok if k in r["metrics"]])
                                    for k in sorted(keys)}
                entry["by_round"] = {r["round"]: r["metrics"] for r in ok if "round" in r}
                entry["active"] = all(r["proof"]["active"] for r in ok)
                entry["proof"] = ok[-1]["proof"]
                entry["tasks"] = ok[-1]["tasks"]
            per[c] = entry
        for c, entry in per.items():
            entry["ratios"] = {}
            for col in COLUMNS[w]:
                if not col.ratios or "metrics" not in entry or col.metric not in entry["metrics"]:
                    continue
                entry["ratios"][col.metric] = {
                    base: _ratio(entry, per.get(base), col.metric) for base in (UVLOOP, ASYNCIO)}
        out[w] = per
    return out


def _median(entry: dict[str, Any] | None, metric: str) -> float | None:
    if not entry or "metrics" not in entry or metric not in entry["metrics"]:
        return None
    return entry["metrics"][metric]["median"]


def _ratio(entry: dict[str, Any] | None, base: dict[str, Any] | None, metric: str) -> float | None:
    a, b = _median(entry, metric), _median(base, metric)
    return a / b if a is not None and b else None


# ---------------------------------------------------------------------------------------------
# targets from the issue


@dataclass(frozen=True)
class Target:
    text: str
    workload: str
    metric: str
    contender: str
    baseline: str
    limit: float | None  # None: a reference point, not a target
    kind: str  # "ratio<=" | "ratio>=" | "cost<=" (extra cost over plain uvloop, as a fraction)


TARGETS = (
    Target("taskwatch (default) ≤ 1.4× plain uvloop per task on churn",
           "churn", "us_per_task", "taskwatch", UVLOOP, 1.4, "ratio<="),
    Target("taskwatch (default) server throughput within 3% of plain uvloop",
           "server", "rps", "taskwatch", UVLOOP, 0.97, "ratio>="),
    Target("taskwatch (default) server CPU per request within 3% of plain uvloop "
           "(noise-robust form of the line above)",
           "server", "cpu_us_per_req", "taskwatch", UVLOOP, 1.03, "ratio<="),
    Target("watchdog ≤ 1%: loop iteration cost, watchdog on vs off",
           "watchdog", "us_per_tick", "taskwatch", "taskwatch-nowatchdog", 1.01, "ratio<="),
    Target("watchdog ≤ 1%: churn per task, watchdog on vs off",
           "churn", "us_per_task", "taskwatch", "taskwatch-nowatchdog", 1.01, "ratio<="),
    Target("watchdog ≤ 1%: server throughput, watchdog on vs off",
           "server", "rps", "taskwatch", "taskwatch-nowatchdog", 0.99, "ratio>="),
    Target("watchdog ≤ 1%: server CPU per request, watchdog on vs off",
           "server", "cpu_us_per_req", "taskwatch", "taskwatch-nowatchdog", 1.01, "ratio<="),
    Target("CPU sampling every 1 ms: server CPU per request within 3% of sampling off",
           "server", "cpu_us_per_req", "taskwatch-cpu", "taskwatch", 1.03, "ratio<="),
    Target("CPU sampling every 10 ms: server CPU per request within 3% of sampling off",
           "server", "cpu_us_per_req", "taskwatch-cpu10", "taskwatch", 1.03, "ratio<="),
    # On the public API a span per task costs what the SDK's start_span + end cost (otel-sdk-floor,
    # below): about opentelemetry-instrumentation-asyncio's whole extra cost. ≤ 1.1× of it.
    Target("spans=all extra cost ≤ 1.1× opentelemetry-instrumentation-asyncio's, churn",
           "churn", "us_per_task", "taskwatch-spans-all", "otel-asyncio", 1.1, "cost<="),
    Target("spans=all extra cost ≤ 1.1× opentelemetry-instrumentation-asyncio's, fan-out",
           "fanout", "us_per_task", "taskwatch-spans-all", "otel-asyncio", 1.1, "cost<="),
    Target("default spans (interesting) ≤ 1.6× plain uvloop per task on churn",
           "churn", "us_per_task", "taskwatch-spans-interesting", UVLOOP, 1.6, "ratio<="),
    Target("default spans (interesting) server throughput within 5% of plain uvloop",
           "server", "rps", "taskwatch-spans-interesting", UVLOOP, 0.95, "ratio>="),
    Target("default spans (interesting) server CPU per request within 5% of plain uvloop "
           "(noise-robust form of the line above)",
           "server", "cpu_us_per_req", "taskwatch-spans-interesting", UVLOOP, 1.05, "ratio<="),
)

#: Measured points that say what a target can reach; evaluated like targets, with no limit.
REFERENCES = (
    Target("the OpenTelemetry SDK's own per-span work (otel-sdk-floor: no instrumentation, one "
           "span per task through start_span + end), as a share of "
           "opentelemetry-instrumentation-asyncio's extra cost, churn: what no tool exporting a "
           "span per task on the public API can save",
           "churn", "us_per_task", "otel-sdk-floor", "otel-asyncio", None, "cost<="),
    Target("the same with the 11 attributes of a taskwatch task span (otel-sdk-floor-11): the "
           "SDK's share of a spans=all span, as a share of opentelemetry-instrumentation-asyncio's "
           "extra cost, churn",
           "churn", "us_per_task", "otel-sdk-floor-11", "otel-asyncio", None, "cost<="),
)


def _paired(a: dict[str, Any], b: dict[str, Any], metric: str) -> float | None:
    """Median over rounds of the ratio within each round (the two ran minutes apart at most, so
    slow drifts of the machine cancel); None with fewer than 3 rounds holding both."""
    ra, rb = a.get("by_round", {}), b.get("by_round", {})
    ratios = [ra[k][metric] / rb[k][metric] for k in ra
              if k in rb and metric in ra[k] and rb[k].get(metric)]
    return statistics.median(ratios) if len(ratios) >= 3 else None


def _spread(entry: dict[str, Any], metric: str) -> float:
    s = entry["metrics"][metric]
    return (s["max"] - s["min"]) / s["median"] if s["median"] else 0.0


def evaluate(summary: dict[str, Any], quick: bool = False,
             targets: tuple[Target, ...] = TARGETS) -> list[dict[str, Any]]:
    """Each target as met / MISSED / not evaluated (why), each reference point as "reference";
    quick runs are marked as such."""
    out = []
    for t in targets:
        row: dict[str, Any] = {"target": t.text, "workload": t.workload, "metric": t.metric,
                               "contender": t.contender, "baseline": t.baseline,
                               "limit": t.limit, "kind": t.kind, "value": None}
        per = summary.get(t.workload, {})
        a, b = per.get(t.contender), per.get(t.baseline)
        missing = [n for n, e in ((t.contender, a), (t.baseline, b))
                   if not e or "metrics" not in e]
        inactive = [n for n, e in ((t.contender, a), (t.baseline, b))
                    if e and "metrics" in e and not e["active"]]
        if t.workload not in summary:
            row.update(status="not run", detail="workload not in this run")
        elif missing:
            why = "; ".join(f"{n}: {(per.get(n) or {}).get('reason') or 'not run'}"
                            for n in missing)
            row.update(status="not evaluated", detail=why)
        elif inactive:
            row.update(status="not evaluated",
                       detail="did not prove activity: " + ", ".join(inactive))
        else:
            va, vb = _median(a, t.metric), _median(b, t.metric)
            assert va is not None and vb is not None
            if t.kind == "cost<=":
                base = _median(per.get(UVLOOP), t.metric)
                if base is None:
                    row.update(status="not evaluated", detail="plain-uvloop missing")
                    out.append(row)
                    continue
                value = (va - base) / (vb - base) if vb > base else float("inf")
                met = t.limit is None or value <= t.limit
            else:
                value = va / vb
                met = (t.limit is None or
                       (value <= t.limit if t.kind == "ratio<=" else value >= t.limit))
            n = a["metrics"][t.metric]["n"]
            detail = (f"min–max spread {t.contender} {_spread(a, t.metric):.1%}, "
                      f"{t.baseline} {_spread(b, t.metric):.1%}" if n > 1 else
                      "1 round: no spread, not a measurement")
            paired = _paired(a, b, t.metric) if t.kind != "cost<=" else None
            if paired is not None:
                row["paired"] = paired
                detail += f"; median of per-round ratios {paired:.3f}×"
            status = "reference" if t.limit is None else "met" if met else "MISSED"
            if quick:
                status += " (quick run, not a measurement)"
            row.update(value=value, status=status, detail=detail)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


def _cell(entry: dict[str, Any], col: Column) -> list[str]:
    s = entry["metrics"].get(col.metric)
    if s is None:
        cells = ["–"]
    else:
        text = col.fmt.format(s["median"])
        if col.spread and s["n"] > 1:
            text += f" [{col.fmt.format(s['min'])}–{col.fmt.format(s['max'])}]"
        if col.metric == "detected":
            text += f"/{entry['metrics']['blocks']['median']:.0f}"
        cells = [text]
    if col.ratios:
        for base in (UVLOOP, ASYNCIO):
            r = entry["ratios"].get(col.metric, {}).get(base)
            cells.append(f"{r:.2f}×" if r is not None else "–")
    return cells


def _header(cols: list[Column]) -> list[str]:
    head = ["contender"]
    for col in cols:
        head.append(col.label + (" [min–max]" if col.spread else ""))
        if col.ratios:
            head += ["× uvloop", "× asyncio"]
    return head + ["active", "rounds"]


def _evidence(proof: dict[str, Any]) -> str:
    ev = proof.get("evidence", {})
    keep = ("tasks_created", "spans_exported", "spans_dropped", "terminations_queued",
            "spans_ended", "source_traceback_frames", "loop", "findings")
    return ", ".join(f"{k}={ev[k]}" for k in keep if k in ev)


def _value(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return "–"
    return f"{t['value']:.2f} of its cost" if t["kind"] == "cost<=" else f"{t['value']:.3f}×"


def markdown(doc: dict[str, Any]) -> str:
    meta, plan, summary = doc["machine"], doc["plan"], doc["summary"]
    lines = [
        "# taskwatch benchmarks",
        "",
        f"- mode: **{plan['mode']}**, rounds: {plan['rounds']}, loop under instrumented "
        f"contenders: {plan['loop']}, generated {doc['generated_at']}",
        f"- Python {meta['python']} ({meta['implementation']}), uvloop {meta['uvloop']}, "
        f"git {meta['git_commit']}",
        f"- machine: {meta['cpu_model']}, {meta['cpu_count']} logical CPUs "
        f"({meta['cpus_usable']} usable), {meta['platform']}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in meta["packages"].items()),
        f"- taskwatch source digest {meta.get('taskwatch_source')}, C accelerator "
        f"{'built' if meta.get('taskwatch_speedups') else 'NOT built (pure-Python hot path)'}"
        + (" — **changed during the run: taskwatch numbers mix versions**"
           if meta.get("taskwatch_source_changed_during_run") else ""),
        "- sizes: " + ", ".join(f"{w}={n:,}" + (" ms" if w == "server" else "")
                                for w, n in plan["sizes"].items()),
        "",
        "Medians over rounds, [min–max] spread; × uvloop / × asyncio are ratios of medians to "
        "the plain loops (for req/s higher is better, for everything else lower is better). "
        "Targets also give the median of per-round ratios (each round runs every contender back "
        "to back, so it cancels the machine's slow drifts).",
        "",
        "## Targets",
        "",
        "| target | value | limit | status | detail |",
        "|---|---|---|---|---|",
    ]
    for t in doc["targets"]:
        value = _value(t)
        limit = (f"≤ {t['limit']:.2f} of its cost" if t["kind"] == "cost<=" else
                 f"{'≤' if t['kind'] == 'ratio<=' else '≥'} {t['limit']:.2f}×")
        status = f"**{t['status']}**" if t["status"] != "met" else "met"
        lines.append(f"| {t['target']} | {value} | {limit} | {status} | {t['detail']} |")
    if doc.get("references"):
        lines += ["", "Reference points (no limit: they say what a target can reach):", "",
                  "| reference | value | status | detail |", "|---|---|---|---|"]
        for t in doc["references"]:
            lines.append(f"| {t['target']} | {_value(t)} | {t['status']} | {t['detail']} |")
    for w in plan["workloads"]:
        per = summary.get(w, {})
        cols = COLUMNS[w]
        lines += ["", f"## {TITLES[w]}", "", "| " + " | ".join(_header(cols)) + " |",
                  "|" + "---|" * len(_header(cols))]
        notes = []
        for c, entry in per.items():
            if "metrics" not in entry:
                width = len(_header(cols)) - 1
                lines.append(f"| {c} | {entry['status']}: {entry['reason']} |" + " |" * (width - 1))
                continue
            cells = [c]
            for col in cols:
                cells += _cell(entry, col)
            active = "yes" if entry["active"] else "**NO**"
            cells += [active, str(entry["metrics"][cols[0].metric]["n"])]
            lines.append("| " + " | ".join(cells) + " |")
            notes.append(f"{c}: {_evidence(entry['proof'])}")
        if notes:
            lines += ["", "Proof of activity (last round): " + "; ".join(notes) + "."]
    skipped = doc.get("skipped") or {}
    if skipped:
        lines += ["", "## Skipped contenders", ""]
        lines += [f"- {c}: {why}" for c, why in skipped.items()]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, machine: dict[str, Any], plan: dict[str, Any],
          runs: list[dict[str, Any]], skipped: dict[str, str]) -> tuple[Path, Path, dict]:
    summary = summarize(runs, plan["workloads"], plan["contenders"])
    for r in runs:  # what the workers actually imported (taskwatch may run from the source tree)
        for dist, version in (r.get("versions") or {}).items():
            if dist != "uvloop":
                machine["packages"][dist] = version
    doc = {"schema": 1, "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "machine": machine, "plan": plan,
           "targets": evaluate(summary, plan["mode"] == "quick"),
           "references": evaluate(summary, plan["mode"] == "quick", REFERENCES),
           "summary": summary, "skipped": skipped, "runs": runs}
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "latest.json", out_dir / "latest.md"
    js.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    md.write_text(markdown(doc))
    return js, md, doc
