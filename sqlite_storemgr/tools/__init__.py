"""The ``storemgr`` command line and the benchmark: users of the library, not part of it."""
