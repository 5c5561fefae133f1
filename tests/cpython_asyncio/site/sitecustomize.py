"""Start-up hook of the harness's taskwatch runs: ``taskwatch.install()`` with default options
(``TASKWATCH_*`` variables apply) in every Python process started with this folder on PYTHONPATH.

It shadows any ``sitecustomize`` further down ``sys.path`` (Debian ships one, for instance), so that
one runs first, exactly as it would have. A failed install is written to stderr and kept in
``install_error`` (the runner reports it): the run then tests nothing and says so.
"""

import importlib.machinery
import importlib.util
import os
import sys

install_error = None
shadowed = None

_here = os.path.dirname(os.path.abspath(__file__))


def _run_shadowed():
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_shadowed_sitecustomize"] = module
    spec.loader.exec_module(module)
    return module


try:
    shadowed = _run_shadowed()
except Exception as exc:  # the shadowed hook failed: report it as Python would, then go on
    sys.stderr.write(f"Error in sitecustomize (shadowed by the taskwatch harness): {exc!r}\n")

try:
    import taskwatch

    taskwatch.install()
except BaseException as exc:
    install_error = repr(exc)
    sys.stderr.write(f"taskwatch harness: install() failed: {install_error}\n")
