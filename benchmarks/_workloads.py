"""The workloads, each an ``async`` function run inside the contender's loop.

Only the section between the two ``perf_counter()`` calls is timed, so setup (installing hooks,
starting monitors, importing SDKs) and teardown (flushing spans) never count as per-task cost.
Tasks are made with ``asyncio.create_task`` looked up on the module at call time, because
opentelemetry-instrumentation-asyncio wraps that module attribute and would miss a local alias.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

#: Coroutine names the benchmark defines; opentelemetry-instrumentation-asyncio traces these.
TRACED_COROUTINES = ("trivial", "node", "leaf", "part_a", "part_b", "ticker")


@dataclass
class Outcome:
    """What one workload run measured, plus what the proof of activity needs."""

    seconds: float  # wall time of the timed section only
    tasks: int  # tasks this workload created with create_task
    spans_expected: int  # traced coroutines that started running (a span each, at least)
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    blocks: list[dict[str, float]] = field(default_factory=list)  # watchdog: the true blocks
    sample_task: asyncio.Task[Any] | None = None  # a task the contender should have touched
    failed_expected: int = 0  # tasks that were made to fail (findings/spans may follow)


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MiB; ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return max_rss_mb()


def max_rss_mb() -> float:
    """Peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------------------------------------
# 1. churn and 4. memory: many trivial tasks, create_task + gather in batches


async def trivial() -> None:
    return None


