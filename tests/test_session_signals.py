"""The session keeps its report when a server is stopped the way Docker, Kubernetes and systemd
stop it: a real uvicorn app on loopback, SIGTERM (and SIGINT), exit status as without taskwatch."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

pytest.importorskip("uvicorn")

APP = textwrap.dedent("""
    import asyncio

    async def fail():
        raise ValueError("lost in the background")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        asyncio.create_task(fail())  # fire and forget: its error is never retrieved
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
""")


def _serve_then_stop(args, cwd, sig):
    """Start uvicorn on a free loopback port, make one request, stop it with ``sig``."""
    proc = subprocess.Popen([sys.executable, *args, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                             "--port", "0", "--no-access-log"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    head = []
    try:
        for line in proc.stderr:
            head.append(line)
            match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                break
        else:
            pytest.fail("uvicorn did not start:\n" + "".join(head))
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/", timeout=30) as response:
            assert response.read() == b"ok"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    return proc.returncode, out, "".join(head) + err


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_uvicorn_stopped_by_sigterm_keeps_its_report_and_exit_status(app_dir):
    report = app_dir / "r.json"
    plain = _serve_then_stop([], app_dir, signal.SIGTERM)
    watched = _serve_then_stop(["-m", "taskwatch", "--json", str(report), "--fail-on", "all"],
                               app_dir, signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM: killed by it (143 in a shell).
    assert plain[0] == watched[0] == -signal.SIGTERM, watched[2]
    assert plain[1] == watched[1]
    assert "Finished server process" in watched[2]
    data = json.loads(report.read_text())
    assert [f["kind"] for f in data["findings"]] == ["unretrieved-exception"]
    assert "lost in the background" in data["findings"][0]["exception"]["message"]
    assert "taskwatch: 1 finding(s)" in watched[2]
    assert watched[2].count("[unretrieved-exception]") == 1  # printed once, in the summary


def test_uvicorn_stopped_by_sigint_keeps_its_report_and_exit_status(app_dir):
    report = app_dir / "r.json"
    plain = _serve_then_stop([], app_dir, signal.SIGINT)
    watched = _serve_then_stop(["-m", "taskwatch", "--json", str(report)], app_dir, signal.SIGINT)
    assert plain[0] == watched[0], watched[2]
    assert plain[1] == watched[1]
    findings = json.loads(report.read_text())["findings"]
    assert [f["kind"] for f in findings] == ["unretrieved-exception"], [f["message"] for f in findings]
    assert watched[2].count("[unretrieved-exception]") == 1


def test_program_killed_by_a_signal_it_does_not_handle_still_dies_by_it(tmp_path):
    """SIGTERM with no handler anywhere: report, then the default action (not an exit code)."""
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    report = tmp_path / "r.json"
    for args in ([str(script)], ["-m", "taskwatch", "--json", str(report), str(script)]):
        proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline() == "up\n"
            time.sleep(0.3)  # in time.sleep(), not between two bytecodes (see _session's limits)
            proc.terminate()
            proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == -signal.SIGTERM
    assert json.loads(report.read_text())["findings"] == []


def test_spawned_child_stopped_by_sigterm_writes_its_report(tmp_path):
    (tmp_path / "child.py").write_text(textwrap.dedent("""
        import asyncio
        async def fail():
            raise ValueError("child lost it")
        async def main():
            asyncio.create_task(fail())
            await asyncio.sleep(0.05)
            print("up", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """))
    (tmp_path / "parent.py").write_text(textwrap.dedent("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "child.py"], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "up\\n"
        time.sleep(0.3)
        child.terminate()
        print("child status", child.wait())
    """))
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--json", str(report), "parent.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "child status -15\n"
    (child_report,) = tmp_path.glob("r.json.*.json")
    assert [f["kind"] for f in json.loads(child_report.read_text())["findings"]] == [
        "unretrieved-exception"]
    assert proc.stderr.count("[unretrieved-exception]") == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("how", ["signal.raise_signal(signal.SIGTERM)",
                                 "os.kill(os.getpid(), signal.SIGTERM)"])
def test_program_that_ends_itself_by_a_signal_has_its_leaks_reported(tmp_path, how, loop):
    """A program that sends itself a stop signal once its own shutdown is done (uvicorn re-raises
    SIGTERM) ended there: its tasks still pending then are leaks, named at their creation line;
    the task doing the raising is not. It still dies by the signal."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    script = tmp_path / "ends_itself.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os, signal, sys

        async def flush_forever():
            while True:
                await asyncio.sleep(0.05)

        async def main():
            asyncio.create_task(flush_forever())  # never stopped
            await asyncio.sleep(0.1)
            {how}

        if sys.argv[1] == "uvloop":
            import uvloop
            uvloop.run(main())
        else:
            asyncio.run(main())
    """))
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--json", str(report), str(script),
                           loop], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    findings = json.loads(report.read_text())["findings"]
    assert [f["kind"] for f in findings] == ["leaked-task"], proc.stderr
    assert findings[0]["task"]["created_at"]["line"] == 9
    assert "re-raised SIGTERM" in findings[0]["message"]


def test_a_task_that_kills_its_process_mid_work_leaks_nothing(tmp_path):
    """A task (not the main coroutine) that sends the process SIGTERM ends it in the middle of
    the work: the tasks in flight (the main task in its TaskGroup, the group's children) were
    not left behind by a finished program. No finding, and death by the signal as without."""
    script = tmp_path / "health_check.py"
    script.write_text(textwrap.dedent("""
        import asyncio, os, signal

        async def health_check():
            await asyncio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)  # gives up: end the process now

        async def work():
            await asyncio.sleep(10)

        async def main():
            async with asyncio.TaskGroup() as group:
                group.create_task(health_check())
                for _ in range(2):
                    group.create_task(work())

        asyncio.run(main())
    """))
    report = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "taskwatch", "--json", str(report), str(script)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert json.loads(report.read_text())["findings"] == [], proc.stderr
