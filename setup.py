"""Builds the optional C accelerator (taskwatch/_speedups.c); all other metadata is in pyproject.toml.

``optional=True``: where no compiler is available the build goes on and taskwatch runs its
pure-Python hot path (same results, more cost per task). ``TASKWATCH_STRICT_BUILD=1`` (the test
command sets it) turns every compiler warning into an error, so a warning cannot slip into a release.
"""

import os

from setuptools import Extension, setup

args = ["-O2"]
if os.environ.get("TASKWATCH_STRICT_BUILD") == "1":
    # unused parameters and partly initialized tables are the C API's own idioms
    args += ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
             "-Werror"]

setup(ext_modules=[Extension("taskwatch._speedups", ["taskwatch/_speedups.c"], optional=True,
                             extra_compile_args=args)])
