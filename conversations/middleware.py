import logging
import re
import time
import uuid

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.middleware.security import SecurityMiddleware
from django.utils import translation
from django.utils.cache import patch_vary_headers

from .logs import request_id

logger = logging.getLogger("chatsite.requests")

REQUEST_ID = re.compile(r"[A-Za-z0-9_.-]{8,64}")

# The ASGI scope's key for when a request arrived, if it waited before Django saw it (a page's
# long poll, views.park_poll): its logged duration counts from then.
ARRIVED = "chat.arrived"


class RequestLogMiddleware:
    """Give each request an id (X-Request-Id: the proxy's if it sent a sane one) and log
    one line when it ends: route, status, duration and, for chat turns, the LLM's latency."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = getattr(request, "scope", {}).get(ARRIVED) or time.monotonic()
        streamed = False
        try:
            response = await self.get_response(request)
            response["X-Request-Id"] = rid
            streamed = _written_later(response)
            match = request.resolver_match
            logger.info(
                "request",
                extra={
                    "method": request.method,
                    "route": match.route if match else None,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - started) * 1000),
                    # A streamed reply is still being written when this is logged;
                    # its turn logs its own line when it ends.
                    "streaming": response.streaming,
                    "llm_ms": getattr(request, "llm_ms", None),
                },
            )
            return response
        finally:
            if not streamed:
                request_id.reset(token)


class ApiSecurityMiddleware(SecurityMiddleware):
    """Django's SecurityMiddleware for the API, run inline on the event loop.

    Its two steps only read settings and headers; run as an old-style
    middleware, each would be a thread hand-off (MiddlewareMixin.__acall__).
    """

    async def __acall__(self, request):
        response = self.process_request(request)  # the HTTPS redirect, if any
        if response is None:
            response = await self.get_response(request)
        return self.process_response(request, response)


def request_language(request) -> str:
    """The language a request is answered in, one of settings.LANGUAGES: the customer's choice
    (the page's `?lang=`, as the embedded chat's loader passes its host page's <html lang>, or the
    X-Chat-Language header the page's scripts send), else Django's own order: the language cookie
    the page's selector sets, then Accept-Language, then LANGUAGE_CODE. "de-DE" counts as "de";
    a language the site does not have is ignored."""
    for chosen in (request.GET.get("lang"), request.headers.get("X-Chat-Language")):
        if chosen and len(chosen) <= 35:
            try:
                return translation.get_supported_language_variant(chosen.strip().lower().replace("_", "-"))
            except LookupError:
                pass
    return translation.get_language_from_request(request)


class LanguageMiddleware:
    """Answer every request (the page, /embed, the API, streamed turns, the long poll) in
    request_language(): it is active while the view runs (translation.get_language()), and while
    a streamed reply is written. Every answer varies with Accept-Language (and the cookie)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self._acall(request)
        language = self._activate(request)
        try:
            return self._answered(language, self.get_response(request))
        finally:
            translation.deactivate()  # not left to the thread's next request or task

    async def _acall(self, request):
        language = self._activate(request)
        streamed = False
        try:
            response = self._answered(language, await self.get_response(request))
            streamed = _written_later(response)
            return response
        finally:
            if not streamed:
                translation.deactivate()

    def _activate(self, request) -> str:
        language = request_language(request)
        translation.activate(language)
        request.LANGUAGE_CODE = language
        return language

    def _answered(self, language: str, response):
        if getattr(response, "varies_by_language", True):
            patch_vary_headers(response, ("Accept-Language", "Cookie"))
            response.headers.setdefault("Content-Language", language)
        return response


def _written_later(response) -> bool:
    """A reply streamed from an async iterator (a streamed turn) is written after the middleware
    has returned, by Django's ASGIHandler, from the same task as the middleware ran in: one task
    per request, whose context ends with it. What a middleware set for the request (its id, its
    language) is left set for that writing instead of being reset, so that the stream's log lines
    and messages keep them. Wrapping the stream in a generator that set them again cost every
    piece of every streamed turn two more generators to pass through (docs/benchmarks.md).
    (Static files stream too, from a sync iterator, and are written the same way.)"""
    return response.streaming and response.is_async


# The admin pages: Django's admin has no inline script or style, so it runs
# under a policy as strict as the chat page's; it shows customer text, and a
# policy keeps any markup that slipped through from running or loading.
ADMIN_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def admin_content_security_policy(get_response):
    def middleware(request):
        response = get_response(request)
        if request.path.startswith("/admin/"):
            response.setdefault("Content-Security-Policy", ADMIN_CONTENT_SECURITY_POLICY)
        return response

    return middleware


# Seconds between two marks of a staff page in the shared state, per process: presence is
# counted in minutes, and a busy admin needs no write per request.
STAFF_MARK_EVERY = 30.0
_staff_marked = 0.0


def staff_presence(get_response):
    """An admin page of a staff member who may answer customers marks "someone is here" for the
    handoff (handoff.staff_seen)."""

    def middleware(request):
        global _staff_marked
        response = get_response(request)
        user = getattr(request, "user", None)
        if (request.path.startswith("/admin/") and time.monotonic() - _staff_marked >= STAFF_MARK_EVERY
                and user is not None and user.is_active and user.has_perm("conversations.reply_conversation")):
            from .handoff import staff_seen  # handoff imports the runtime; this module is imported first

            _staff_marked = time.monotonic()
            staff_seen()
        return response

    return middleware
