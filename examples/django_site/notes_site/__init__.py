"""The sample Django project's settings and URLs (see examples/django_site/README.md)."""
