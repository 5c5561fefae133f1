"""Builds the optional C accelerator (taskwatch/_core/_speedups_src/, see speedups.h there); all other
metadata is in pyproject.toml.

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

# Not taskwatch/_speedups/: a folder of that name would import as a namespace package wherever the
# extension is not built. The headers are `depends`: a change to one rebuilds the extension, and
# setuptools puts them in the sdist with the sources.
src = "taskwatch/_core/_speedups_src/"
sources = [src + name for name in ("module.c", "record.c", "codes.c", "recorder.c", "task.c", "sampler.c",
                                         "switches.c")]
headers = [src + name for name in ("speedups.h", "interp.h")]

setup(ext_modules=[Extension("taskwatch._core._speedups", sources, depends=headers, optional=True,
                             extra_compile_args=args)])
