import asyncio
import functools
import hashlib
import hmac
import io
import logging
import re
import time
from collections.abc import AsyncIterator

import django
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.core.validators import validate_email
from django.db.models import Count, Min
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.i18n import JavaScriptCatalog
from prometheus_client import CollectorRegistry, Gauge

from . import (
    devices,
    forget,
    handoff,
    health,
    knowledge,
    languages,
    limits,
    llm,
    metrics,
    paging,
    payloads,
    runtime,
    turns,
    updates,
)
from .api import api_view, error_response, json_body, session_id_from
from .db import in_db_thread
from .errors import ApiError, DatabaseUnavailable
from .middleware import ARRIVED
from .models import Conversation, Handoff, Message, Session

logger = logging.getLogger(__name__)

CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
AFTER = re.compile(r"-?[0-9]{1,10}")
SEQ = re.compile(r"[0-9]{1,10}")
LIMIT = re.compile(r"[0-9]{1,3}")


def index(request):
    """The chat page: static/chat/main.js and its modules talk to the API below."""
    response = render(request, "index.html", _page_context())
    response["Content-Security-Policy"] = PAGE_POLICY + "frame-ancestors 'none'"
    return response


@xframe_options_exempt  # framing is decided by frame-ancestors below
def embed(request):
    """The chat page inside a shop's page (static/widget.js frames it; static/chat/embed.js
    gets the session id from the shop's page): framed only by CHAT_EMBED_ORIGINS."""
    origins = " ".join(settings.CHAT_EMBED_ORIGINS)
    response = render(request, "index.html", {**_page_context(), "embedded": True, "embed_origins": origins})
    response["Content-Security-Policy"] = PAGE_POLICY + "frame-ancestors " + (origins or "'none'")
    return response


# The page renders what a model wrote, so nothing but our own files may run or
# load there: no inline script or style, no other origin. Framing: each page says.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
)


def _page_context() -> dict:
    language = languages.current()  # the shop's FAQ in it where the shop wrote one (knowledge/faq.<lang>.md)
    return {
        "catalog_version": catalog_version(),
        "languages": settings.LANGUAGES,  # each named in its own language, as the selector shows them
        "suggestions": [entry.question for entry in knowledge.entries(language)[:3]],
        "max_chars": settings.CHAT_MESSAGE_MAX_CHARS,
        "shop_name": settings.CHAT_SHOP_NAME,
        "contact": knowledge.contact_details(language),
    }


@functools.cache
def catalog_version() -> str:
    """What the JavaScript catalogs' URL changes with: the translations (locale/*/djangojs.po) and Django's."""
    digest = hashlib.sha256(django.get_version().encode())
    for po in sorted((settings.BASE_DIR / "locale").glob("*/LC_MESSAGES/djangojs.po")):
        digest.update(po.parent.parent.name.encode() + po.read_bytes())
    return digest.hexdigest()[:12]


def js_catalog(request, version: str, lang: str):
    """The page's words for its scripts (static/chat/*.js call gettext()) in `lang`: Django's
    JavaScriptCatalog of the djangojs domain, kept by browsers and proxies for a year under
    its URL, which changes with the translations (catalog_version)."""
    if lang not in dict(settings.LANGUAGES):
        return HttpResponse(status=404)
    with translation.override(lang):
        response = JavaScriptCatalog.as_view(domain="djangojs")(request)
    response.varies_by_language = False  # type: ignore[attr-defined]  # the URL says which: no Vary (middleware.py)
    response["Cache-Control"] = ("public, max-age=31536000, immutable" if version == catalog_version()
                                 else "public, max-age=300")
    return response


