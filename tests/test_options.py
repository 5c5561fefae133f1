import pytest

from taskwatch import _options
from taskwatch._options import KINDS, resolve


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
        ({"block_threshold": "fast"}, {}, "option 'block_threshold' must be a number of seconds greater than 0; got 'fast'"),
        ({"block_threshold": -1}, {}, "greater than 0"),
        ({}, {"TASKWATCH_WATCHDOG": "maybe"}, "TASKWATCH_WATCHDOG must be true or false"),
        ({}, {"TASKWATCH_KINDS": "leaked,lost"}, "finding kinds from: all, none, unretrieved-exception"),
        ({"spans": "some"}, {}, "option 'spans' must be one of all, interesting, none"),
        ({"stack_depth": 0}, {}, "a whole number from 1 to 64"),
        ({"dump_signal": "SIGNOPE"}, {}, "a signal name such as SIGUSR1"),
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
