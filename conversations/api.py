"""The JSON conventions of the API: errors and the decorator every API view wears.

Every error is `{"error": {"code": ..., "message": ...}}` with a 4xx/5xx
status, never an HTML page.
"""

import functools
import json
import uuid

from django.http import JsonResponse
from django.views import defaults

from .sessions import InvalidSessionId, parse_session_id


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        session_id: uuid.UUID | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.session_id = session_id
        self.retry_after = retry_after

    def response(self) -> JsonResponse:
        return error_response(
            self.status, self.code, self.message, session_id=self.session_id, retry_after=self.retry_after
        )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    session_id: uuid.UUID | None = None,
    retry_after: int | None = None,
) -> JsonResponse:
    payload: dict = {"error": {"code": code, "message": message}}
    if session_id is not None:
        payload["sessionId"] = str(session_id)
    response = JsonResponse(payload, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def api_view(*methods: str):
    """Allow only `methods` (405 otherwise) and turn ApiError into its JSON response."""

    def decorator(view):
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                response = error_response(
                    405, "method_not_allowed", f"Use {' or '.join(methods)} for this endpoint."
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return await view(request, *args, **kwargs)
            except ApiError as error:
                return error.response()

        # The API authenticates by the session id in the body or a header, never
        # by a cookie, so a forged cross-site request carries no credential.
        wrapper.csrf_exempt = True
        return wrapper

    return decorator


def json_body(request) -> dict:
    """The request body as a JSON object, or ApiError invalid_json."""
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def session_id_from(value: object) -> uuid.UUID:
    try:
        return parse_session_id(value)
    except InvalidSessionId:
        raise ApiError(
            400, "invalid_session_id", "sessionId must be a session id issued by this site."
        ) from None



def server_error(request):
    """Django's 500 handler: JSON under /api/, the plain page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(500, "server_error", "Something went wrong on our side.")
    return defaults.server_error(request)
