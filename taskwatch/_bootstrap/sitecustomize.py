"""Installs taskwatch in child processes of a ``python -m taskwatch`` session, then chains."""

import os
import sys

try:
    from taskwatch._session import bootstrap_child

    bootstrap_child()
except Exception as exc:  # never break the child's startup
    sys.stderr.write(f"taskwatch: could not start in child process: {exc!r}\n")

# Chain to the sitecustomize this one shadows, if any.
_here = os.path.dirname(os.path.abspath(__file__))
_saved = sys.modules.pop("sitecustomize", None)
_path = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_old, sys.path[:] = list(sys.path), _path
try:
    import sitecustomize  # noqa: F401
except ImportError:
    if _saved is not None:
        sys.modules["sitecustomize"] = _saved
finally:
    sys.path[:] = _old