@api_view("POST")
async def chat(request):
    body = json_body(request)
    text = _message_text(body.get("message"))
    session_id = None if body.get("sessionId") is None else session_id_from(body["sessionId"])
    client_message_id = _client_message_id(body.get("clientMessageId"))

    turn = await turns.start(limits.client_ip(request), session_id, text, client_message_id)
    if "text/event-stream" in request.headers.get("Accept", ""):
        response = StreamingHttpResponse(_events(turn), content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # let proxies pass each event on at once
        return response
    if not turn.for_staff:  # else stored for staff: the assistant does not answer
        reply = await turns.complete(turn)
        request.llm_ms = reply.latency_ms  # for the request log
    return JsonResponse(payloads.reply(turn))


async def _events(turn: turns.Turn) -> AsyncIterator[str]:
    """The turn as server-sent events: session, delta..., then done or error. Always ends
    with done or error: a stream cut off without either would leave the page guessing."""
    yield payloads.event("session", {"sessionId": str(turn.session_id), "newSession": turn.new_session,
                                     "previousConversationFull": turn.follows_full})
    try:
        if turn.reply is not None:  # answered before: replay it
            yield payloads.event("delta", {"text": turn.reply.content})
        elif not turn.for_staff:
            async for piece in turns.answer(turn):
                yield payloads.event("delta", {"text": piece})
    except ApiError as error:
        yield payloads.event("error", payloads.error(error.code, error.message, turn.session_id))
        return
    except Exception:  # noqa: BLE001 - a bug must still end the stream with an error event
        logger.exception("streamed turn failed")
        yield payloads.event("error", payloads.error("server_error", _("Something went wrong on our side."),
                                                    turn.session_id))
        return
    yield payloads.event("done", payloads.reply(turn))


def _message_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_message", _("message must be a non-empty string."))
    text = value.strip()
    if len(text) > settings.CHAT_MESSAGE_MAX_CHARS:
        raise ApiError(
            413,
            "message_too_long",
            _("message must be at most %(count)d characters.") % {"count": settings.CHAT_MESSAGE_MAX_CHARS},
        )
    if "\x00" in text or not _encodable(text):
        raise ApiError(400, "invalid_message", _("message contains characters that cannot be stored."))
    return text


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. "\ud800" in the JSON
        return False
    return True


def _client_message_id(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or not CLIENT_MESSAGE_ID.fullmatch(value):
        raise ApiError(
            400,
            "invalid_client_message_id",
            _("clientMessageId must be 1 to 64 letters, digits, '-' or '_'."),
        )
    return value


@api_view("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
async def api_not_found(request):
    raise ApiError(404, "not_found", _("There is no such API endpoint."))


@api_view("GET", "DELETE")
async def history(request):
    session_id = _session_id_header(request)
    if request.method == "DELETE":
        return await _forget(session_id)
    before = _before(request.GET.get("before"))
    limit = _limit(request.GET.get("limit"))
    found = await in_db_thread(_history, session_id, before, limit, retry=True)
    if found is None:
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    # Still waiting for a first reply while the shop is closed: the page offers the email field again.
    found["offerEmail"] = found["handoff"] == Handoff.WAITING and (await handoff.outlook(timezone.now())).offer_email
    return JsonResponse({"sessionId": str(session_id), **found})


async def _forget(session_id):
    """The customer's "forget me": delete the conversation and its cache entry.

    An expired conversation is deleted too: whoever holds the id may always
    have its data removed, rather than wait for chat_purge.
    """
    conversations, _sessions = await forget.forget(session_ids=[session_id])
    if not conversations:
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    return HttpResponse(status=204)


def _session_id_header(request):
    """The session id in the X-Session-Id header, which the endpoints that read a conversation take."""
    header = request.headers.get("X-Session-Id")
    if header is None:
        raise ApiError(400, "invalid_session_id", _("Send the session id in the X-Session-Id header."))
    return session_id_from(header)


def _history(session_id, before: int | None, limit: int) -> dict | None:
    """A page of the conversation's messages (the newest, or those before `before`), and whether its
    latest question is being answered now (a reply being written is not shown until it is stored)."""
    conversation = (Conversation.objects.active().of_session(session_id).seen_by(session_id)
                    .annotate(answering=updates.answering()).first())
    if conversation is None:
        return None
    Session.objects.seen(session_id, last_seen_at=conversation.session_seen_at)
    page = paging.before(conversation.messages.exclude(status=Message.Status.ANSWERING), before, limit)
    return {
        "messages": page.messages,  # with the seq and author (GET /api/updates has the same)
        "hasMore": page.has_more,
        # What to send as `before` for the page of older messages; null when there are none.
        "before": page.messages[0]["seq"] if page.has_more and page.messages else None,
        "turnInProgress": conversation.answering,
        "handoff": conversation.handoff,
    }


def _before(value: str | None) -> int | None:
    """The seq of the oldest message the page shows, to ask for the page before it; None: the newest."""
    if value is None:
        return None
    if not SEQ.fullmatch(value):
        raise ApiError(400, "invalid_before", _("before must be the seq of the oldest message shown (0 or more)."))
    return int(value)


def _limit(value: str | None) -> int:
    """How many messages a history page may hold (paging.py)."""
    if value is None:
        return paging.DEFAULT_LIMIT
    if not LIMIT.fullmatch(value) or not 1 <= int(value) <= paging.MAX_LIMIT:
        raise ApiError(400, "invalid_limit", _("limit must be a whole number from 1 to %(max)d.") % {"max": paging.MAX_LIMIT})
    return int(value)


@api_view("GET")
async def healthz(request):
    """For the load balancer and monitoring (docs/health.md): 503 only when the database is
    down; the cache (Redis) or the LLM down is "degraded", since the site still serves
    (from the database; from the offline responder). The worker's latest report (health.py),
    checked in the background: a probe waits for no dependency.

    The database is asked through the turn store (TurnStore.ping): on PostgreSQL on a
    connection of the check's own, opened again at once after a failure (a restart, a
    failover), not one of the turns' pool, whose connections may all be busy without the
    database being down. A database that does not answer within CHAT_HEALTH_TIMEOUT (a
    stalled server) counts as down. The LLM's state is the circuit breaker's shared flag
    (llm.health): the check calls no LLM.
    """
    report = await health.report()
    return JsonResponse(report.body, status=report.status)


@api_view("GET")
async def livez(request):
    """Liveness, for a process supervisor: this worker's event loop answers. It touches no
    dependency, so a database or Redis outage never gets healthy workers restarted."""
    return JsonResponse({"status": "alive"})


@api_view("GET")
async def metrics_scrape(request):
    """Prometheus's scrape (docs/metrics.md): every worker's counts, and what is read now.

    Only with CHAT_METRICS_TOKEN set, and sent as `Authorization: Bearer <token>`: unset,
    there is no such endpoint (404), so a site never publishes its figures by default.
    """
    token = settings.CHAT_METRICS_TOKEN
    if not token:
        raise ApiError(404, "not_found", _("There is no such endpoint."))
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        response = error_response(401, "unauthorized", _("Send the metrics token as Authorization: Bearer <token>."))
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    now = await _metrics_now(runtime.current())
    body, content_type = metrics.exposition(now)
    return HttpResponse(body, content_type=content_type)


async def _metrics_now(rt: runtime.Runtime) -> CollectorRegistry:
    """What a scrape reads at the time: the queue, the site's tokens today and its budgets, and
    whether the LLM is down (shared by every worker, so read here rather than counted)."""
    site_tokens_key = limits.budget_keys(None, "")[2]
    spent, down = await rt.gateway.round_trip(reads=[site_tokens_key, llm.DOWN])
    registry = CollectorRegistry()
    try:
        waiting, oldest = await in_db_thread(_queue)
    except DatabaseUnavailable:
        pass  # logged; the scrape reports the rest, when it matters most (the queue's series pause)
    else:
        Gauge("chat_conversations_waiting", "Conversations whose customer waits for a person's answer.",
              registry=registry).set(waiting)
        Gauge("chat_oldest_wait_seconds", "How long the longest-waiting customer has waited (0: nobody waits).",
              registry=registry).set(oldest)
    Gauge("chat_tokens_site_today", "LLM tokens the whole site spent today (UTC), as the budget counts them.",
          registry=registry).set(spent or 0)
    budget = Gauge("chat_token_budget_daily", "Daily LLM token budgets (0: none), by budget.", ["budget"],
                   registry=registry)
    budget.labels("site").set(settings.CHAT_DAILY_TOKENS_SITE)
    budget.labels("address").set(settings.CHAT_DAILY_TOKENS_PER_ADDRESS)
    budget.labels("session").set(settings.CHAT_DAILY_TOKENS_PER_SESSION)
    Gauge("chat_llm_down", "1 while the circuit breaker has the LLM down (customers get the offline responder).",
          registry=registry).set(1 if llm.health(down)["llm"] == "down" else 0)
    return registry


def _queue() -> tuple[int, float]:
    waiting = Conversation.objects.waiting()
    found = waiting.aggregate(count=Count("pk"), oldest=Min("waiting_since"))
    oldest = (timezone.now() - found["oldest"]).total_seconds() if found["oldest"] else 0.0
    return found["count"], oldest


# --- Talking to a person (conversations/handoff.py, updates.py) ----------------


@api_view("POST")
async def handoff_request(request):
    """The customer asks for a person: the conversation waits for staff."""
    body = json_body(request)
    session_id = None if body.get("sessionId") is None else session_id_from(body["sessionId"])
    # Like a chat turn, an unknown or expired id starts a new conversation (under the same limits).
    asked = await turns.request_person(limits.client_ip(request), session_id)
    return JsonResponse({
        "sessionId": str(asked.session_id),
        "handoff": asked.handoff,
        # Null when a person had been asked for already: the notice is not repeated.
        "notice": asked.notice,
        # The notice says the shop is closed: the page offers a field for the customer's email.
        "offerEmail": asked.offer_email,
        "newSession": asked.new_session,
        "previousConversationFull": asked.follows_full,
    })


# The longest address RFC 5321 lets through.
EMAIL_MAX_LENGTH = 254


@api_view("POST")
async def handoff_email(request):
    """The customer leaves an address for the staff reply (handoff.email_customer), or takes it
    back with an empty one. Leaving one again sends the next reply again."""
    body = json_body(request)
    session_id = session_id_from(body.get("sessionId"))
    email = body.get("email")
    if not isinstance(email, str) or len(email) > EMAIL_MAX_LENGTH or not _email_or_empty(email.strip()):
        raise ApiError(400, "invalid_email", _("email must be an email address, or empty to take it back."))
    email = email.strip()
    if not await in_db_thread(_leave_email, session_id, email, retry=True):
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    return JsonResponse({"sessionId": str(session_id), "email": email or None})


def _email_or_empty(email: str) -> bool:
    try:
        validate_email(email)
    except ValidationError:
        return email == ""
    return True


def _leave_email(session_id, email: str) -> bool:
    return bool(Conversation.objects.active().of_session(session_id).update(customer_email=email,
                                                                            customer_emailed_at=None))


@api_view("GET")
async def updates_poll(request):
    """Long poll: what is new in the conversation after message `after` (see updates.py).

    Served by chatsite/asgi.py, the poll has waited already, below Django (park_poll): the view
    answers with what that wait found. Served otherwise (the test client), it waits here."""
    session_id, after, state = _poll(request)
    rt = runtime.current()
    scope = getattr(request, "scope", {})  # the test client's requests have none
    if updates.PARKED in scope:
        found = scope[updates.PARKED]
    else:
        found = await updates.wait(rt, session_id, after, state, updates.page_wait(rt.watcher))
    if found is None:
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    if Session.seen_due(found.seen_at):  # an open page is a device seen: at most a write a minute
        await rt.seen(session_id)
    return JsonResponse({
        "sessionId": str(session_id),
        "handoff": found.handoff,
        "turnInProgress": found.turn_in_progress,
        "messages": found.messages,
        # More messages after these than one answer holds: the page asks again at once.
        "hasMore": found.has_more,
    })


def _poll(request):
    """What a long poll asks: (its session id, the seq of the latest message it has, the handoff
    state it shows or None)."""
    session_id = _session_id_header(request)
    after = _after(request.GET.get("after"))
    state = request.GET.get("state")
    if state is not None and state not in Handoff.values:
        raise ApiError(400, "invalid_state", _("state must be one of %(states)s.") % {"states": ", ".join(Handoff.values)})
    return session_id, after, state


async def park_poll(scope, receive) -> dict | None:
    """A customer's long poll waits here, below Django (chatsite/asgi.py), then goes on to the view
    with what the wait found in its scope (updates.PARKED), and the view answers at once.

    Ten thousand pages may wait on one machine, each for CHAT_UPDATES_WAIT: waiting here, a page
    keeps its connection, its scope, one waiter and one task that notices the client leaving, and
    not Django's request, its two tasks, the middleware's and the view's coroutines
    (docs/benchmarks.md, "A waiting page"). The request is read once, to know what it asks, by
    the view's own rules (_poll); a request they refuse does not wait, and the view answers it.
    If the look fails (the database gone), the view looks again and answers as it decides.

    Returns the request's message, taken from `receive`, for Django to be given; None if the client
    left (before or while it waited): there is no one to answer."""
    scope[ARRIVED] = time.monotonic()  # the request log's duration counts the wait
    message = await receive()
    if message["type"] != "http.request":
        return None
    if message.get("more_body"):
        return message
    try:
        session_id, after, state = _poll(ASGIRequest(scope, io.BytesIO()))
    except Exception:  # noqa: BLE001 - refused (ApiError) or unreadable: Django and the view answer it
        return message
    waiting = asyncio.current_task()
    assert waiting is not None  # served: the request's own task
    parked = [True]

    def left(gone: asyncio.Task) -> None:
        if not gone.cancelled():
            gone.exception()  # retrieved: a failing receive is a client gone too
        if parked[0]:
            waiting.cancel()

    gone = asyncio.ensure_future(_until_gone(receive))
    gone.add_done_callback(left)
    rt = runtime.current()
    try:
        scope[updates.PARKED] = await updates.wait(rt, session_id, after, state, updates.page_wait(rt.watcher))
    except asyncio.CancelledError:
        if not gone.done() or waiting.uncancel():
            raise
        return None
    except DatabaseUnavailable:
        pass  # logged by the store where it failed; the view looks again, and answers 503 if it fails too
    except Exception:  # noqa: BLE001 - the view looks again, and answers the failure as it decides
        logger.warning("updates: a poll's wait below Django failed; the view looks again", exc_info=True)
    finally:
        parked[0] = False
        gone.cancel()
    return message


async def _until_gone(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _after(value: str | None) -> int:
    """The seq of the latest message the page has; -1 before it has any."""
    if value is None or not AFTER.fullmatch(value) or int(value) < -1:
        raise ApiError(400, "invalid_after", _("after must be the seq of the latest message seen (-1 for none)."))
    return int(value)


# --- Continue on another device, and "Not you?" (conversations/devices.py) -------


@api_view("POST")
async def device_link(request):
    """A one-time link (also as a QR code) and a short code that bring another browser into this
    session's conversation. The token is only in the link's fragment: no request line carries it."""
    session_id = _session_id_header(request)
    await devices.admit_offer(limits.client_ip(request), session_id)
    made = await in_db_thread(devices.offer, session_id, _device_label(request))
    if made is None:
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    link = request.build_absolute_uri("/") + "#join=" + made.token
    return JsonResponse({
        "link": link,
        "qrSvg": devices.qr_svg(link),
        "code": devices.shown_code(made.code),
        "expiresAt": made.expires_at.isoformat(),
        "expiresInSeconds": settings.CHAT_DEVICE_LINK_MINUTES * 60,
    })


@api_view("POST")
async def device_join(request):
    """Redeem a link's token or a code (one of them): this browser's own new session in that
    conversation. Only ever a POST, which the page sends once the customer has confirmed.

    A browser that sends its own session (X-Session-Id) and is in that conversation already keeps
    it, and the offer stays unused; {"check": true} redeems nothing and says which it would be."""
    body = json_body(request)
    if (body.get("token") is None) == (body.get("code") is None):
        raise ApiError(400, "invalid_join", _("Send either the link's token or the code, not both."))
    check = body.get("check", False)
    if not isinstance(check, bool):
        raise ApiError(400, "invalid_join", _("check must be true or false."))
    token = None if body.get("token") is None else devices.parse_token(body["token"])
    code = None if body.get("code") is None else devices.parse_code(body["code"])
    current = None if request.headers.get("X-Session-Id") is None else _session_id_header(request)
    session = await devices.join(limits.client_ip(request), token=token, code=code, label=_device_label(request),
                                 current=current, check=check)
    if session is None:  # check: it would join
        return JsonResponse({"sessionId": None, "newSession": False, "sameConversation": False})
    joined = session.session_id != current
    return JsonResponse({"sessionId": str(session.session_id), "newSession": joined, "sameConversation": not joined})


@api_view("GET")
async def device_list(request):
    """The browsers of this session's conversation: the browser and when, no more."""
    session_id = _session_id_header(request)
    found = await in_db_thread(devices.listed, session_id, _device_label(request))
    if found is None:
        raise ApiError(404, "session_not_found", _("No conversation is kept under that session id."))
    return JsonResponse({"sessionId": str(session_id), "devices": found})


@api_view("POST")
async def device_end(request):
    """End a browser's session ({"device": its number}, or "this": "Not you? Start fresh"); the
    conversation stays for the others."""
    session_id = _session_id_header(request)
    device = json_body(request).get("device")
    if device != "this" and (type(device) is not int or not 0 < device < 2**63):
        raise ApiError(400, "invalid_device", _('device must be a device\'s number from GET /api/devices, or "this".'))
    await devices.end(session_id, None if device == "this" else device)
    return HttpResponse(status=204)


def _device_label(request) -> str:
    return devices.device_label(request.headers.get("User-Agent", "")[:512])
