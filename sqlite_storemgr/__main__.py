"""``python -m sqlite_storemgr``: see `sqlite_storemgr.cli`."""

import sys

from .cli import main

sys.exit(main())
