"""Views the request-path tests call through Django's test client."""

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("loose/", views.loose_write),
    path("atomic/", views.atomic_write),
    path("fail/", views.failing_write),
    path("raise/", views.raising_write),
    path("count/", views.count),
]
