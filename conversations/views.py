import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render

from . import knowledge, limits, llm, turns
from .api import ApiError, api_view, json_body, session_id_from
from .models import Conversation, Message

logger = logging.getLogger(__name__)

CLIENT_MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def index(request):
    """The chat page: static/chat.js talks to the API below."""
    response = render(request, "index.html", {
        "suggestions": [entry.question for entry in knowledge.entries()[:3]],
        "max_chars": settings.CHAT_MESSAGE_MAX_CHARS,
    })
    # The page renders what a model wrote, so nothing but our own files may run
    # or load there: no inline script or style, no other origin, no framing.
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )
    return response


@api_view("POST")
async def chat(request):
    body = json_body(request)
    text = _message_text(body.get("message"))
    session_id = None if body.get("sessionId") is None else session_id_from(body["sessionId"])
    client_message_id = _client_message_id(body.get("clientMessageId"))

    try:
        turn = await _store_question(limits.client_ip(request), session_id, text, client_message_id)
    except limits.Limited as limited:
        raise ApiError(
            limited.status, limited.code, limited.message, session_id=session_id,
            retry_after=limited.retry_after,
        ) from None
    except turns.TurnInProgress:
        raise ApiError(
            409,
            "turn_in_progress",
            "The previous message in this conversation is still being answered.",
            session_id=session_id,
            retry_after=2,
        ) from None
    except turns.RetrySuperseded:
        raise ApiError(
            409,
            "retry_superseded",
            "Newer messages followed that one; send it again as a new message.",
            session_id=session_id,
        ) from None

    if "text/event-stream" in request.headers.get("Accept", ""):
        response = StreamingHttpResponse(_events(turn), content_type="text/event-stream")
        response["X-Accel-Buffering"] = "no"  # let proxies pass each event on at once
        return response

    if turn.reply is None:
        try:
            async for _ in turns.reply_pieces(turn, streamed=False):
                pass
        except llm.AssistantUnavailable as error:
            raise _unavailable(error, turn) from None
        except turns.ConversationDeleted:
            raise _deleted() from None
        request.llm_ms = turn.reply.latency_ms  # for the request log
    return JsonResponse(_reply_payload(turn))


async def _store_question(*args) -> turns.Turn:
    """Start the turn in a worker thread. If the client leaves meanwhile, the thread still
    stores the question; it is then marked failed at once, so that it can be retried and
    does not hold the conversation "in flight" until the LLM deadline passes."""
    storing = asyncio.ensure_future(turns.in_db_thread(_start_turn, *args))
    try:
        return await asyncio.shield(storing)
    except asyncio.CancelledError:
        storing.add_done_callback(_abandon)
        raise


# References to the clean-ups under way, so that they are not garbage collected midway.
_abandoned: set[asyncio.Future] = set()


def _abandon(storing: asyncio.Future) -> None:
    if storing.cancelled() or storing.exception() is not None:
        return
    cleanup = asyncio.ensure_future(turns.in_db_thread(turns.record_failure, storing.result(), count=False))
    _abandoned.add(cleanup)
    cleanup.add_done_callback(_abandoned.discard)


def _start_turn(ip: str, session_id, text: str, client_message_id: str) -> turns.Turn:
    limits.check_turn(ip, session_id)
    use_llm = limits.check_budget(ip, session_id)
    turn = turns.start_turn(
        session_id, text, client_message_id, admit_new_session=lambda: limits.check_new_session(ip)
    )
    # A spent budget or an LLM that is down: the offline responder answers, marked as such.
    turn.address, turn.offline = ip, not use_llm
    return turn


async def _events(turn: turns.Turn) -> AsyncIterator[str]:
    """The turn as server-sent events: session, delta..., then done or error."""
    yield _event("session", {"sessionId": str(turn.session_id)})
    if turn.reply is not None:  # a retry answered before: replay it
        yield _event("delta", {"text": turn.reply.content})
    else:
        try:
            async for piece in turns.reply_pieces(turn):
                yield _event("delta", {"text": piece})
        except llm.AssistantUnavailable as error:
            yield _error_event(_unavailable(error, turn), turn)
            return
        except turns.ConversationDeleted:
            yield _error_event(_deleted(), turn)
            return
    yield _event("done", _reply_payload(turn))


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _error_event(failure: ApiError, turn: turns.Turn) -> str:
    return _event("error", {"error": {"code": failure.code, "message": failure.message},
                            "sessionId": str(turn.session_id)})


