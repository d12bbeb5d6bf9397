"""A small Django app for the engine's tests (tests/test_django*.py)."""
