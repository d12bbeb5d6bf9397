"""``python -m sqlite_storemgr``: see `sqlite_storemgr.tools.cli`."""

import sys

from .tools.cli import main

sys.exit(main())
