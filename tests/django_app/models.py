"""Models the engine's tests write through Django, beside Storm's `_items.Item`."""

from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)

    class Meta:
        app_label = "django_app"


class Counter(models.Model):
    name = models.CharField(max_length=50, unique=True)
    value = models.IntegerField(default=0)

    class Meta:
        app_label = "django_app"


class Tag(models.Model):
    note = models.ForeignKey(Note, on_delete=models.CASCADE, related_name="tags")
    label = models.CharField(max_length=50)

    class Meta:
        app_label = "django_app"
