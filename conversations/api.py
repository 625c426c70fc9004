"""The JSON conventions of the API: errors and the decorator every API view wears.

Every error is `{"error": {"code": ..., "message": ...}}` with a 4xx/5xx
status, never an HTML page: a view raises an ApiError (errors.py) and
`api_view` turns it into that answer, in this one place.

Why the API needs no CSRF token: it authenticates by the session id that the
page sends in the body or the X-Session-Id header, never by a cookie, so a
request forged by another site carries no credential. On top of that, a
request a browser marks as cross-site (Sec-Fetch-Site) or that comes from a
foreign Origin is refused, and a body must be declared application/json, which
an HTML form cannot send. The admin keeps Django's CSRF protection.
"""

import functools
import json
import logging
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.views import defaults

from . import payloads
from .errors import ApiError
from .sessions import InvalidSessionId, parse_session_id

logger = logging.getLogger(__name__)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    session_id: uuid.UUID | None = None,
    retry_after: int | None = None,
) -> JsonResponse:
    response = JsonResponse(payloads.error(code, message, session_id), status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def api_view(*methods: str):
    """Allow only `methods` (405 otherwise) and turn ApiError into its JSON response."""

    def decorator(view):
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            try:
                _refuse_unknown_host(request)
                if request.method not in methods:
                    raise ApiError(405, "method_not_allowed", _("Use %(methods)s for this endpoint.") % {"methods": ", ".join(methods)})
                _refuse_cross_site(request)
                response = await view(request, *args, **kwargs)
            except ApiError as error:
                response = error_response(error.status, error.code, error.message,
                                          session_id=error.session_id, retry_after=error.retry_after)
            if response.status_code == 405:
                response["Allow"] = ", ".join(methods)
            # Answers hold a customer's conversation: no cache may keep them.
            response["Cache-Control"] = "no-store"
            return response

        wrapper.csrf_exempt = True  # see the module docstring
        return wrapper

    return decorator


def _refuse_unknown_host(request) -> None:
    # The API's middleware list (chatsite/asgi.py) has no CommonMiddleware, which
    # is what checks the Host for the page; a DisallowedHost is also what Django
    # raises for a Host that is not even a host name.
    try:
        request.get_host()
    except DisallowedHost:
        raise ApiError(400, "bad_request", _("This site does not answer to that Host.")) from None


def _refuse_cross_site(request) -> None:
    origin = request.headers.get("Origin")
    foreign_origin = origin is not None and not _same_origin(origin, request)
    if request.headers.get("Sec-Fetch-Site") == "cross-site" or foreign_origin:
        raise ApiError(403, "cross_site_request", _("Requests from other sites are not accepted."))


def _same_origin(origin: str, request) -> bool:
    if origin == "null":
        return False
    try:
        return urlsplit(origin).netloc == request.get_host()
    except ValueError:  # "http://[", a port that is not a number...: not an origin, so not ours
        return False


def json_body(request) -> dict:
    """The request body as a JSON object, or ApiError (unsupported_media_type, body_too_large, invalid_json).

    The size is checked before the body is parsed, and before it is read when
    the client declares it.
    """
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", _("Send the body as Content-Type: application/json."))
    limit = settings.CHAT_MAX_BODY_BYTES
    too_large = ApiError(413, "body_too_large", _("The request body must be at most %(count)d bytes.") % {"count": limit})
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            raise too_large
    except ValueError:
        pass
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[...]]]]"
        raise ApiError(400, "invalid_json", _("The request body must be a JSON object.")) from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", _("The request body must be a JSON object."))
    return body


def session_id_from(value: object) -> uuid.UUID:
    try:
        return parse_session_id(value)
    except InvalidSessionId:
        raise ApiError(
            400, "invalid_session_id", _("sessionId must be a session id issued by this site.")
        ) from None



def server_error(request):
    """Django's 500 handler: JSON for the API and /healthz, the plain page elsewhere."""
    if request.path.startswith("/api/") or request.path in ("/healthz", "/livez", "/metrics"):
        return error_response(500, "server_error", _("Something went wrong on our side."))
    return defaults.server_error(request)


def bad_request(request, exception=None):
    """Django's 400 handler (e.g. a Host header not in ALLOWED_HOSTS): JSON for the API and /healthz."""
    if request.path.startswith("/api/") or request.path in ("/healthz", "/livez", "/metrics"):
        return error_response(400, "bad_request", _("The request could not be understood."))
    return defaults.bad_request(request, exception)
