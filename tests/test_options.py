import signal
import subprocess
import sys
import textwrap

import pytest

from taskwatch._core import _options
from taskwatch._core._options import KINDS, resolve


def test_defaults():
    opts = resolve({}, {})
    assert opts.block_threshold == 0.1 and opts.stack_depth == 8 and opts.history == 1000
    assert opts.active_kinds == frozenset(KINDS)


def test_environment_and_keywords():
    env = {"TASKWATCH_BLOCK_THRESHOLD": "0.25", "TASKWATCH_WATCHDOG": "off",
           "TASKWATCH_DISABLE": "leaked-task, orphaned-task", "TASKWATCH_STACK_DEPTH": "3"}
    opts = resolve({"stack_depth": 5}, env)
    assert opts.block_threshold == 0.25
    assert opts.watchdog is False
    assert opts.stack_depth == 5  # keyword beats the environment
    assert "leaked-task" not in opts.active_kinds and "blocked-loop" in opts.active_kinds


@pytest.mark.parametrize(
    "kwargs, env, fragment",
    [
        ({"block_threshold": "fast"}, {}, "option 'block_threshold' must be a number of seconds greater than 0 and at most 86400; got 'fast'"),
        ({"block_threshold": -1}, {}, "greater than 0"),
        ({}, {"TASKWATCH_WATCHDOG": "maybe"}, "TASKWATCH_WATCHDOG must be true or false"),
        ({}, {"TASKWATCH_KINDS": "leaked,lost"}, "finding kinds from: all, none, unretrieved-exception"),
        ({"spans": "some"}, {}, "option 'spans' must be one of all, interesting, none"),
        ({"stack_depth": 0}, {}, "a whole number from 1 to 64"),
        ({"dump_signal": "SIGNOPE"}, {}, "must be SIGUSR1 or SIGUSR2"),
        ({"colour": True}, {}, "unknown option 'colour'; accepted options: enabled, kinds"),
        ({"hang_threshold": 0.05}, {}, "'hang_threshold' must be greater than block_threshold"),
    ],
)
def test_invalid_input_names_option_and_accepted_values(kwargs, env, fragment):
    with pytest.raises(ValueError) as info:
        resolve(kwargs, env)
    assert fragment in str(info.value)


def test_install_rejects_bad_environment(monkeypatch, watch):
    import taskwatch

    monkeypatch.setenv("TASKWATCH_SLOW_CANCEL", "soon")
    with pytest.raises(ValueError, match="TASKWATCH_SLOW_CANCEL must be a number of seconds"):
        watch()
    assert not taskwatch.is_installed()


def test_markdown_table_lists_every_option():
    table = _options.markdown_table()
    for spec in _options.SPECS:
        assert f"`{spec.env}`" in table


# -- issue 16: every invalid value is a ValueError naming the option and what it accepts ---------

SECONDS = ("slow_cancel", "orphan_grace", "block_threshold", "span_threshold")
COUNTS = ("stack_depth", "history", "max_findings", "coroutine_origin")
BOOLS = ("enabled", "lineage", "watchdog", "log", "otel", "speedups")


def _bad_values():
    for name in SECONDS:
        for value in (float("nan"), float("inf"), "inf", "nan", -1, 0, "0", 10**400, "1e400", 86401,
                      True, "", " ", None, [1], b"1", "soon", 1j):
            yield name, value, "a number of seconds greater than 0 and at most 86400"
    for value in (float("nan"), -1, 0, 10**400, "soon", [1], True):
        yield "hang_threshold", value, "a number of seconds greater than 0 and at most 86400, or none/off"
    for name in COUNTS:
        for value in (2.5, "2.5", -1, 10**400, "", " ", None, True, "many", [3], float("nan"), "1e3"):
            yield name, value, "a whole number from"
    for name in BOOLS:
        for value in ("", " ", "maybe", 2, -1, None, 1.0, [True]):
            yield name, value, "true or false (1/0, yes/no, on/off)"
    for value in ("", " ", ",,,", " , ; ", [], (), 5, [5], b"leaked-task", "leaked", None):
        yield "kinds", value, "a comma-separated list of finding kinds from: all, none, unretrieved-exception"
    for value in (5, [5], b"x", "leaked", {"leaked-task": 1}):
        yield "disable", value, "finding kinds from: all, none"
    for value in (5, [5], b"app.py", ":12", "app.py:0", 3.5):
        yield "ignore", value, "creation sites as 'path' or 'path:line'"
    for value in ("", None, 3, "lots", ["all"]):
        yield "spans", value, "one of all, interesting, none"
    for value in ("SIGINT", "INT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGSEGV", "SIGABRT", "SIGBUS",
                  "SIGFPE", "SIGILL", "SIGCHLD", "SIGPIPE", "SIGALRM", "SIGWINCH", "SIGKILL",
                  "SIGSTOP", "SIGNOPE", 10, 2.0, signal.SIGINT, [1]):
        yield "dump_signal", value, "must be SIGUSR1 or SIGUSR2"


