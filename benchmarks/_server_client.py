"""Load client for the server workload.

It runs in its own process so it never shares a loop, a GIL or hooks with the server under test,
and it is the same for every contender (uvloop when importable). Closed loop: ``--connections``
HTTP/1.1 keep-alive connections each send the next request as soon as the previous response
arrived. Bounded by time and by count, and it only ever connects to 127.0.0.1.
Prints one JSON line: requests, rps, p50_ms, p99_ms over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

HOST = "127.0.0.1"  # loopback only, by design
REQUEST = b"GET /item HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class _Load:
    def __init__(self, max_requests: int) -> None:
        self.max_requests = max_requests
        self.sent = 0
        self.measuring = False
        self.latencies: list[float] = []
        self.stop = asyncio.Event()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)


async def _connection(port: int, load: _Load) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while not load.stop.is_set():
            t0 = time.perf_counter()
            await _request(reader, writer, REQUEST)
            if load.measuring:
                load.latencies.append(time.perf_counter() - t0)
            load.sent += 1
            if load.sent >= load.max_requests:
                load.stop.set()
    finally:
        writer.close()


async def _mark(port: int, what: str) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    await _request(reader, writer, b"GET /_mark/%s HTTP/1.1\r\nHost: x\r\n\r\n" % what.encode())
    writer.close()


def _pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[int(q * (len(sorted_values) - 1))] * 1000 if sorted_values else 0.0


async def run(port: int, duration: float, warmup: float, connections: int,
              max_requests: int) -> dict[str, float]:
    load = _Load(max_requests)
    workers = [asyncio.create_task(_connection(port, load)) for _ in range(connections)]
    await asyncio.sleep(warmup)
    await _mark(port, "start")
    load.measuring = True
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(load.stop.wait(), duration)
    except asyncio.TimeoutError:
        pass
    load.measuring = False
    elapsed = time.perf_counter() - t0
    await _mark(port, "stop")
    load.stop.set()
    await asyncio.gather(*workers, return_exceptions=True)
    lat = sorted(load.latencies)
    return {"requests": len(lat), "seconds": elapsed, "rps": len(lat) / elapsed,
            "p50_ms": _pct(lat, 0.50), "p99_ms": _pct(lat, 0.99), "connections": connections}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--max-requests", type=int, default=10_000_000)
    ap.add_argument("--cpu", type=int, help="pin the client to this CPU (the server has another)")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args.port, args.duration, args.warmup, args.connections,
                                args.max_requests))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
