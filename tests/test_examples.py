"""Every example under the session yields exactly the findings its `# expect:` markers name, on the
marked lines; every corrected version yields none."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MARKER = re.compile(r"#\s*expect:\s*([a-z-]+(?:\s*,\s*[a-z-]+)*)")
BUGGY = sorted(p for p in EXAMPLES.glob("*.py") if not p.stem.endswith("_fixed"))
FIXED = sorted(EXAMPLES.glob("*_fixed.py"))


def _expected(path):
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = MARKER.search(line)
        if match:
            for kind in match.group(1).split(","):
                out[kind.strip()] = number
    return out


def _session(path, tmp_path, *extra):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "taskwatch", "--json", str(report), *extra, str(path)],
        capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text()), proc


def _line_named(finding):
    kind = finding["kind"]
    if kind in ("swallowed-cancel", "slow-cancel"):
        return finding["cancel"]["requested_at"]["line"]
    if kind == "never-awaited":
        return finding["coroutine"]["created_at"]["line"]
    if kind == "blocked-loop":
        return finding["blocked_at"]["line"]
    return finding["task"]["created_at"]["line"]


@pytest.mark.parametrize("path", BUGGY, ids=lambda p: p.stem)
def test_example_findings(path, tmp_path):
    expected = _expected(path)
    assert expected, f"{path.name} has no expect markers"
    report, proc = _session(path, tmp_path)
    found = {}
    for finding in report["findings"]:
        found.setdefault(finding["kind"], set()).add(_line_named(finding))
    assert set(found) == set(expected), proc.stderr
    for kind, line in expected.items():
        assert found[kind] == {line}, (kind, found[kind], line)
    # the summary on stderr names the example's own file and line
    assert f"{path.name}:{min(expected.values())}" in proc.stderr


@pytest.mark.parametrize("path", FIXED, ids=lambda p: p.stem)
def test_fixed_example_is_clean(path, tmp_path):
    report, proc = _session(path, tmp_path)
    assert report["findings"] == [], proc.stderr
    assert "taskwatch: no findings" in proc.stderr


def test_examples_come_in_pairs():
    assert {p.stem for p in BUGGY} == {p.stem[: -len("_fixed")] for p in FIXED}
    assert len(BUGGY) >= 10


@pytest.mark.skipif(sys.version_info < (3, 12), reason="uvloop+examples covered on 3.12+ only")
def test_examples_under_uvloop_policy(tmp_path):
    """The same session, with the examples running on uvloop (through a sitecustomize shim)."""
    pytest.importorskip("uvloop")
    runner = tmp_path / "run_uv.py"
    runner.write_text(
        "import asyncio, runpy, sys, uvloop\n"
        "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    for name in ("fire_and_forget", "swallowed_cancel", "blocking_sleep", "leaked_task"):
        path = EXAMPLES / f"{name}.py"
        report_path = tmp_path / f"{name}.json"
        proc = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "taskwatch", "--json",
             str(report_path), str(runner), str(path)],
            capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(report_path.read_text())
        assert report["loop"] == "uvloop"
        assert {f["kind"] for f in report["findings"]} == set(_expected(path)), proc.stderr
