"""The ASGI application: gunicorn's uvicorn workers serve it (see the Procfile).

The JSON API (/api/ and /healthz) is served by a second Django handler whose
middleware is only what the API needs, all of it async. Django runs each step
of a sync-only middleware (all of the stock ones: sessions, auth, messages,
CSRF, WhiteNoise...) through a thread hand-off; the page and the admin need
them, a chat turn does not, and under load those hand-offs were a large part
of a turn's CPU (docs/benchmarks.md).
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

site = get_asgi_application()

from conversations.api import error_response  # noqa: E402 - once the apps are loaded

logger = logging.getLogger(__name__)


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

# Django wraps each request in a ThreadSensitiveContext of its own, which starts
# a thread for the request's first thread-sensitive sync call (Django's own
# request_started receivers and response.close()) and joins it at the end: with
# 1,000 turns waiting on the LLM, 1,000 threads in a worker, and their hand-offs
# were what a turn's CPU grew by under held load (docs/benchmarks.md). The API
# runs no sync code of its own there (its middleware is async, its database work
# runs in conversations/db.py's threads), so all its requests share this one
# thread; Django's context, inside ours, then makes none.
api_sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-sync")


async def _api(scope, receive, send):
    async with ThreadSensitiveContext(executor=api_sync_thread):
        await api(scope, receive, send)


# Chat turns this worker is serving now (POST /api/chat, from the request to
# the last byte of the reply, streamed or not).
turns_in_flight = 0


async def application(scope, receive, send):
    path = scope.get("path", "")
    if scope["type"] == "http" and (path.startswith("/api/") or path == "/healthz"):
        if path == "/api/chat" and scope["method"] == "POST":
            return await _turn(scope, receive, send)
        return await _api(scope, receive, send)
    return await site(scope, receive, send)


async def _turn(scope, receive, send):
    """Serve a chat turn, unless this worker has CHAT_MAX_TURNS_IN_FLIGHT already.

    Offered more turns than it can serve, a worker would take them all: each
    would wait longer for the CPU while no more got served, until clients gave
    up on turns the worker was still paying for. Past the cap it refuses a turn
    at once, before reading it (503 "overloaded" with Retry-After, about what a
    bare request costs), so the turns it took keep a bounded wait and a client
    knows to come back (docs/benchmarks.md, "Offered more than the machine serves").
    """
    global turns_in_flight
    if settings.CHAT_MAX_TURNS_IN_FLIGHT and turns_in_flight >= settings.CHAT_MAX_TURNS_IN_FLIGHT:
        logger.warning("turn refused: %d turns in flight in this worker", turns_in_flight)
        response = error_response(
            503, "overloaded", "The assistant is busy right now; try again in a few seconds.",
            retry_after=settings.CHAT_OVERLOADED_RETRY_AFTER,
        )
        await api.send_response(response, send)
        return
    turns_in_flight += 1
    try:
        await _api(scope, receive, send)
    finally:
        turns_in_flight -= 1
