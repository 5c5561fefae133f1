"""Only the process that started the session reports as the session; children (forked or
spawned) report as children; Pythons that cannot load taskwatch run exactly as without it."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

FORKER = textwrap.dedent("""
    import asyncio, os, sys, time
    async def background():
        await asyncio.sleep(10)
    async def main():
        asyncio.create_task(background())
        await asyncio.sleep(0.01)
    asyncio.run(main())  # one leaked-task, before the fork
    pid = os.fork()
    if pid == 0:
        time.sleep(float(sys.argv[1]))
        print("child done", flush=True)
        if sys.argv[3] == "child-leaks":
            asyncio.run(main())
    else:
        if sys.argv[2] == "wait":
            _, status = os.waitpid(pid, 0)
            print("child status", os.waitstatus_to_exitcode(status), flush=True)
        print("parent done", flush=True)
""")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _run(args, cwd, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, **kw)


@pytest.fixture
def forker(tmp_path):
    path = tmp_path / "forker.py"
    path.write_text(FORKER)
    return path


def test_forked_child_does_not_report_as_the_session(forker, tmp_path):
    report = tmp_path / "r.json"
    proc = _run(["-m", "taskwatch", "--json", str(report), "--fail-on", "leaked-task",
                 str(forker), "0", "wait", "quiet"], tmp_path)
    assert proc.returncode == 3  # the session's --fail-on
    assert "child status 0" in proc.stdout  # ... not the child's
    assert proc.stderr.count("taskwatch: 1 finding(s)") == 1, proc.stderr  # one summary
    assert [f["kind"] for f in json.loads(report.read_text())["findings"]] == ["leaked-task"]
    children = list(tmp_path.glob("r.json.*.json"))
    assert len(children) == 1
    child = json.loads(children[0].read_text())
    assert child["findings"] == [] and child["stats"]["findings_by_kind"] == {}  # nothing inherited


def test_forked_child_reports_its_own_findings(forker, tmp_path):
    report = tmp_path / "r.json"
    proc = _run(["-m", "taskwatch", "--json", str(report), str(forker), "0", "wait", "child-leaks"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr
    (child_report,) = tmp_path.glob("r.json.*.json")
    child = json.loads(child_report.read_text())
    assert [f["kind"] for f in child["findings"]] == ["leaked-task"]
    assert child["stats"]["findings_by_kind"] == {"leaked-task": 1}
    assert proc.stderr.count("taskwatch: 1 finding(s)") == 2  # the parent's and the child's own


OUTLIVING = textwrap.dedent("""
    import asyncio, os, time
    async def background():
        await asyncio.sleep(10)
    async def main():
        asyncio.create_task(background())
        await asyncio.sleep(0.01)
    if os.fork() == 0:
        time.sleep(1)  # ends after its parent
        print("child done", flush=True)
    else:
        asyncio.run(main())  # the parent's finding, made after the fork
        print("parent done", flush=True)
""")


def test_forked_child_outliving_the_parent_leaves_the_report_alone(tmp_path):
    script = tmp_path / "outliving.py"
    script.write_text(OUTLIVING)
    report = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "taskwatch", "--json", str(report), str(script)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _err = proc.communicate(timeout=60)  # returns when the child closes the pipes too
    assert "parent done" in out and "child done" in out
    assert proc.returncode == 0
    assert [f["kind"] for f in json.loads(report.read_text())["findings"]] == ["leaked-task"]
    (child_report,) = tmp_path.glob("r.json.*.json")
    assert json.loads(child_report.read_text())["findings"] == []


def _pythons_without_taskwatch(cwd):
    found = []
    for candidate in ("/usr/bin/python3", shutil.which("python2"), shutil.which("python2.7"),
                      os.path.expanduser("~/.pyenv/versions/2.7.18/bin/python"),
                      os.path.expanduser("~/.pyenv/versions/3.9.18/bin/python")):
        if not candidate or not os.path.exists(candidate) or candidate in found:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys\ntry:\n import taskwatch\nexcept Exception:\n sys.exit(7)"],
                capture_output=True, timeout=60, env={"PATH": os.environ.get("PATH", "")}, cwd=cwd)
        except OSError:
            continue
        if probe.returncode == 7:  # a working interpreter that cannot load taskwatch
            found.append(candidate)
    return found


def test_children_that_cannot_load_taskwatch_run_exactly_as_without_it(tmp_path):
    pythons = _pythons_without_taskwatch(tmp_path)
    if not pythons:
        pytest.skip("no Python without taskwatch on this machine")
    parent = tmp_path / "parent.py"
    parent.write_text(textwrap.dedent("""
        import subprocess, sys
        for python in sys.argv[1:]:
            child = subprocess.run([python, "-c", "import sys; sys.stdout.write('hi'); "
                                    "sys.stderr.write('err'); sys.exit(4)"],
                                   capture_output=True, text=True)
            print(python, child.returncode, repr(child.stdout), repr(child.stderr))
    """))
    proc = _run(["-m", "taskwatch", str(parent), *pythons], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for python in pythons:
        assert f"{python} 4 'hi' 'err'" in proc.stdout, proc.stdout


def test_bootstrap_stays_valid_for_old_interpreters():
    """Any Python the program starts imports the bootstrap, even Python 2: no newer syntax."""
    import ast

    from taskwatch._cli import _session

    source = open(os.path.join(_session.BOOTSTRAP_DIR, "sitecustomize.py")).read()
    for node in ast.walk(ast.parse(source)):
        assert not isinstance(node, (ast.JoinedStr, ast.AnnAssign, ast.NamedExpr)), ast.dump(node)
