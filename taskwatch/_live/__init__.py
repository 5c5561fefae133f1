"""The live view: a snapshot of a running program's tasks (``_snapshot``, ``_waits``), how another
process asks for one (``_serve`` in the program, ``_attach`` in ``taskwatch ps``), and its text."""
