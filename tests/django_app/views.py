"""Views writing in each way a Django application does: loose, in atomic(), then failing."""

from django.db import transaction
from django.http import HttpResponse, JsonResponse

from .models import Note


def loose_write(request):
    """An ORM write outside any atomic block (Django's autocommit mode)."""
    Note.objects.create(text=request.GET.get("text", "loose"))
    return HttpResponse("ok")


def atomic_write(request):
    with transaction.atomic():
        Note.objects.create(text=request.GET.get("text", "atomic"))
    return HttpResponse("ok")


def failing_write(request):
    """Writes, then answers 500: a request transaction must roll the write back."""
    Note.objects.create(text="doomed")
    return HttpResponse("failed", status=500)


def raising_write(request):
    """Writes, then raises: the request's transaction must roll the write back."""
    Note.objects.create(text="doomed")
    raise RuntimeError("the view failed after writing")


def count(request):
    return JsonResponse({"notes": Note.objects.count()})
