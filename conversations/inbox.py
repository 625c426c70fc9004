"""The support inbox's staff endpoints: the live view's JSON, the queue's count.

Served under /admin/ (admin.ConversationAdmin.get_urls) with the admin's session
login; they answer JSON only, errors included (`{"error": {"code", "message"}}`,
as the API does), never a login page or HTML:

    GET  .../conversation/waiting-count/         the queue's count (every staff page polls it)
    GET  .../conversation/<id>/live/updates/     the live view's long poll (updates.py, as the
                                                 customer's page waits), with the summary;
                                                 ?after=<seq>&state=<handoff>[&wait=0]
    POST .../conversation/<id>/live/send/        Send, Hand back, Close (CSRF-protected)

Not logged in: 401. Logged in but not staff, or without "Can view conversation":
403 (and for send, without "Can answer customers" as well). Checked before the id
is looked at, so nobody learns which conversations exist.
"""

import functools
import logging
import re

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt

from . import handoff, languages, payloads, runtime, summary, updates
from .db import in_db_thread
from .errors import DatabaseUnavailable, TurnInProgress
from .models import Conversation, Handoff, StaffProfile

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "conversations.view_conversation"
REPLY_PERMISSION = "conversations.reply_conversation"
CONVERSATION_ID = re.compile(r"[0-9]{1,18}")
AFTER = re.compile(r"-?[0-9]{1,10}")
TOKEN = re.compile(r"[A-Za-z0-9]{1,64}")
REPLY_MAX_CHARS = 4000
ACTIONS = ("reply", "hand_back", "close")


