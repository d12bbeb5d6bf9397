"""Django's test runner (TestCase, TransactionTestCase, the test database) on the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strategy", ["queue", "single", "mutex", "threadlocal"])
def test_djangos_runner_on_the_engine(strategy, tmp_path):
    env = {**os.environ, "STOREMGR_DJANGO_STRATEGY": strategy,
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    result = subprocess.run(
        [sys.executable, "-m", "django", "test", "django_app.cases",
         "--settings=django_app.settings", "--noinput", "-v", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Ran 5 tests" in output and "\nOK" in output, output
