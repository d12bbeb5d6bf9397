"""Django test cases run by Django's own runner on the engine (tests/test_django_runner.py).

Not named test_*.py: pytest must not collect them; ``manage.py test`` runs them.
"""

from django.db import transaction
from django.test import TestCase, TransactionTestCase

import sqlite_storemgr as sm

from .models import Note


def storm_count(store):
    return store.execute("SELECT COUNT(*) FROM django_app_note").get_one()[0]


class InTransaction(TestCase):
    @classmethod
    def setUpTestData(cls):
        Note.objects.create(text="class data")

    def test_writes_are_seen_by_storm_in_the_same_transaction(self):
        Note.objects.create(text="test data")
        self.assertEqual(sm.submit_write(storm_count, name="main").result(), 2)

    def test_each_test_starts_from_the_class_data(self):
        self.assertEqual(list(Note.objects.values_list("text", flat=True)), ["class data"])

    def test_on_commit_is_captured(self):
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            with transaction.atomic():
                transaction.on_commit(lambda: Note.objects.create(text="hook"))
        self.assertEqual(len(callbacks), 1)
        self.assertTrue(Note.objects.filter(text="hook").exists())


class Committing(TransactionTestCase):
    def test_commits_are_real_and_flushed_after(self):
        with transaction.atomic():
            Note.objects.create(text="committed")
        self.assertEqual(sm.submit_write(storm_count, name="main").result(), 1)

    def test_the_table_was_flushed(self):
        self.assertEqual(Note.objects.count(), 0)
