"""Settings for running Django's own test suite (from its sdist) on the engine: .ci/django_suite.sh."""
