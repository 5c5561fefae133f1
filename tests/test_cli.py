"""python -m taskwatch runs the program exactly as python does, and reports at exit."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

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
    assert "runpy" not in proc.stderr and "taskwatch/_cli/" not in proc.stderr
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


# -- issue 16: no lost report, no changed program -------------------------------------------------

def test_missing_script_fails_like_python(tmp_path):
    plain = _run(["missing.py"], tmp_path)
    watched = _run(["-m", "taskwatch", "--json", str(tmp_path / "r.json"), "missing.py"], tmp_path)
    assert plain.returncode == watched.returncode == 2
    assert watched.stderr == plain.stderr  # "python: can't open file '.../missing.py': [Errno 2] ..."
    assert "taskwatch" not in watched.stderr and not (tmp_path / "r.json").exists()
    for args in (["-m", "nosuchmodule"], ["-m", "nosuchpkg.sub"], ["-m", "json.nosuch"]):
        plain = _run(args, tmp_path)
        watched = _run(["-m", "taskwatch", *args], tmp_path)
        assert (plain.returncode, plain.stderr) == (watched.returncode, watched.stderr) == (1, plain.stderr)
        assert "taskwatch" not in watched.stderr


@pytest.mark.parametrize("where, fragment", [
    ("nofolder/r.json", "folder"),
    (".", "is a folder"),
])
def test_json_path_is_checked_before_the_program_runs(script, tmp_path, where, fragment):
    proc = _run(["-m", "taskwatch", "--json", where, str(script)], tmp_path)
    assert proc.returncode == 2
    assert "--json" in proc.stderr and fragment in proc.stderr
    assert proc.stdout == ""  # the program did not run
    assert "Traceback" not in proc.stderr


def test_json_report_lands_where_asked_even_if_the_program_changes_directory(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    moving = tmp_path / "moving.py"
    moving.write_text("import os\nos.chdir('elsewhere')\n")
    proc = _run(["-m", "taskwatch", "--json", "r.json", str(moving)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.json").exists() and not (tmp_path / "elsewhere" / "r.json").exists()


def test_unwritable_report_at_exit_keeps_the_exit_status(tmp_path):
    remover = tmp_path / "remover.py"
    remover.write_text("import shutil, sys\nshutil.rmtree(sys.argv[1])\n")
    (tmp_path / "out").mkdir()
    proc = _run(["-m", "taskwatch", "--json", "out/r.json", str(remover), str(tmp_path / "out")],
                tmp_path)
    assert proc.returncode == 0
    assert "taskwatch: could not write the JSON report to" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_each_finding_is_printed_once(script, tmp_path):
    proc = _run(["-m", "taskwatch", str(script)], tmp_path)
    assert proc.stderr.count("[leaked-task]") == 1, proc.stderr
    logged = _run(["-m", "taskwatch", "--log", str(script)], tmp_path)  # asked for: live as well
    assert logged.stderr.count("[leaked-task]") == 2


def test_uncaught_exception_goes_through_the_programs_excepthook(tmp_path):
    crashing = tmp_path / "hooked.py"
    crashing.write_text(BUGGY + textwrap.dedent("""
        def hook(kind, value, tb):
            import traceback
            print("hooked", kind.__name__, [f.name for f in traceback.extract_tb(tb)])
        sys.excepthook = hook
        def fail():
            raise RuntimeError("kaput")
        fail()
    """))
    plain = _run([str(crashing)], tmp_path)
    watched = _run(["-m", "taskwatch", str(crashing)], tmp_path)
    assert plain.returncode == watched.returncode == 1
    assert plain.stdout == watched.stdout
    assert "hooked RuntimeError ['<module>', 'fail']" in watched.stdout
    assert "[leaked-task]" in watched.stderr


def test_keyboard_interrupt_reports_and_dies_by_sigint(tmp_path):
    interrupted = tmp_path / "interrupted.py"
    interrupted.write_text(BUGGY + "\nraise KeyboardInterrupt\n")
    report = tmp_path / "r.json"
    plain = _run([str(interrupted)], tmp_path)
    watched = _run(["-m", "taskwatch", "--json", str(report), "--fail-on", "all", str(interrupted)],
                   tmp_path)
    assert plain.returncode == watched.returncode == -signal.SIGINT
    assert plain.stdout == watched.stdout
    assert watched.stderr.startswith(plain.stderr)  # the same traceback, then the report
    assert "[leaked-task]" in watched.stderr
    assert json.loads(report.read_text())["findings"][0]["kind"] == "leaked-task"


SERVING = textwrap.dedent("""
    import asyncio, sys
    async def background():
        await asyncio.sleep(60)
    async def main():
        asyncio.create_task(background())
        print("serving", flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
""")


# Starts Python with SIGHUP and SIGINT at their default action whatever this process inherited
# (nohup ignores SIGHUP, a shell's background job SIGINT; ignored signals stay ignored across exec).
_DEFAULT_SIGNALS = ("import os, signal, sys; "
                    "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGHUP, signal.SIGINT)]; "
                    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def _stopped_by(sig, args, cwd):
    proc = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGNALS, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        first = proc.stdout.readline()
        assert first == "serving\n"
        time.sleep(0.3)  # waiting in the loop, not between two bytecodes (see _session's limits)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, first + out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_writes_the_report_and_keeps_the_exit_status(tmp_path, sig):
    app = tmp_path / "serving.py"
    app.write_text(SERVING)
    report = tmp_path / "r.json"
    plain = _stopped_by(sig, [str(app)], tmp_path)
    watched = _stopped_by(sig, ["-m", "taskwatch", "--json", str(report), "--fail-on", "all",
                                str(app)], tmp_path)
    assert plain[0] == watched[0] == -sig  # killed by the signal: 143 for SIGTERM in a shell
    assert plain[1] == watched[1] == "serving\n"
    assert "taskwatch: no findings (2 tasks watched)" in watched[2]
    assert json.loads(report.read_text())["stats"]["tasks_created"] == 2


def test_signal_the_program_ignores_or_handles_is_left_alone(tmp_path):
    app = tmp_path / "handled.py"
    app.write_text("import signal, sys\n"
                   "signal.signal(signal.SIGTERM, lambda *a: sys.exit(5))\n"
                   "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n" + SERVING)
    watched = _stopped_by(signal.SIGTERM, ["-m", "taskwatch", str(app)], tmp_path)
    assert watched[0] == 5
    assert "taskwatch:" in watched[2]


def test_otel_without_the_extra_fails_before_the_program_runs(script, tmp_path):
    blocker = tmp_path / "block_otel"
    blocker.mkdir()
    # A sitecustomize that makes `opentelemetry` unimportable, as in an environment without the extra.
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Blocker())
    """))
    env = {"PYTHONPATH": str(blocker)}
    proc = _run(["-m", "taskwatch", "--otel", str(script)], tmp_path, env=env)
    assert proc.returncode == 2
    assert "pip install 'taskwatch[otel]'" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    via_env = _run(["-m", "taskwatch", str(script)], tmp_path, env={**env, "TASKWATCH_OTEL": "1"})
    assert via_env.returncode == 2 and "pip install 'taskwatch[otel]'" in via_env.stderr
