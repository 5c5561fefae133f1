#!/usr/bin/env python3
"""Render a Chrome trace-event JSON file in speedscope and save a PNG screenshot.

Why this exists: taskwatch writes timelines in the Chrome trace-event format
(the one Perfetto and chrome://tracing read).  Looking at such a timeline
normally needs a person with a browser.  This script makes the same picture
without one, so a developer, a CI job or a session without a display can check
what a trace actually looks like in a real trace viewer:

* the viewer is speedscope (npm package ``speedscope``, pinned below), whose
  release build is a static site; it is installed with npm into a cache folder
  outside the repository the first time it is needed;
* the speedscope site and the trace are served from a throw-away
  ``http.server`` on 127.0.0.1 (speedscope cannot fetch ``file://`` URLs) and
  the page is opened with ``#profileURL=...``;
* Debian's headless Chromium takes the screenshot (``--screenshot`` with a
  virtual-time budget, so it waits until the page has finished its work);
* a small script injected into speedscope's ``index.html`` (in memory only)
  picks the thread to show by pressing speedscope's own "next profile" key
  ``n``, and reports back to the server what was rendered, so a loading page or
  an error page is reported as a failure instead of being saved silently.

Usage::

    python integrations/timeline_view/screenshot.py TRACE.json OUT.png \
        [--thread NAME_SUBSTRING] [--width 1400 --height 800]

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEEDSCOPE_VERSION = "1.25.0"
"""The injected selection script relies on this version's toolbar and keys."""

DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskwatch-timeline-view"
)
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VIEW_MODES = ("time-ordered", "left-heavy", "sandwich")
STATUS_PATH = "/__taskwatch__/status"
# A neutral name: speedscope also picks its importer by file name (*.chrome.json, Trace-*, ...).
TRACE_PATH = "/__taskwatch__/trace.json"


class ScreenshotError(Exception):
    """A failure with a message meant for the person running the script."""


# --------------------------------------------------------------------------- #
# speedscope installation
# --------------------------------------------------------------------------- #


def speedscope_release_dir(cache_dir: Path) -> Path:
    return (
        cache_dir
        / f"speedscope-{SPEEDSCOPE_VERSION}"
        / "node_modules"
        / "speedscope"
        / "dist"
        / "release"
    )


