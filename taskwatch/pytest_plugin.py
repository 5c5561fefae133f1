"""pytest plugin: a test fails when it leaks tasks, loses errors or blocks the event loop.

It comes with taskwatch (``pytest11`` entry point) and does nothing until enabled, so installing
taskwatch never changes a suite. Enable it for every test with ``pytest --taskwatch`` or
``taskwatch = true`` in the ini file, or for some tests with ``@pytest.mark.taskwatch`` on a test,
class or module (``pytestmark``). ``--no-taskwatch`` (or ``-p no:taskwatch``) wins over both.

A watched test fails (or warns, in ``warn`` mode) when, between the start of its setup and the end
of its teardown, taskwatch saw:

* ``leaked-task``: a task of the test still pending after it. Loops that close with the test
  (pytest-asyncio's function loops, anyio's runner, ``asyncio.run``) report theirs when the runner
  shuts down, as an error at teardown when a fixture closes the loop. On loops that stay open
  (session or module loops, servers in threads) the test's pending tasks get a grace period of five
  tries over ``taskwatch_grace`` (0.1 s), goleak-style, before they fail it;
* ``unretrieved-exception``, ``lost-exception``, ``never-awaited``, ``destroyed-pending``,
  ``swallowed-cancel``, ``slow-cancel``, ``orphaned-task``, and ``blocked-loop`` over the block
  threshold (0.1 s). Garbage is collected after each test, so errors hidden in dropped tasks
  surface in the test that dropped them.

The failure shows each finding with the user's lines (creation site, raising line, blocking line).
Tasks of fixtures wider than the test (a module-scoped server, a session loop's runner) and the tasks
they spawn are never the test's leaks; the session ends with a summary: counts by kind, tests with
findings, slowest blocks, findings outside any test, and the plugin's own time.

Per test, class or module (the closest marker wins for ``enabled``, ``mode``, ``ignore_fixtures``;
``allow`` and ``ignore`` add up)::

    @pytest.mark.taskwatch(allow=["blocked-loop"],           # kinds that never fail the test
                           ignore=["tests/helpers.py",       # tasks created in a file (suffix, glob,
                                   "app/jobs.py:40",         #   or file:line)
                                   "app.metrics.flush"],     # tasks of a coroutine (name or glob)
                           ignore_fixtures=True,             # tasks started by the test's fixtures
                           mode="warn",                      # report without failing
                           enabled=False)                    # not this one

Suite-wide: ``--taskwatch-mode=fail|warn`` (ini ``taskwatch_mode``), ``--taskwatch-allow=KINDS``
(``taskwatch_allow``), ``--taskwatch-ignore=PATTERN`` (``taskwatch_ignore``, one per line),
``taskwatch_ignore_fixtures = true``, ``--taskwatch-block-threshold=SECONDS``
(``taskwatch_block_threshold``), ``taskwatch_grace``, ``taskwatch_gc = auto|always|never`` (full
collections only when a task failed or is pending, the default; or after every test; or never),
``--taskwatch-json=PATH`` (each watched test's findings). Other taskwatch options come from the
``TASKWATCH_*`` variables; findings are not logged unless ``TASKWATCH_LOG=1``. In warn mode,
``-W error::taskwatch.pytest_plugin.TaskwatchWarning`` fails again.

Works with pytest-asyncio (strict and auto modes, any loop scope), anyio's plugin on the asyncio
backend, uvloop (``event_loop_policy``, ``loop_factory``, ``uvloop.run``, anyio's ``use_uvloop``) and
plain tests that call ``asyncio.run``: taskwatch hooks the loop classes, so every loop is watched.
"""

from ._pytest._plugin import TaskwatchWarning, pytest_addoption, pytest_configure

__all__ = ["TaskwatchWarning"]
__pytest_hooks__ = (pytest_addoption, pytest_configure)  # this module is the plugin pytest loads