async def _churn(n: int, batch: int) -> tuple[float, asyncio.Task[Any] | None]:
    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    for _ in range(n // batch):
        tasks = [asyncio.create_task(trivial()) for _ in range(batch)]
        await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    return seconds, (tasks[-1] if tasks else None)


async def churn(size: int, params: dict[str, Any]) -> Outcome:
    """``size`` trivial tasks, create_task + gather in batches of 1,000: the factory's hot path."""
    batch = min(1000, size)
    n = size // batch * batch
    seconds, sample = await _churn(n, batch)
    return Outcome(seconds, n, n, {"us_per_task": seconds / n * 1e6}, sample_task=sample)


async def memory(size: int, params: dict[str, Any]) -> Outcome:
    """Churn at a million tasks, then resident memory: catches per-task records that never die."""
    batch = min(1000, size)
    n = size // batch * batch
    before = rss_mb()
    seconds, sample = await _churn(n, batch)
    after = rss_mb()
    metrics = {
        "rss_after_mb": after,
        "rss_growth_mb": after - before,
        "maxrss_mb": max_rss_mb(),
        "us_per_task": seconds / n * 1e6,
    }
    return Outcome(seconds, n, n, metrics, sample_task=sample)


# ---------------------------------------------------------------------------------------------
# 2. fan-out tree: tasks spawning tasks, a share cancelled and a share failing

CANCEL_EVERY = 8  # child i with i % 8 == 7 is cancelled by its parent while running
FAIL_LEAF_EVERY = 5  # leaf i with i % 5 == 4 raises ValueError
FAIL_NODE_EVERY = 11  # inner node i with i % 11 == 10 raises RuntimeError after its children


class _Tree:
    __slots__ = ("created", "started", "cancels", "failures", "sample")

    def __init__(self) -> None:
        self.created = self.started = self.cancels = self.failures = 0
        self.sample: asyncio.Task[Any] | None = None


async def leaf(index: int, tree: _Tree) -> int:
    tree.started += 1
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if index % FAIL_LEAF_EVERY == FAIL_LEAF_EVERY - 1:
        tree.failures += 1
        raise ValueError(f"leaf {index} failed")
    return index


async def node(index: int, depth: int, fan: int, tree: _Tree) -> int:
    tree.started += 1
    if depth == 1:
        children = [asyncio.create_task(leaf(i, tree)) for i in range(fan)]
    else:
        children = [asyncio.create_task(node(i, depth - 1, fan, tree)) for i in range(fan)]
    tree.created += fan
    tree.sample = children[0]
    try:
        await asyncio.sleep(0)  # let the children start, then cancel a share of them
        for i in range(CANCEL_EVERY - 1, fan, CANCEL_EVERY):
            children[i].cancel()
            tree.cancels += 1
        results = await asyncio.gather(*children, return_exceptions=True)
    except asyncio.CancelledError:  # cancelled by our parent: take the subtree down, no orphans
        for child in children:
            child.cancel()
        await asyncio.gather(*children, return_exceptions=True)
        raise
    if index % FAIL_NODE_EVERY == FAIL_NODE_EVERY - 1:
        tree.failures += 1
        raise RuntimeError(f"node {index} failed after {len(results)} children")
    return len(results)


async def fanout(size: int, params: dict[str, Any]) -> Outcome:
    """Trees of ``depth`` levels and ``fan`` children per node until ``size`` tasks were made."""
    depth, fan = int(params.get("depth", 4)), int(params.get("fan", 10))
    tree = _Tree()
    t0 = time.perf_counter()
    while tree.created < size:
        root = asyncio.create_task(node(0, depth, fan, tree))
        tree.created += 1
        await asyncio.gather(root, return_exceptions=True)
    seconds = time.perf_counter() - t0
    metrics = {"us_per_task": seconds / tree.created * 1e6}
    info = {"depth": depth, "fan": fan, "cancels": tree.cancels, "failures": tree.failures}
    return Outcome(seconds, tree.created, tree.started, metrics, info, sample_task=tree.sample,
                   failed_expected=tree.failures)


# ---------------------------------------------------------------------------------------------
# 3. server: HTTP/1.1 keep-alive on loopback, two tasks per request


async def part_a(path: bytes) -> bytes:
    await asyncio.sleep(0)
    return b"path=" + path


async def part_b() -> bytes:
    return b" ok\n"


class _Server:
    """Counts requests and CPU between the client's two ``/_mark`` requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.marks: list[tuple[float, float, int]] = []
        self.sample: asyncio.Task[Any] | None = None

    def mark(self) -> None:
        ru = resource.getrusage(resource.RUSAGE_SELF)  # all threads: watchdogs, exporters, UIs
        self.marks.append((time.perf_counter(), ru.ru_utime + ru.ru_stime, self.requests))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path.startswith(b"/_mark"):
                    self.mark()
                a = asyncio.create_task(part_a(path))
                b = asyncio.create_task(part_b())
                self.sample = b
                body = b"".join(await asyncio.gather(a, b))
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _pin_process(cpu: int) -> None:
    """Pin every thread of this process (loop, watchdog, exporter, UI threads) to one CPU."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:
            pass


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []


async def server(size: int, params: dict[str, Any]) -> Outcome:
    """Serve a load client (separate process) for ``size`` ms; rps, latency, server CPU/request.

    req/s on a small VM swings with where the scheduler puts server and client (measured on
    2 vCPUs: 19k-50k req/s unpinned, 13k-16k with one CPU each, 19k-29k sharing one), while
    server CPU per request stays within a few percent: read that column first. ``pin``
    ("none", "split", "same") is there to repeat that experiment; the default leaves the
    scheduler alone.
    """
    cpus, pin = _cpus(), str(params.get("pin", "none"))
    if len(cpus) >= 2 and pin != "none":
        _pin_process(cpus[0])
    state = _Server()
    srv = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    cmd = [sys.executable, "-m", "benchmarks._server_client", "--port", str(port),
           "--duration", str(size / 1000), "--warmup", str(params.get("warmup", 0.5)),
           "--connections", str(params.get("connections", 32))]
    if len(cpus) >= 2 and pin != "none":
        cmd += ["--cpu", str(cpus[1] if pin == "split" else cpus[0])]
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    seconds = time.perf_counter() - t0
    srv.close()
    await srv.wait_closed()
    if proc.returncode != 0:
        raise RuntimeError(f"load client exited with {proc.returncode}")
    client = json.loads(out.decode().strip().splitlines()[-1])
    if len(state.marks) < 2:
        raise RuntimeError("load client never sent both /_mark requests")
    (t_a, cpu_a, n_a), (t_b, cpu_b, n_b) = state.marks[0], state.marks[-1]
    served = max(1, n_b - n_a)
    metrics = {
        "rps": client["rps"],
        "p50_ms": client["p50_ms"],
        "p99_ms": client["p99_ms"],
        "cpu_us_per_req": (cpu_b - cpu_a) / served * 1e6,
        "server_cpu_share": (cpu_b - cpu_a) / max(1e-9, t_b - t_a),
    }
    info = {"requests": state.requests, "client": client, "pin": pin if len(cpus) >= 2 else "none"}
    return Outcome(seconds, 2 * state.requests, 2 * state.requests, metrics, info,
                   sample_task=state.sample)


# ---------------------------------------------------------------------------------------------
# 5. watchdog: loop-iteration cost, then blocks of known length


async def ticker(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(0)
    return time.perf_counter() - t0


def _block(kind: str, seconds: float) -> None:
    if kind == "sleep":  # releases the GIL, like a blocking syscall
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds  # holds the GIL between switch intervals, like CPU work
    while time.perf_counter() < end:
        pass


async def watchdog(size: int, params: dict[str, Any]) -> Outcome:
    """``size`` bare loop iterations (what a heartbeat costs), then known blocks if asked."""
    task = asyncio.create_task(ticker(size))
    seconds = await task
    metrics = {"us_per_tick": seconds / size * 1e6}
    blocks: list[dict[str, float]] = []
    for kind, duration in params.get("blocks", []):
        await asyncio.sleep(float(params.get("gap", 0.3)))
        wall, p0 = time.time(), time.perf_counter()
        _block(kind, duration)
        true = time.perf_counter() - p0
        blocks.append({"kind": kind, "start": wall, "end": wall + true, "true_s": true})
    if blocks:
        await asyncio.sleep(float(params.get("gap", 0.3)))  # let a late report arrive
    return Outcome(seconds, 1, 1, metrics, blocks=blocks, sample_task=task)


def score_blocks(blocks: list[dict[str, float]], reports: list[dict[str, float]],
                 log_times: list[float], threshold: float) -> dict[str, float]:
    """Match reported blocks to true ones by time; errors and detection latency in ms.

    A report belongs to the true block whose [start, end + 0.25 s] window holds the report's
    time. Detection time is the earliest of the report's own time and any log record the tool
    wrote in that window; ``median_detect_ms`` is that minus the block start and
    ``median_after_end_ms`` that minus the block end (negative: it spoke while the loop was
    still blocked, as a watchdog can; asyncio debug mode logs only after the step ended).
    """
    errors: list[float] = []
    detect: list[float] = []
    after_end: list[float] = []
    during = 0
    for b in blocks:
        mine = [r for r in reports if b["start"] - 0.01 <= r["time"] <= b["end"] + 0.25]
        if not mine:
            continue
        best = max(mine, key=lambda r: r["duration_s"])
        errors.append((best["duration_s"] - b["true_s"]) * 1000)
        spoke = [t for t in log_times if b["start"] - 0.01 <= t <= b["end"] + 0.25]
        first = min([r["time"] for r in mine] + spoke)
        detect.append((first - b["start"]) * 1000)
        after_end.append((first - b["end"]) * 1000)
        during += first < b["end"]
    out: dict[str, float] = {"blocks": len(blocks), "detected": len(errors),
                             "reports": len(reports), "reported_during_block": during}
    if errors:
        out["mean_abs_err_ms"] = sum(abs(e) for e in errors) / len(errors)
        out["max_abs_err_ms"] = max(abs(e) for e in errors)
        out["mean_err_ms"] = sum(errors) / len(errors)
        out["median_detect_ms"] = sorted(detect)[len(detect) // 2]
        out["median_after_end_ms"] = sorted(after_end)[len(after_end) // 2]
        out["threshold_ms"] = threshold * 1000
    return out


WORKLOADS: dict[str, Callable[[int, dict[str, Any]], Awaitable[Outcome]]] = {
    "churn": churn,
    "fanout": fanout,
    "server": server,
    "memory": memory,
    "watchdog": watchdog,
}
