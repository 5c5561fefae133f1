"""Checks for screenshot.py: the thread bookkeeping always, the real render when Chromium exists.

Run with `python -m pytest integrations/timeline_view` (not part of the repository's `tests/`).
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import screenshot

SAMPLE = HERE / "sample_trace.json"


def test_sample_tracks_in_speedscope_order() -> None:
    tracks = screenshot.list_tracks(screenshot.load_events(SAMPLE))
    assert [t.label for t in tracks] == [
        "event loop on MainThread (asyncio) (pid 1), event loop (tid 0)",
        "event loop on MainThread (asyncio) (pid 1), task lane 1 (tid 1)",
        "event loop on MainThread (asyncio) (pid 1), task lane 2 (tid 2)",
    ]


def test_order_is_by_zero_padded_pid_tid_and_labels_without_metadata() -> None:
    events = [
        {"ph": "X", "ts": 0, "dur": 1, "pid": 2, "tid": 10, "name": "a"},
        {"ph": "X", "ts": 0, "dur": 1, "pid": 2, "tid": 9, "name": "a"},
        {"ph": "X", "ts": 0, "dur": 1, "pid": 10, "tid": 1, "name": "a"},
        {"ph": "i", "ts": 0, "pid": 3, "tid": 1, "name": "instant only: no profile"},
        {"ph": "M", "name": "thread_name", "pid": 2, "tid": 9, "args": {"name": "nine"}},
    ]
    labels = [t.label for t in screenshot.list_tracks(events)]
    assert labels == ["nine (pid 2, tid 9)", "pid 2, tid 10", "pid 10, tid 1"]


def test_select_track() -> None:
    tracks = screenshot.list_tracks(screenshot.load_events(SAMPLE))
    assert screenshot.select_track(tracks, None).index == 0
    assert screenshot.select_track(tracks, "LANE 2").index == 2
    assert screenshot.select_track(tracks, "tid 1").index == 1  # falls back to the full label
    assert screenshot.select_track(tracks, "task lane 1").index == 1
    with pytest.raises(screenshot.ScreenshotError, match="no thread matches"):
        screenshot.select_track(tracks, "nope")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(
    not any(shutil.which(n) for n in screenshot.CHROMIUM_CANDIDATES),
    reason="Chromium is not installed",
)
def test_renders_selected_thread(tmp_path: Path) -> None:
    if (
        not (screenshot.speedscope_release_dir(screenshot.DEFAULT_CACHE) / "index.html").is_file()
        and shutil.which("npm") is None
    ):
        pytest.skip("speedscope is not installed and npm is missing")
    out = tmp_path / "lane2.png"
    result = screenshot.take_screenshot(SAMPLE, out, thread="lane 2", width=1000, height=500)
    assert result["thread"].endswith("task lane 2 (tid 2)")
    assert (result["index"], result["count"]) == (2, 3)
    assert _png_size(out) == (1000, 500)