def _short_id(value):
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


@pytest.mark.parametrize("name, value, accepted", list(_bad_values()), ids=_short_id)
def test_every_invalid_value_is_refused_with_what_is_accepted(name, value, accepted):
    with pytest.raises(ValueError) as info:
        resolve({name: value}, {})
    message = str(info.value)
    assert f"option {name!r} must be" in message and accepted in message
    assert len(message) < 600  # the rejected value is shown short (10**400 has 401 digits)
    if isinstance(value, str):
        env = "TASKWATCH_" + name.upper()
        with pytest.raises(ValueError, match=f"{env} must be"):
            resolve({}, {env: value})


@pytest.mark.parametrize("name, value, expected", [
    ("kinds", "none", ()),
    ("kinds", " leaked-task , blocked-loop, ", ("leaked-task", "blocked-loop")),
    ("disable", "", ()),  # blank: nothing switched off, the default
    ("disable", ",,,", ()),
    ("ignore", " ", ()),
    ("ignore", ["app.py:12", "lib/"], ("app.py:12", "lib/")),
    ("slow_cancel", " 2.5 ", 2.5),
    ("slow_cancel", 86400, 86400.0),
    ("history", " 1_000 ", 1000),
    ("history", 0, 0),
    ("watchdog", 0, False),
    ("watchdog", "Off", False),
    ("hang_threshold", "off", None),
    ("dump_signal", "usr2", "SIGUSR2"),
    ("dump_signal", signal.SIGUSR1, "SIGUSR1"),
    ("dump_signal", True, "SIGUSR1"),
    ("dump_signal", "off", None),
])
def test_valid_values(name, value, expected):
    assert getattr(resolve({name: value}, {}), name) == expected


def test_broken_repr_in_a_bad_value_still_gives_the_message():
    class Weird:
        def __repr__(self):
            raise RuntimeError("no repr")

    with pytest.raises(ValueError, match="option 'history' must be a whole number from 0 to 1000000; got <Weird object>"):
        resolve({"history": Weird()}, {})


@pytest.mark.parametrize("kwargs", [{"ignore": 5}, {"slow_cancel": 10**400}, {"kinds": ""},
                                    {"dump_signal": "SIGINT"}])
def test_install_refuses_bad_values_and_installs_nothing(watch, kwargs):
    import taskwatch

    with pytest.raises(ValueError, match="taskwatch: option"):
        watch(**kwargs)
    assert not taskwatch.is_installed()


def test_install_refuses_blank_kinds_from_the_environment(monkeypatch, watch):
    import taskwatch

    for blank in ("", " ", ",,,"):
        monkeypatch.setenv("TASKWATCH_KINDS", blank)
        with pytest.raises(ValueError, match="TASKWATCH_KINDS must be .*not empty: 'none' switches"):
            watch()
        assert not taskwatch.is_installed()


OTEL_BLOCKED = textwrap.dedent("""
    import sys

    class Blocker:  # an environment without the otel extra
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Blocker())
    import taskwatch
    for attempt in range(2):
        try:
            taskwatch.install(otel=True, log=False)
        except ImportError as exc:
            print("ImportError", exc)
        print("installed", taskwatch.is_installed())
    taskwatch.install(log=False)  # without otel: works, nothing was left behind
    print("installed", taskwatch.is_installed(), taskwatch.report()["findings"])
    taskwatch.uninstall()
    print("installed", taskwatch.is_installed())
""")


def test_otel_without_the_extra_installs_nothing_and_says_what_to_install():
    proc = subprocess.run([sys.executable, "-c", OTEL_BLOCKED], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ImportError taskwatch: option 'otel' needs the OpenTelemetry SDK")
    assert "pip install 'taskwatch[otel]'" in lines[0]
    assert lines[1] == "installed False"
    assert lines[2] == lines[0] and lines[3] == "installed False"  # a retry: the same, clean
    assert lines[4:] == ["installed True []", "installed False"]
    assert proc.stderr == ""


def test_a_failing_integration_leaves_nothing_installed(monkeypatch, watch):
    import asyncio

    import taskwatch
    from taskwatch import _integrations

    def broken(state):
        raise RuntimeError("cannot start")

    factory = asyncio.BaseEventLoop.create_task
    monkeypatch.setattr(_integrations, "start", broken)
    with pytest.raises(RuntimeError, match="cannot start"):
        watch()
    assert not taskwatch.is_installed()
    assert asyncio.BaseEventLoop.create_task is factory  # every hook undone