def error(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse(payloads.error(code, message), status=status)
    response["Cache-Control"] = "no-store"
    return response


def refusal(user, *permissions: str) -> JsonResponse | None:
    """The answer for a user who may not use a staff endpoint, or None if they may."""
    if not user.is_authenticated:
        return error(401, "not_logged_in", gettext("Log in to the admin first."))
    if not (user.is_active and user.is_staff and user.has_perms([VIEW_PERMISSION, *permissions])):
        return error(403, "forbidden", gettext("You may not do this."))
    return None


def staff_json(*permissions: str):
    """For a sync view: refuse with `refusal`, and mark every answer no-store."""
    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            response = refusal(request.user, *permissions) or view(request, *args, **kwargs)
            response["Cache-Control"] = "no-store"
            return response
        return wrapper
    return decorator


def csrf_refused(request) -> bool:
    """Django's CSRF check of a POST, run by the view itself so that a failure is answered in JSON."""
    return CsrfViewMiddleware(_nothing).process_view(request, _nothing, (), {}) is not None


def _nothing(request) -> HttpResponse:  # a view the check runs for (not csrf_exempt)
    return HttpResponse()


def conversation_id(text: str) -> int | None:
    return int(text) if CONVERSATION_ID.fullmatch(text) else None


# --- The queue's count ---------------------------------------------------------


@csrf_exempt  # it changes nothing: any other method is a JSON 405, not CSRF's HTML page
@staff_json()
def waiting_count(request):
    """How many customers wait for a person, and the one who started waiting last (for the
    browser notification: a new id there is a new customer waiting)."""
    if request.method != "GET":
        return error(405, "method_not_allowed", gettext("Use GET for this endpoint."))
    waiting = Conversation.objects.waiting()
    try:
        found = waiting.aggregate(count=Count("pk"), oldest=Min("waiting_since"))
        newest = waiting.order_by("-waiting_since").first()
    except DatabaseError:
        # The header keeps its last count and asks again at its next poll.
        logger.warning("inbox: the database did not answer the waiting count")
        return error(503, "database_unavailable", gettext("The database did not answer; trying again."))
    return JsonResponse({
        "waiting": found["count"],
        "oldestWaitingSince": found["oldest"].isoformat() if found["oldest"] else None,
        "newest": None if newest is None else {
            "id": newest.pk, "reference": newest.reference, "url": live_url(newest.pk),
            "waitingSince": newest.waiting_since.isoformat(),
        },
    })


def live_url(pk: int) -> str:
    return reverse("admin:conversations_conversation_live", args=[pk])


# --- The live view's long poll -----------------------------------------------------


@csrf_exempt  # as waiting_count
async def live_updates(request, object_id: str):
    """What is new in the conversation after message `after` (or in its handoff state, if not
    `state`), waiting up to CHAT_UPDATES_WAIT as the customer's page does; with the summary."""
    user = await request.auser()
    refused = await sync_to_async(refusal)(user)
    if refused is None and request.method != "GET":
        refused = error(405, "method_not_allowed", gettext("Use GET for this endpoint."))
    if refused is not None:
        return refused
    pk = conversation_id(object_id)
    after_text, state = request.GET.get("after", ""), request.GET.get("state")
    if not AFTER.fullmatch(after_text) or int(after_text) < -1:
        return error(400, "invalid_after", gettext("after must be the seq of the latest message shown (-1 for none)."))
    if state is not None and state not in Handoff.values:
        return error(400, "invalid_state", gettext("state must be one of %(states)s.") % {"states": ", ".join(Handoff.values)})
    if pk is None:
        return error(404, "not_found", gettext("No conversation has that id."))
    try:
        # wait=0: answer at once (the page asks so while the summary is being written).
        wait = 0.0 if request.GET.get("wait") == "0" else settings.CHAT_UPDATES_WAIT
        found = await updates.wait_for_staff(runtime.current().watcher, pk, int(after_text), state, wait)
        if found is None:
            return error(404, "not_found", gettext("No conversation has that id."))
        about = await in_db_thread(_summary, pk, languages.current())  # the staff member's language
    except (DatabaseError, DatabaseUnavailable):
        logger.warning("inbox: the database did not answer the live view's poll")
        return error(503, "database_unavailable", gettext("The database did not answer; trying again."))
    response = JsonResponse({
        "handoff": found.handoff,
        "turnInProgress": found.turn_in_progress,
        "messages": found.messages,
        "hasMore": found.has_more,
        **(about or {}),
    })
    response["Cache-Control"] = "no-store"
    return response


def _language_name(language: str, staff_language: str) -> str:
    """The customer's language named in the staff member's: "Deutsch" in a German admin."""
    with translation.override(staff_language):
        return languages.staff_name(language)


def _summary(pk: int, language: str) -> dict | None:
    try:
        conversation = Conversation.objects.get(pk=pk)
        return {"summary": summary.for_staff(conversation, language).as_json(),
                "waitingSince": conversation.waiting_since.isoformat() if conversation.waiting_since else None,
                "language": conversation.language, "languageName": _language_name(conversation.language, language)}
    except Conversation.DoesNotExist:
        return None


# --- Send, hand back, close -----------------------------------------------------------


@csrf_exempt  # checked below, so that a failure is answered in JSON too
@staff_json(REPLY_PERMISSION)
def live_send(request, object_id: str):
    """Send a reply (once per token), hand back or close, from the live view's reply box
    (fetch, CSRF token in the header). The reply is signed with the sender's profile name."""
    if request.method != "POST":
        return error(405, "method_not_allowed", gettext("Use POST for this endpoint."))
    if csrf_refused(request):
        return error(403, "csrf_failed", gettext("The page is out of date (its CSRF token): reload it and send again."))
    pk = conversation_id(object_id)
    if pk is None or not Conversation.objects.filter(pk=pk).exists():
        return error(404, "not_found", gettext("No conversation has that id."))
    action = request.POST.get("action", "")
    text = request.POST.get("reply", "").strip()
    token = request.POST.get("token", "")
    if action not in ACTIONS:
        return error(400, "invalid_action", gettext("action must be reply, hand_back or close."))
    author = StaffProfile.name_of(request.user)
    if not author:
        return error(409, "no_display_name", gettext("Choose your name for customers first (Your profile)."))
    try:
        if action == "reply":
            if not text:
                return error(400, "empty_reply", gettext("Write a reply first."))
            if len(text) > REPLY_MAX_CHARS or "\x00" in text:
                return error(400, "invalid_reply", gettext("A reply is at most %(count)d characters of text.") % {"count": REPLY_MAX_CHARS})
            if not TOKEN.fullmatch(token):
                return error(400, "invalid_token", gettext("token must be 1 to 64 letters or digits."))
            message, stored = handoff.staff_reply(pk, request.user, author, text, token)
            return JsonResponse({"sent": stored, "seq": message.seq if stored else None,
                                 "author": author, "at": timezone.now().isoformat()})
        notice = handoff.hand_back(pk, request.user, author, close=action == "close")
        return JsonResponse({"changed": notice is not None, "handoff": Handoff.ASSISTANT})
    except (DatabaseError, DatabaseUnavailable, TurnInProgress) as failure:
        logger.warning("inbox: a staff change was refused, the database is busy: %r", failure)
        return error(503, "conversation_busy", gettext("The conversation is busy just now: nothing was changed. "
                                                       "Send again in a moment (a reply is stored once)."))
