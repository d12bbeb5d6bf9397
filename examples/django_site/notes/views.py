"""The notes API: JSON in and out, the routes of examples/load.py.

``post_note`` is the read-then-write view: it reads the notes counter and
writes it back plus one, with the new note, in one ``transaction.atomic()``
block.  That block begins ``BEGIN IMMEDIATE`` under the strategy (the mutex,
the writer, the thread's own connection), so the read is already inside the
write transaction and no increment is lost; on a lock conflict the lock
policy decides.  The other views only read.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Counter, Note

MAX_BODY = 64 * 1024


@csrf_exempt  # a JSON API for scripts; the admin keeps Django's CSRF checks
@require_POST
def post_note(request: HttpRequest) -> JsonResponse:
    if len(request.body) > MAX_BODY:
        return JsonResponse({"error": f"the body must be 0 to {MAX_BODY} bytes"}, status=400)
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        return JsonResponse({"error": "the body must be UTF-8 text"}, status=400)
    with transaction.atomic():
        counter, _ = Counter.objects.get_or_create(name="notes")
        counter.value += 1
        counter.save(update_fields=["value"])
        note = Note.objects.create(text=text, number=counter.value)
    return JsonResponse({"id": note.id, "number": note.number}, status=201)


@require_GET
def get_note(request: HttpRequest, note_id: int) -> JsonResponse:
    note = Note.objects.filter(pk=note_id).first()
    if note is None:
        return JsonResponse({"error": f"no note {note_id}"}, status=404)
    return JsonResponse({"id": note.id, "text": note.text, "number": note.number})


@require_GET
def count(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"count": Note.objects.count()})


@require_GET
def counter(request: HttpRequest) -> JsonResponse:
    found = Counter.objects.filter(name="notes").values_list("value", flat=True).first()
    return JsonResponse({"counter": found or 0})
