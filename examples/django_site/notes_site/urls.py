"""The notes API (the routes examples/load.py drives) and the admin."""

from django.contrib import admin
from django.urls import path

from notes import views

urlpatterns = [
    path("notes", views.post_note),
    path("notes/<int:note_id>", views.get_note),
    path("count", views.count),
    path("counter", views.counter),
    path("admin/", admin.site.urls),
]
