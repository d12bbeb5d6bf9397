"""Child Python processes with the project importable, and reading their output lines.

This process only ever opens database files with pysqlite3: the stdlib
``sqlite3`` links another copy of SQLite, and two copies in one process break
each other's POSIX locks.  Code that needs the stdlib module runs in a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict:
    """This process's environment, with the project importable and output unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(script: str, *args: str, stdin: bool = False) -> subprocess.Popen:
    """A Python child running ``script`` with the project importable; binary pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


class LineReader:
    """Collects a child's stdout lines on a thread; ``wait_for`` blocks until one shows."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode()
            if not text.endswith("\n"):
                continue  # cut off by a kill: never a whole line
            with self._changed:
                self.lines.append(text[:-1])
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.lines):
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return predicate(self.lines)
                self._changed.wait(remaining)
            return True

    def wait_for(self, line: str, timeout: float) -> bool:
        return self.wait_until(lambda lines: line in lines, timeout)

    def next_line(self, start: int, prefix: str, timeout: float) -> tuple[int, str]:
        """The first line at index >= start beginning with prefix: (index, line)."""
        found: list = []

        def look(lines) -> bool:
            for index in range(start, len(lines)):
                if lines[index].startswith(prefix):
                    found.append((index, lines[index]))
                    return True
            return False

        if not self.wait_until(look, timeout):
            raise AssertionError(f"no line starting {prefix!r} within {timeout}s; "
                                 f"last lines: {self.lines[-5:]}")
        return found[0]

    def finish(self, timeout: float = 10) -> list[str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the child's stdout never closed"
        return list(self.lines)

