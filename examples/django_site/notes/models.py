"""A note, and a named counter that the posting view reads, then writes back plus one."""

from django.db import models


class Note(models.Model):
    text = models.TextField()
    number = models.PositiveIntegerField(help_text="the notes counter's value this note set")

    def __str__(self) -> str:
        return f"#{self.number}: {self.text[:40]}"


class Counter(models.Model):
    name = models.CharField(max_length=50, unique=True)
    value = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"
