"""The debugging session: ``python -m taskwatch app.py`` and the ``taskwatch`` console script."""

from ._main import main

__all__ = ["main"]