def _unavailable(error: llm.AssistantUnavailable, turn: turns.Turn) -> ApiError:
    return ApiError(
        error.status,
        "llm_unavailable",
        f"{error} Your message is saved; try again in a moment.",
        session_id=turn.session_id,
        retry_after=error.retry_after,
    )


def _deleted() -> ApiError:
    return ApiError(404, "session_not_found", "This conversation was deleted while it was being answered.")


def _reply_payload(turn: turns.Turn) -> dict:
    reply = turn.reply
    return {
        "reply": reply.content,
        "sessionId": str(turn.session_id),
        "newSession": turn.new_session,
        "stopped": reply.status == Message.Status.STOPPED,
        "responder": "offline" if reply.model == llm.OFFLINE_MODEL else "openai",
        "model": reply.model,
    }


def _message_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_message", "message must be a non-empty string.")
    text = value.strip()
    if len(text) > settings.CHAT_MESSAGE_MAX_CHARS:
        raise ApiError(
            413,
            "message_too_long",
            f"message must be at most {settings.CHAT_MESSAGE_MAX_CHARS} characters.",
        )
    if "\x00" in text or not _encodable(text):
        raise ApiError(400, "invalid_message", "message contains characters that cannot be stored.")
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
            "clientMessageId must be 1 to 64 letters, digits, '-' or '_'.",
        )
    return value


@api_view("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
async def api_not_found(request):
    raise ApiError(404, "not_found", "There is no such API endpoint.")


@api_view("GET", "DELETE")
async def history(request):
    header = request.headers.get("X-Session-Id")
    if header is None:
        raise ApiError(400, "invalid_session_id", "Send the session id in the X-Session-Id header.")
    session_id = session_id_from(header)
    if request.method == "DELETE":
        return await _forget(session_id)
    messages = await turns.in_db_thread(_history_messages, session_id)
    if messages is None:
        raise ApiError(404, "session_not_found", "No conversation is kept under that session id.")
    return JsonResponse({"sessionId": str(session_id), "messages": messages})


async def _forget(session_id):
    """The customer's "forget me": delete the conversation and its cache entry.

    An expired conversation is deleted too: whoever holds the id may always
    have its data removed, rather than wait for chat_purge.
    """
    conversations, _ = await turns.in_db_thread(
        lambda: Conversation.objects.filter(session_id=session_id).forget()
    )
    if not conversations:
        raise ApiError(404, "session_not_found", "No conversation is kept under that session id.")
    return HttpResponse(status=204)


def _history_messages(session_id) -> list[dict] | None:
    conversation = Conversation.objects.active().filter(session_id=session_id).first()
    if conversation is None:
        return None
    return [
        {
            "role": message.role,
            "content": message.content,
            "createdAt": message.created_at.isoformat(),
            "status": message.status,
            "clientMessageId": message.client_message_id or None,
        }
        for message in conversation.messages.all()
    ]


@api_view("GET")
async def healthz(request):
    """For the load balancer: 503 only when the database is down; Redis down is "degraded"."""
    database, cache_state = await turns.in_db_thread(_dependency_states)
    if database != "ok":
        status, code = "down", 503
    else:
        status, code = ("degraded", 200) if cache_state == "down" else ("ok", 200)
    return JsonResponse({"status": status, "database": database, "cache": cache_state}, status=code)


def _dependency_states() -> tuple[str, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception:  # noqa: BLE001 - any failure means the database is not usable
        logger.exception("health check: database down")
        database = "down"
    if not settings.CACHES["default"]["BACKEND"].startswith("django_redis"):
        return database, "local"
    try:
        cache.client.get_client().ping()
        return database, "ok"
    except Exception as error:  # noqa: BLE001
        logger.warning("health check: cache down: %r", error)
        return database, "down"