def ensure_speedscope(cache_dir: Path) -> Path:
    """Return speedscope's static release folder, installing it with npm if missing."""
    release = speedscope_release_dir(cache_dir)
    if (release / "index.html").is_file():
        return release
    npm = shutil.which("npm")
    if npm is None:
        raise ScreenshotError(
            "npm was not found; it is needed once to install speedscope.\n"
            "Install Node.js and npm (Debian: `apt-get install -y nodejs npm`), "
            "or install speedscope by hand:\n"
            f"  npm install --prefix {release.parents[3]} speedscope@{SPEEDSCOPE_VERSION}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"speedscope-{SPEEDSCOPE_VERSION}.", dir=cache_dir))
    print(
        f"installing speedscope@{SPEEDSCOPE_VERSION} into {release.parents[3]} ...", file=sys.stderr
    )
    cmd = [
        npm,
        "install",
        "--prefix",
        str(staging),
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        f"speedscope@{SPEEDSCOPE_VERSION}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ScreenshotError(f"`{' '.join(cmd)}` failed:\n{proc.stdout}{proc.stderr}")
    target = release.parents[3]
    try:
        os.replace(staging, target)
    except OSError:  # a concurrent run finished first (or a broken leftover is in the way)
        shutil.rmtree(staging, ignore_errors=True)
    if not (release / "index.html").is_file():
        raise ScreenshotError(f"speedscope was installed but {release / 'index.html'} is missing")
    return release


def find_chromium(explicit: str | None) -> str:
    if explicit:
        if shutil.which(explicit) is None:
            raise ScreenshotError(f"--chromium {explicit!r} is not an executable")
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ScreenshotError(
        "Chromium was not found. Install Debian's package: `apt-get install -y chromium` "
        "(binary /usr/bin/chromium), or pass --chromium PATH."
    )


# --------------------------------------------------------------------------- #
# trace inspection: which threads will speedscope show, in which order
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Track:
    index: int  # speedscope's profile index (0 = shown by default)
    pid: Any
    tid: Any
    process_name: str | None
    thread_name: str | None
    label: str  # the name speedscope shows in its toolbar


def _js_str(value: Any) -> str:
    """Format a pid/tid the way JavaScript's template strings do."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _js_number_str(value: Any) -> str:
    """``"" + Number(value)`` in JavaScript, for the usual int/str pids."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "NaN"
    return _js_str(number)


def load_events(trace_path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(trace_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScreenshotError(f"cannot read {trace_path} as JSON: {exc}") from exc
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list) or not events:
        raise ScreenshotError(
            f'{trace_path}: expected {{"traceEvents": [...]}} (or a bare list) with events'
        )
    return [e for e in events if isinstance(e, dict)]


def list_tracks(events: list[dict[str, Any]]) -> list[Track]:
    """Mirror speedscope 1.25's trace-event importer.

    It makes one profile per (pid, tid) that has "B", "E" or "X" events, sorted
    by the zero-padded key "pid:tid", and names it from the process_name and
    thread_name metadata.  Other phases (i, s, f, C, ...) are ignored by it.
    """
    process_names: dict[Any, str] = {}
    thread_names: dict[tuple[Any, Any], str] = {}
    first_seen: dict[str, tuple[Any, Any]] = {}
    for event in events:
        ph = event.get("ph")
        raw_args = event.get("args")
        args: dict[str, Any] = raw_args if isinstance(raw_args, dict) else {}
        if ph == "M" and args.get("name"):
            if event.get("name") == "process_name":
                process_names[event.get("pid")] = str(args["name"])
            elif event.get("name") == "thread_name":
                thread_names[(event.get("pid"), event.get("tid"))] = str(args["name"])
        elif ph in ("B", "E", "X"):
            if "ts" not in event:
                raise ScreenshotError(f"a {ph!r} event has no 'ts': {event}")
            pid_key = _js_number_str(event.get("pid")).rjust(10, "0")
            tid_key = _js_number_str(event.get("tid")).rjust(10, "0")
            key = f"{pid_key}:{tid_key}"
            first_seen.setdefault(key, (event.get("pid"), event.get("tid")))
    tracks: list[Track] = []
    for index, key in enumerate(sorted(first_seen)):
        pid, tid = first_seen[key]
        proc = process_names.get(pid)
        thread = thread_names.get((pid, tid))
        p, t = _js_str(pid), _js_str(tid)
        if proc is not None and thread is not None:
            label = f"{proc} (pid {p}), {thread} (tid {t})"
        elif proc is not None:
            label = f"{proc} (pid {p}, tid {t})"
        elif thread is not None:
            label = f"{thread} (pid {p}, tid {t})"
        else:
            label = f"pid {p}, tid {t}"
        tracks.append(Track(index, pid, tid, proc, thread, label))
    if not tracks:
        raise ScreenshotError(
            "the trace has no 'X', 'B' or 'E' events: speedscope has nothing to draw"
        )
    return tracks


def select_track(tracks: list[Track], wanted: str | None) -> Track:
    """Pick the track whose thread name (else full label) contains ``wanted``."""
    if wanted is None:
        return tracks[0]
    needle = wanted.casefold()
    exact = [t for t in tracks if (t.thread_name or "").casefold() == needle]
    if exact:
        return exact[0]
    matches = [t for t in tracks if needle in (t.thread_name or "").casefold()]
    if not matches:
        matches = [t for t in tracks if needle in t.label.casefold()]
    if not matches:
        listing = "\n".join(f"  {t.label}" for t in tracks)
        raise ScreenshotError(
            f"no thread matches --thread {wanted!r}; speedscope's threads are:\n{listing}"
        )
    if len(matches) > 1:
        others = ", ".join(repr(t.thread_name or t.label) for t in matches[1:])
        print(
            f"note: --thread {wanted!r} also matches {others}; showing the first", file=sys.stderr
        )
    return matches[0]


# --------------------------------------------------------------------------- #
# the page: speedscope + a small script that selects the thread and reports
# --------------------------------------------------------------------------- #

# Runs before speedscope's own script.  Written against speedscope 1.25.0:
# its toolbar shows "<profile name> (k/N)" when there are several profiles,
# the "n"/"p" keypresses move to the next/previous profile, and
# document.title becomes "<name> - speedscope" once a profile is imported.
INJECTED_JS = r"""
(function () {
  var TARGET = __TARGET__;
  var reported = false;
  function report(obj) {
    if (reported) return;
    reported = true;
    fetch('__STATUS__', {method: 'POST', headers: {'Content-Type': 'application/json'},
                         body: JSON.stringify(obj)});
  }
  // speedscope reports "Unrecognized format" and empty profiles with alert()
  window.alert = function (msg) { report({state: 'error', message: 'speedscope: ' + msg}); };
  function toolbar() {
    var spans = document.querySelectorAll('span');
    for (var i = 0; i < spans.length; i++) {
      var m = /^\((\d+)\/(\d+)\)$/.exec(spans[i].textContent.trim());
      if (m && spans[i].parentElement) {
        var name = spans[i].parentElement.textContent.replace(/\s*\(\d+\/\d+\)\s*$/, '');
        return {index: +m[1] - 1, count: +m[2], name: name};
      }
    }
    return null;
  }
  function press(key) {
    window.dispatchEvent(new KeyboardEvent('keypress', {key: key, bubbles: true}));
  }
  function settleThenReport(state) {
    // give speedscope (virtual) time to draw the selected profile; plain timers
    // only: requestAnimationFrame is not reliably run under --virtual-time-budget
    setTimeout(function () { report(state); }, 500);
  }
  var lastPressedAt = null, ticksSincePress = 0;
  var poll = setInterval(function () {
    var text = document.body ? document.body.innerText : '';
    if (text.indexOf('Something went wrong') !== -1) {
      clearInterval(poll);
      report({state: 'error', message: 'speedscope could not import the trace ' +
                                       '(its page says "Something went wrong")'});
      return;
    }
    if (!/ - speedscope$/.test(document.title)) return;   // not imported yet
    if (!document.querySelector('canvas')) return;
    var tb = toolbar();
    if (tb === null) {                                      // a single profile: no (k/N) selector
      clearInterval(poll);
      settleThenReport({state: 'ready', index: 0, count: 1, name: null});
      return;
    }
    if (tb.index === TARGET || (TARGET >= tb.count && tb.index === tb.count - 1)) {
      clearInterval(poll);
      settleThenReport({state: 'ready', index: tb.index, count: tb.count, name: tb.name});
      return;
    }
    // one keypress per observed index; again if nothing moved for a second
    if (lastPressedAt !== tb.index || ++ticksSincePress > 20) {
      lastPressedAt = tb.index;
      ticksSincePress = 0;
      press(tb.index < TARGET ? 'n' : 'p');
    }
  }, 50);
})();
"""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, release_dir: Path, trace_path: Path, target_index: int, verbose: bool
    ) -> None:
        self.release_dir = release_dir
        self.trace_path = trace_path
        self.verbose = verbose
        self.status: dict[str, Any] | None = None
        self.status_event = threading.Event()
        script = INJECTED_JS.replace("__TARGET__", str(int(target_index))).replace(
            "__STATUS__", STATUS_PATH
        )
        html = (release_dir / "index.html").read_text(encoding="utf-8")
        marker = "</head>"
        if marker not in html:
            raise ScreenshotError(
                f"unexpected speedscope index.html (no {marker}) in {release_dir}"
            )
        self.index_html = html.replace(marker, f"<script>{script}</script>\n{marker}", 1).encode(
            "utf-8"
        )
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def __init__(self, request: Any, client_address: Any, server: _Server) -> None:
        # static files come from speedscope's release folder, never from the cwd
        super().__init__(request, client_address, server, directory=str(server.release_dir))

    def _send_bytes(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send_bytes(self.server.index_html, "text/html; charset=utf-8")
        elif path == TRACE_PATH:
            size = self.server.trace_path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with self.server.trace_path.open("rb") as fh:
                shutil.copyfileobj(fh, self.wfile)
        else:
            super().do_GET()

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != STATUS_PATH:
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            status = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            status = {"state": "error", "message": "unreadable status from the page"}
        if self.server.status is None:
            self.server.status = status
        self.server.status_event.set()
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def take_screenshot(
    trace: Path,
    out: Path,
    *,
    thread: str | None = None,
    width: int = 1400,
    height: int = 800,
    view: str = "time-ordered",
    budget_ms: int = 10000,
    timeout_s: float = 120.0,
    cache_dir: Path = DEFAULT_CACHE,
    chromium: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Render ``trace`` in speedscope and write ``out``; return what was shown."""
    tracks = list_tracks(load_events(trace))
    track = select_track(tracks, thread)
    browser = find_chromium(chromium)
    release = ensure_speedscope(cache_dir)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()

    server = _Server(release, trace.resolve(), track.index, verbose)
    serve_thread = threading.Thread(
        target=server.serve_forever, name="timeline-view-http", daemon=True
    )
    serve_thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        fragment = urllib.parse.urlencode(
            {"profileURL": base + TRACE_PATH, "view": view}, quote_via=urllib.parse.quote
        )
        url = f"{base}/index.html#{fragment}"
        with tempfile.TemporaryDirectory(prefix="timeline-view-chromium.") as profile_dir:
            cmd = [
                browser,
                *(["--enable-logging=stderr", "--v=0"] if verbose else []),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                f"--user-data-dir={profile_dir}",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={out}",
                url,
            ]
            if verbose:
                print(" ".join(cmd), file=sys.stderr)
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise ScreenshotError(f"Chromium did not finish within {timeout_s:.0f} s") from exc
        log = (proc.stdout + proc.stderr).strip()
        if verbose and log:
            print(log, file=sys.stderr)
        server.status_event.wait(timeout=1.0)
        status = server.status
    finally:
        server.shutdown()
        server.server_close()

    tail = "\n".join(log.splitlines()[-15:])
    if proc.returncode != 0 or not out.is_file():
        raise ScreenshotError(
            f"Chromium exited with {proc.returncode} and wrote no screenshot:\n{tail}"
        )
    if status is None:
        raise ScreenshotError(
            "speedscope had not finished rendering when the screenshot was taken "
            f"({out} may show a loading page); try a larger --budget-ms than {budget_ms}.\n"
            f"Chromium said:\n{tail}"
        )
    if status.get("state") != "ready":
        raise ScreenshotError(
            f"{status.get('message', status)} (screenshot of the error page left at {out})"
        )
    shown = status.get("name") or track.label
    if status.get("index") != track.index or shown != track.label:
        raise ScreenshotError(
            f"speedscope shows {shown!r} ({status.get('index', 0) + 1}/{status.get('count')}) "
            f"instead of {track.label!r} ({track.index + 1}/{len(tracks)})"
        )
    return {
        "png": str(out),
        "thread": shown,
        "index": track.index,
        "count": len(tracks),
        "speedscope": SPEEDSCOPE_VERSION,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Open a Chrome trace-event JSON file in speedscope "
        "(headless Chromium) and save a PNG."
    )
    parser.add_argument("trace", type=Path, help='Chrome trace-event JSON ({"traceEvents": [...]})')
    parser.add_argument("out", type=Path, nargs="?", help="PNG file to write")
    parser.add_argument(
        "--thread",
        metavar="NAME_SUBSTRING",
        help="show the thread whose thread_name (else 'process, thread' label) contains this, "
        "case-insensitive; default: speedscope's first thread (lowest pid:tid)",
    )
    parser.add_argument(
        "--list-threads",
        action="store_true",
        help="print the threads speedscope will offer and exit",
    )
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument(
        "--view", choices=VIEW_MODES, default="time-ordered", help="speedscope view mode"
    )
    parser.add_argument(
        "--budget-ms",
        type=int,
        default=10000,
        help="Chromium virtual-time budget to let speedscope load and draw (default 10000)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="wall-clock limit for Chromium, seconds"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where speedscope is installed with npm (default {DEFAULT_CACHE})",
    )
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    try:
        if args.list_threads:
            tracks = list_tracks(load_events(args.trace))
            for t in tracks:
                print(f"{t.index + 1}/{len(tracks)}  {t.label}")
            return 0
        if args.out is None:
            parser.error("OUT.png is required (unless --list-threads)")
        started = time.monotonic()
        result = take_screenshot(
            args.trace,
            args.out,
            thread=args.thread,
            width=args.width,
            height=args.height,
            view=args.view,
            budget_ms=args.budget_ms,
            timeout_s=args.timeout,
            cache_dir=args.cache_dir.expanduser(),
            chromium=args.chromium,
            verbose=args.verbose,
        )
    except ScreenshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {result['png']}: speedscope {result['speedscope']}, "
        f"thread {result['index'] + 1}/{result['count']} "
        f"{result['thread']!r} ({time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
