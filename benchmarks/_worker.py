"""One measurement in one fresh process: ``python -m benchmarks._worker WORKLOAD CONTENDER SIZE``.

A fresh process per run keeps hooks, imported SDKs, heap growth and warmed caches of one
contender away from the next. The worker prints exactly one line starting with ``MARK``
holding JSON: status ok / skipped / failed, the metrics, and the contender's proof of activity.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import sys
import time
import traceback
from typing import Any

from ._contenders import Skip, setup
from ._workloads import WORKLOADS, score_blocks

MARK = "@@taskwatch-bench@@ "


class _GcClock:
    """Times the cyclic GC: per-task records that are GC-tracked show up here, not in a profile."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.total = self.max_gen2 = self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        took = time.perf_counter() - self._t0
        self.total += took
        gen = info["generation"]
        self.collections[gen] += 1
        if gen == 2:
            self.max_gen2 = max(self.max_gen2, took)

    def metrics(self) -> dict[str, float]:
        return {"gc_ms": self.total * 1000, "gc_collections": sum(self.collections),
                "gc_gen2": self.collections[2], "gc_gen2_max_ms": self.max_gen2 * 1000}


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def _reason(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def run(workload: str, contender: str, size: int, loop_kind: str,
        params: dict[str, Any]) -> dict[str, Any]:
    base = {"workload": workload, "contender": contender, "size": size, "loop": loop_kind,
            "python": platform.python_version()}
    try:
        s = setup(contender, loop_kind, params)
    except Skip as e:
        return {**base, "status": "skipped", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - a broken contender is a result, not a crash
        traceback.print_exc()
        return {**base, "status": "failed", "reason": f"setup: {_reason(e)}"}
    if s.block_reports is None:
        params = {k: v for k, v in params.items() if k != "blocks"}
    runner = asyncio.Runner(loop_factory=s.loop_factory)
    clock = _GcClock()
    gc.callbacks.append(clock)
    try:
        out = runner.run(WORKLOADS[workload](size, params))
        gc.callbacks.remove(clock)
        out.metrics.update(clock.metrics())
        proof = s.proof(out)
        if out.blocks and s.block_reports is not None:
            reports, log_times = s.block_reports()
            threshold = float(params.get("block_threshold", 0.1))
            out.metrics.update(score_blocks(out.blocks, reports, log_times, threshold))
            out.info["log_records"] = len(log_times)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return {**base, "status": "failed", "reason": _reason(e), "versions": s.versions}
    finally:
        try:
            runner.close()
            s.teardown()
        except Exception:  # noqa: BLE001 - teardown noise must not hide the measurement
            traceback.print_exc()
    return {**base, "status": "ok", "seconds": out.seconds, "tasks": out.tasks,
            "metrics": out.metrics, "info": out.info, "proof": proof, "versions": s.versions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("contender")
    ap.add_argument("size", type=int)
    ap.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    ap.add_argument("--params", default="{}", help="JSON object of workload parameters")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = run(args.workload, args.contender, args.size, args.loop, json.loads(args.params))
    result["process_seconds"] = time.perf_counter() - t0
    _emit(result)


if __name__ == "__main__":
    main()
