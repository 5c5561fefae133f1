"""``python -m tests.cpython_asyncio``: see the package docstring."""

import sys

from . import main

sys.exit(main())
