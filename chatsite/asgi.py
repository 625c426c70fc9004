"""The ASGI application: gunicorn's uvicorn workers serve it (see the Procfile).

The JSON API (/api/ and /healthz) is served by a second Django handler whose
middleware is only what the API needs, all of it async. Django runs each step
of a sync-only middleware (all of the stock ones: sessions, auth, messages,
CSRF, WhiteNoise...) through a thread hand-off; the page and the admin need
them, a chat turn does not, and under load those hand-offs were a large part
of a turn's CPU (docs/benchmarks.md).

Request bodies are capped here, below Django, because Django's ASGIHandler
reads the whole body (into a file on disk past 2.5 MB) before any middleware or
view runs: a 300 MB body would be spooled in full before a view could refuse
it. So a body declared larger than the cap (Content-Length) is answered 413 at
once, without reading a byte of it, and the connection is closed; a body sent
without a length (chunked) is read only up to the cap, then answered 413. The
cap is CHAT_MAX_BODY_BYTES on the API (a JSON error body_too_large) and Django's
DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) on the page and the admin.
"""

import asyncio
import io
import json
import logging
import os
from collections import Counter
from types import SimpleNamespace

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.utils import translation
from django.utils.translation import gettext, gettext_noop

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# With DEBUG off, unfit settings stop the worker with one line saying what to set. Exit
# status 3 is gunicorn's "worker failed to boot": gunicorn stops instead of starting it again.
from chatsite import collector  # noqa: E402
from chatsite.admission import Admission  # noqa: E402
from chatsite.loop_executor import OnTheLoop  # noqa: E402
from chatsite.startup import refuse_to_run_wrong  # noqa: E402

refuse_to_run_wrong(status=3)

site = get_asgi_application()

logger = logging.getLogger("chatsite.requests")


class ApiHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        # Django builds the chain from settings.MIDDLEWARE; this handler's chain
        # is settings.API_MIDDLEWARE, swapped in only while it is built.
        site_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = site_middleware


api = ApiHandler()

from conversations import health, limits, metrics, payloads, runtime, views  # noqa: E402 - needs the apps loaded above
from conversations.middleware import request_language  # noqa: E402

# Django wraps each request in a ThreadSensitiveContext of its own, which starts
# a thread for the request's first thread-sensitive sync call (Django's own
# request_started receivers and response.close()) and joins it at the end: with
# 1,000 turns waiting on the LLM, 1,000 threads in a worker, and their hand-offs
# were what a turn's CPU grew by under held load (docs/benchmarks.md). The API
# runs no sync code of its own there (its middleware is async, its database work
# runs in conversations/db.py's threads), so those calls run on the event loop's
# thread itself (chatsite/loop_executor.py); Django's context, inside ours, then
# makes no thread.
on_the_loop = OnTheLoop()


async def _api(scope, receive, send):
    async with ThreadSensitiveContext(executor=on_the_loop):
        await api(scope, receive, send)

# Places for chat turns (POST /api/chat, from the request to the last byte of the reply,
# streamed or not) in this worker: chatsite/admission.py.
turns = Admission()

