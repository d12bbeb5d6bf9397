"""Notes and counters in Django's admin."""

from django.contrib import admin

from .models import Counter, Note

admin.site.register(Note, list_display=["id", "number", "text"])
admin.site.register(Counter, list_display=["name", "value"])
