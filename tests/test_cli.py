"""python -m taskwatch runs the program exactly as python does, and reports at exit."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

BUGGY = textwrap.dedent("""
    import asyncio, sys
    async def background():
        await asyncio.sleep(10)
    async def main():
        asyncio.create_task(background())
        await asyncio.sleep(0.01)
    print("argv", sys.argv[1:], __name__)
    asyncio.run(main())
    print("done")
""")


def _run(args, cwd, env=None, **kw):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=full_env, **kw)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "app.py"
    path.write_text(BUGGY)
    return path


def test_same_stdout_argv_and_exit_code(script, tmp_path):
    plain = _run([str(script), "a", "--b"], tmp_path)
    watched = _run(["-m", "taskwatch", str(script), "a", "--b"], tmp_path)
    assert plain.stdout == watched.stdout == "argv ['a', '--b'] __main__\ndone\n"
    assert plain.returncode == watched.returncode == 0
    assert "taskwatch: 1 finding(s)" in watched.stderr
    assert "1. [leaked-task] Task" in watched.stderr
    assert "app.py:6 in main" in watched.stderr


def test_json_report_and_fail_on(script, tmp_path):
    report = tmp_path / "r.json"
    proc = _run(["-m", "taskwatch", "--json", str(report), "--fail-on", "leaked-task", str(script)], tmp_path)
    assert proc.returncode == 3
    data = json.loads(report.read_text())
    assert [f["kind"] for f in data["findings"]] == ["leaked-task"]
    ok = _run(["-m", "taskwatch", "--fail-on", "blocked-loop", str(script)], tmp_path)
    assert ok.returncode == 0


def test_sys_exit_and_crash_still_report(tmp_path):
    exiting = tmp_path / "exiting.py"
    exiting.write_text(BUGGY + "\nimport sys\nsys.exit(7)\n")
    proc = _run(["-m", "taskwatch", str(exiting)], tmp_path)
    assert proc.returncode == 7
    assert "[leaked-task]" in proc.stderr

    crashing = tmp_path / "crashing.py"
    crashing.write_text(BUGGY + "\nraise RuntimeError('kaput')\n")
    report = tmp_path / "crash.json"
    plain = _run([str(crashing)], tmp_path)
    proc = _run(["-m", "taskwatch", "--json", str(report), str(crashing)], tmp_path)
    assert proc.returncode == plain.returncode == 1
    assert "RuntimeError: kaput" in proc.stderr
    assert "runpy" not in proc.stderr and "taskwatch/_cli.py" not in proc.stderr
    assert plain.stderr.strip().splitlines()[-1] in proc.stderr
    assert json.loads(report.read_text())["findings"][0]["kind"] == "leaked-task"


def test_module_mode(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(BUGGY)
    proc = _run(["-m", "taskwatch", "-m", "mypkg.app", "x"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("argv ['x'] __main__")
    assert "[leaked-task]" in proc.stderr


def test_options_on_the_command_line(script, tmp_path):
    proc = _run(["-m", "taskwatch", "--disable", "leaked-task", "--no-watchdog", str(script)], tmp_path)
    assert "taskwatch: no findings" in proc.stderr
    bad = _run(["-m", "taskwatch", "--block-threshold", "soon", str(script)], tmp_path)
    assert bad.returncode == 2
    assert "option 'block_threshold' must be a number of seconds greater than 0 and at most 86400; got 'soon'" in bad.stderr
    env_bad = _run(["-m", "taskwatch", str(script)], tmp_path, env={"TASKWATCH_SPANS": "many"})
    assert env_bad.returncode == 2 and "TASKWATCH_SPANS must be one of all, interesting, none" in env_bad.stderr
    helptext = _run(["-m", "taskwatch", "--help"], tmp_path)
    assert "--block-threshold" in helptext.stdout and "--fail-on" in helptext.stdout


def test_child_processes_are_watched(script, tmp_path):
    parent = tmp_path / "parent.py"
    parent.write_text(textwrap.dedent(f"""
        import subprocess, sys
        subprocess.run([sys.executable, {str(script)!r}, "child"], check=True)
        print("parent done")
    """))
    report = tmp_path / "r.json"
    proc = _run(["-m", "taskwatch", "--json", str(report), str(parent)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "argv ['child'] __main__" in proc.stdout
    child_reports = list(tmp_path.glob("r.json.*.json"))
    assert len(child_reports) == 1
    assert json.loads(child_reports[0].read_text())["findings"][0]["kind"] == "leaked-task"
    assert "[leaked-task]" in proc.stderr  # the child's own summary


def test_console_script_entry_point_declared():
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["taskwatch"] == "taskwatch._cli:main"