# Held requests (long polls and streamed turns) this worker is serving now: in
# all, and by client address (limits.address_group).
held_in_flight = 0
held_by_address: Counter[str] = Counter()


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["type"] != "http":
        return await site(scope, receive, send)
    path = scope.get("path", "")
    is_api = path.startswith("/api/") or path in ("/healthz", "/livez", "/metrics")
    is_turn = path == "/api/chat" and scope.get("method") == "POST"
    limit = settings.CHAT_MAX_BODY_BYTES if is_api else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is None:
        return await _admit(scope, receive, send, is_api, is_turn)

    declared = _declared_length(scope)
    if declared == "invalid":
        return await _refuse(send, scope, is_api, 400, "bad_request", gettext_noop("The Content-Length header is not valid."))
    if declared is not None and declared > limit:
        return await _refuse(send, scope, is_api, 413, "body_too_large",
                             gettext_noop("The request body must be at most %(limit)d bytes."), limit=limit)
    if declared is not None and not is_turn:
        # The server delivers no more than the declared length.
        return await _admit(scope, receive, send, is_api, is_turn)

    # Read the body here, up to the cap: one sent without a length is cut off there, and a turn
    # takes its place under the caps only once its question is all here (a body that never
    # ends holds none). Django gets what was read.
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return await _refuse(send, scope, is_api, 413, "body_too_large",
                                 gettext_noop("The request body must be at most %(limit)d bytes."), limit=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return await _admit(scope, _replay({"type": "http.request", "body": b"".join(chunks), "more_body": False}, receive),
                        send, is_api, is_turn)


async def _admit(scope, receive, send, is_api: bool, is_turn: bool):
    """Serve the request, or refuse it at once if it is past a cap on what a worker holds.

    Held requests (long polls and streamed turns) are counted against CHAT_MAX_HELD and
    CHAT_MAX_HELD_PER_ADDRESS: each holds a connection, its memory and a place among the
    waiting pages' watcher's waiters for up to CHAT_UPDATES_WAIT (a poll) or CHAT_LLM_DEADLINE
    (a stream). Uncounted, one address could hold thousands and slow the worker's every request
    (/healthz too); past a cap a request is refused at once with Retry-After, and the page's
    long poll waits before it asks again.

    A chat turn takes a place among the turns the worker serves at once (chatsite/admission.py):
    as many as its event loop keeps up with, at most CHAT_MAX_TURNS_IN_FLIGHT. Offered more
    turns than it can serve, a worker that took them all would serve each slower while no more got
    served, until clients gave up on turns it was still paying for. A turn that finds no place
    waits for one, once its body (at most CHAT_MAX_BODY_BYTES) is here and before Django or the
    database sees it, up to CHAT_TURN_QUEUE_SECONDS; then it is refused (503 "overloaded" with
    Retry-After, about what a bare request costs), and a client knows to come back
    (docs/benchmarks.md, "Offered more than the machine serves").

    The counts are kept here, around the one call, not by wrapping the handler for each
    request: a held request keeps whatever it is served through alive while it waits, and ten
    thousand waiting pages keep ten thousand of it (docs/benchmarks.md, "Memory of a waiting page").
    """
    global held_in_flight
    held = _is_held(scope)
    if held:
        address = _client_address(scope)
        if settings.CHAT_MAX_HELD_PER_ADDRESS and held_by_address[address] >= settings.CHAT_MAX_HELD_PER_ADDRESS:
            metrics.REFUSALS.labels("too_many_connections").inc()
            return await _refuse(send, scope, True, 429, "too_many_connections",
                                 gettext_noop("Too many open connections from your address; try again in a few "
                                              "seconds."),
                                 retry_after=settings.CHAT_OVERLOADED_RETRY_AFTER)
        if settings.CHAT_MAX_HELD and held_in_flight >= settings.CHAT_MAX_HELD:
            metrics.REFUSALS.labels("overloaded").inc()
            return await _refuse(send, scope, True, 503, "overloaded",
                                 gettext_noop("The site is busy right now; try again in a few seconds."),
                                 retry_after=settings.CHAT_OVERLOADED_RETRY_AFTER)
    if held:
        gauge = metrics.HELD.labels("long_poll" if scope.get("path") == "/api/updates" else "stream")
        gauge.inc()
        held_in_flight += 1
        held_by_address[address] += 1
    placed = False
    try:
        if is_turn:
            placed = await turns.enter()
            if not placed:
                metrics.REFUSALS.labels("overloaded").inc()
                return await _refuse(send, scope, True, 503, "overloaded",
                                     gettext_noop("The assistant is busy right now; try again in a few seconds."),
                                     retry_after=settings.CHAT_OVERLOADED_RETRY_AFTER)
        if held and scope.get("path") == "/api/updates":  # a page's long poll waits below Django
            # (views.park_poll), and goes on to Django to be answered
            message = await views.park_poll(scope, receive)
            if message is None:
                return None
            receive = _replay(message, receive)
        return await (_api if is_api else site)(scope, *_answered_quietly(receive, send))
    finally:
        if placed:
            turns.leave()
        if held:
            gauge.dec()
            held_in_flight -= 1
            held_by_address[address] -= 1
            if not held_by_address[address]:
                del held_by_address[address]


async def _lifespan(receive, send):
    """A worker's start and stop (the ASGI lifespan, which Django does not speak): its runtime
    (conversations/runtime.py): the turn store, the Redis gateway, the LLM client, the lease
    keeper and the waiting pages' watcher; its garbage collector's clock (collector.py), its
    places for turns (admission.py) and its health report (conversations/health.py)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            collecting = collector.start()
            turns.start()
            try:
                await runtime.start()
            except Exception:  # noqa: BLE001 - the embedded runtime (the ORM in threads) serves instead
                logger.exception("the worker's runtime could not be opened; turns run on the ORM")
            checking = health.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await turns.stop()
            if checking is not None:  # stopped before the store it asks is closed
                checking.cancel()
                await asyncio.gather(checking, return_exceptions=True)
            await runtime.stop()
            collecting.cancel()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _is_held(scope) -> bool:
    """A request that may hold its connection for long: the long poll, or a streamed turn."""
    method, path = scope.get("method"), scope.get("path", "")
    if method == "GET" and path == "/api/updates":
        return True
    return method == "POST" and path == "/api/chat" and any(
        name == b"accept" and b"text/event-stream" in value for name, value in scope.get("headers", []))


def _client_address(scope) -> str:
    """The address limits.py counts the client by, behind a trusted proxy too."""
    remote = (scope.get("client") or ("",))[0]
    forwarded = b",".join(value for name, value in scope.get("headers", []) if name == b"x-forwarded-for")
    peer = SimpleNamespace(META={"REMOTE_ADDR": remote}, headers={"X-Forwarded-For": forwarded.decode("latin-1")})
    return limits.address_group(limits.client_ip(peer))


def _declared_length(scope) -> int | None | str:
    """The Content-Length the client declared: None if none, "invalid" if it is not one number."""
    values = {value for name, value in scope.get("headers", []) if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        return "invalid"
    value = values.pop().strip()
    if not value.isdigit() or len(value) > 18:
        return "invalid"
    return int(value)


def _answered_quietly(receive, send):
    """`receive` and `send` for Django, whose listener for the client leaving hears nothing once the
    response is all sent.

    Django's ASGIHandler runs the view beside a task that waits for `http.disconnect`, and the
    server says so as soon as the response is complete, not only when the client leaves. The
    listener then ends in a RequestAborted that Django catches and drops; but the task keeps it,
    its traceback keeps the handler's frame, and that frame keeps the task: a reference cycle
    that held each request's whole graph (its request and response, the connection's objects,
    about a hundred objects a turn) until the garbage collector found it, in memory and in the
    collector's work meanwhile (docs/benchmarks.md, "A request freed when it ends"). Told nothing,
    the listener is cancelled by Django instead, and the request is freed when it ends. A client
    leaving before the end is reported as before."""
    answered = False

    async def sent(message):
        nonlocal answered
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered = True

    async def received():
        message = await receive()
        if answered and message["type"] == "http.disconnect":
            await asyncio.get_running_loop().create_future()  # until Django cancels its listener
        return message

    return received, sent


def _replay(message: dict, receive):
    """A `receive` that gives the request's message already read, then whatever the server says next."""
    pending = [message]

    async def replayed():
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def _refuse(send, scope, is_api: bool, status: int, code: str, message: str,
                  retry_after: int | None = None, **params) -> None:
    """Answer before Django sees the request, and close the connection: what is left of the body is not read.
    The message in the request's language, by the one rule the site's views follow (request_language)."""
    with translation.override(request_language(ASGIRequest(scope, io.BytesIO()))):
        message = gettext(message) % params
    if is_api:
        content_type = b"application/json"
        body = json.dumps(payloads.error(code, message)).encode()
    else:
        content_type, body = b"text/plain; charset=utf-8", message.encode()
    logger.warning("request refused before it was read",
                   extra={"method": scope.get("method"), "path": scope.get("path"), "status": status})
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            *([(b"retry-after", str(retry_after).encode())] if retry_after is not None else []),
        ],
    })
    await send({"type": "http.response.body", "body": body})
