"""CPython's own asyncio tests pass with taskwatch installed at start-up wherever they pass without.

One run of ``tests.cpython_asyncio`` (every module, plainly and with ``taskwatch.install()`` from a
sitecustomize, side by side) under the interpreter running pytest, on the working tree's taskwatch;
then one test per module that fails listing its regressed test ids. About a minute on two cores.
``TASKWATCH_CPYTHON_SUITE=0`` skips it; ``TASKWATCH_CPYTHON_SUITE_MODULES=test_tasks,...`` runs a
subset; the same comparison by hand: ``python -m tests.cpython_asyncio``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

import pytest

from .cpython_asyncio import MODULES, Comparison, _reason, compare, format_report

ENABLED = os.environ.get("TASKWATCH_CPYTHON_SUITE", "1").strip().lower() not in {"0", "no", "off", "false"}
SELECTED = [m.strip() for m in os.environ.get("TASKWATCH_CPYTHON_SUITE_MODULES", "").split(",")
            if m.strip()] or list(MODULES)

pytestmark = [
    pytest.mark.skipif(not ENABLED, reason="TASKWATCH_CPYTHON_SUITE=0"),
    pytest.mark.skipif(importlib.util.find_spec("test.test_asyncio") is None,
                       reason="this interpreter ships no test.test_asyncio"),
]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    result = compare(os.environ.get("TASKWATCH_CPYTHON_SUITE_PYTHON") or sys.executable, SELECTED,
                     workdir=tmp_path_factory.mktemp("cpython_asyncio"))
    print(format_report(result))
    return result


def test_taskwatch_was_installed(comparison: Comparison) -> None:
    """The comparison means something only if the taskwatch run really had taskwatch on."""
    child = comparison.taskwatch.get("in_child") or {}
    assert child.get("installed"), f"taskwatch was not installed in the children: {child}"
    assert not child.get("install_error"), child["install_error"]
    for run in comparison.plain.values():
        assert "taskwatch" not in run.header, f"the plain run of {run.module} imported taskwatch"


@pytest.mark.parametrize("module", SELECTED)
def test_no_regressions(comparison: Comparison, module: str) -> None:
    plain, tw = comparison.plain[module], comparison.tw[module]
    if plain.absent and tw.absent:
        pytest.skip(f"test.test_asyncio.{module} does not exist on this version")
    rows: list[dict[str, Any]] = comparison.regressions.get(module, [])
    if rows:
        listing = "\n".join(f"  {r['id']}  [{r['plain']} -> {r['taskwatch']}]  {_reason(r['detail'])}"
                            for r in rows)
        pytest.fail(f"{len(rows)} tests of test.test_asyncio.{module} pass without taskwatch and "
                    f"not with it (logs: {comparison.taskwatch.get('workdir')}):\n{listing}",
                    pytrace=False)
