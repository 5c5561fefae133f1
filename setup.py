"""Builds the optional C accelerator (taskwatch/_speedups.c); all other metadata is in pyproject.toml.

``optional=True``: where no compiler is available the build goes on and taskwatch runs its
pure-Python hot path (same results, more cost per task).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("taskwatch._speedups", ["taskwatch/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
