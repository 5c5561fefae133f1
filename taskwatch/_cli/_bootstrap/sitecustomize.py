"""Installs taskwatch in child processes of a ``python -m taskwatch`` session, then chains.

Any Python the program starts imports this file, including interpreters without taskwatch (other
versions, other virtual environments, Python 2): it must stay valid in all of them (no f-strings,
no annotations) and, where taskwatch cannot load, let the child run exactly as without it, silently.
"""

import os
import sys

try:
    from taskwatch._cli._session import bootstrap_child
except Exception:  # not installed for this interpreter, or not loadable here: run without it
    bootstrap_child = None
if bootstrap_child is not None:
    try:
        bootstrap_child()
    except Exception:  # never break the child's startup
        pass
del bootstrap_child

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
