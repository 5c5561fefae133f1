"""``python -m benchmarks.instructions``: instructions per request on the real servers, by callgrind.

On this VM wall-clock CPU per request moves by several percent between runs of the same code, more
than the effects worth finding on a request path. Instructions do not: valgrind's callgrind counts
them, the same for the same binary and inputs whatever else the machine does. So each server of
``_servers_app`` (the same apps and modes as ``python -m benchmarks.servers``) runs under callgrind
with counting off; a client in this process sends warm-up requests, turns counting on
(``callgrind_control -i on``), sends the measured requests over keep-alive connections, turns it
off and dumps. Reported: instructions per request, the ratio to ``plain``, and, with ``--top N``,
the N functions whose own (exclusive) count grew most against ``plain`` (``callgrind_annotate``).

    python -m benchmarks.instructions --apps aiohttp --modes plain,plain2,nowatchdog --top 15

Needs valgrind (Debian's package). Timers still fire (aiohttp's date header, taskwatch's watchdog),
and under callgrind the server runs some 50 times slower, so a mode whose cost is per second rather
than per request (the watchdog) reads higher here than it costs. ``plain2`` is the control: it
differs from ``plain`` by what timers and hashing add (0.3% in the runs in docs/cost.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .servers import APPS, HOST, REPO, _env, split_mode

_REQUEST = b"GET /item/7 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _requests(port: int, count: int, connections: int = 4) -> None:
    """Send ``count`` requests, one in flight per connection, and read every full response."""
    socks = [socket.create_connection((HOST, port), timeout=120) for _ in range(connections)]
    bufs = [b""] * connections
    try:
        done = 0
        while done < count:
            for s in socks:
                s.sendall(_REQUEST)
            for i, s in enumerate(socks):
                bufs[i] = _read_response(s, bufs[i])
            done += connections
    finally:
        for s in socks:
            s.close()


def _read_response(s: socket.socket, buf: bytes) -> bytes:
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            length = 0
            for line in buf[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(buf) >= end:
                return buf[end:]
        data = s.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        buf += data


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True,
                   timeout=300)


def count(app: str, mode: str, requests: int, warmup: int, folder: Path) -> Path:
    """Run one server under callgrind; return the dump of the measured requests."""
    label = mode
    mode, env = split_mode(mode, _env())
    env["PYTHONHASHSEED"] = "0"
    out = folder / f"{app}-{re.sub(r'[^A-Za-z0-9.-]', '_', label)}.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
           sys.executable, "-m", "benchmarks._servers_app", app, mode]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY"):
            raise RuntimeError(f"{app}/{mode} did not start under valgrind: {line!r}")
        port = int(line.split()[1])
        _requests(port, warmup)
        _control(proc.pid, "-i", "on")
        _requests(port, requests)
        _control(proc.pid, "-i", "off")
        _control(proc.pid, "-d")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dump = out.with_name(out.name + ".1")
    if not dump.exists():
        raise RuntimeError(f"callgrind wrote no dump for {app}/{mode}")
    return dump


def _total(dump: Path) -> int:
    with dump.open() as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def _exclusive(dump: Path) -> dict[str, int]:
    """Instructions spent in each function itself, keyed by file name and function."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no",
                           "--threshold=99.99", str(dump)],
                          capture_output=True, text=True, check=True).stdout
    found: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            where, _, function = m.group(2).split(" [")[0].rpartition(":")
            key = f"{os.path.basename(where)}:{function}"
            found[key] = found.get(key, 0) + int(m.group(1).replace(",", ""))
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apps", default=",".join(APPS))
    ap.add_argument("--modes", default="plain,plain2,nowatchdog,taskwatch")
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--top", type=int, default=0, help="functions that grew most against plain")
    args = ap.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} is not installed (Debian's valgrind package has all three)")
    apps = [a for a in args.apps.split(",") if a]
    modes = [m for m in args.modes.split(",") if m]
    if not modes or modes[0] != "plain":
        modes = ["plain", *[m for m in modes if m != "plain"]]
    print(f"Python {sys.version.split()[0]}; {args.requests} requests after {args.warmup} "
          f"warm-up; callgrind (valgrind) counts instructions", flush=True)
    with tempfile.TemporaryDirectory(prefix="tw-instr-") as tmp:
        for app in apps:
            dumps = {}
            for mode in modes:
                t0 = time.monotonic()
                dumps[mode] = count(app, mode, args.requests, args.warmup, Path(tmp))
                per = _total(dumps[mode]) / args.requests
                base = _total(dumps["plain"]) / args.requests
                print(f"{app:9} {mode:24} {per / 1000:8.1f}k instructions/request  "
                      f"{per / base:6.3f}x  ({time.monotonic() - t0:.0f} s)", flush=True)
            if args.top:
                base = _exclusive(dumps["plain"])
                for mode in modes[1:]:
                    grew = _exclusive(dumps[mode])
                    rows = sorted(((n - base.get(k, 0)) / args.requests, k)
                                  for k, n in grew.items())[::-1][:args.top]
                    print(f"  {app} {mode}: instructions/request grown against plain, by function")
                    for per, name in rows:
                        print(f"    {per:9.0f}  {name[-100:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
