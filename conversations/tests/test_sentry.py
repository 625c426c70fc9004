"""Error reports (SENTRY_DSN): the error reaches Sentry, a session id never does.

The view below fails the way a chat turn could, with the session id everywhere
an error report picks things up: the JSON body, the X-Session-Id header, the
query string, a local variable, the exception's message and a log line before
it (a breadcrumb). It is served by the site's own ASGI application (as gunicorn
runs it, so Sentry's ASGI and Django integrations both see the request), and
the report is caught by a transport of the test's own, as the SDK would send it.
"""

import json
import logging
import uuid
from urllib.parse import parse_qs

import pytest
import sentry_sdk
from django.urls import path
from sentry_sdk.transport import Transport

from chatsite import sentry

from .client import asgi_request

logger = logging.getLogger(__name__)


async def failing_view(request):
    session_id = uuid.UUID(json.loads(request.body)["sessionId"])
    logger.info("looking up session %s", session_id)
    cache_key = f"session:{session_id}"
    raise LookupError(f"no conversation for {cache_key} ({session_id.hex})")


urlpatterns = [path("api/fail", failing_view)]


def post(path: str, query: str, body: dict, headers: dict[str, str]) -> int:
    """The request through chatsite.asgi.application, as uvicorn hands it over (over HTTPS: the
    application was built with the settings of production); returns the status."""
    sent = {"host": "localhost", "content-type": "application/json", **headers}
    return asgi_request("POST", path, sent, json.dumps(body).encode(), query=query, scheme="https")[0]


class Captured(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list = []

    def capture_envelope(self, envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict]:
        return [item.get_event() for envelope in self.envelopes for item in envelope.items
                if item.type == "event"]

    def raw(self) -> str:
        return b"".join(envelope.serialize() for envelope in self.envelopes).decode()


@pytest.fixture
def reports():
    """Sentry switched on as settings.py does it, with a transport that keeps what would be sent."""
    transport = Captured()

    def start(**options) -> Captured:
        sentry.init("https://key@sentry.example.invalid/1", environment="test", transport=transport, **options)
        return transport

    yield start
    sentry_sdk.init()  # no DSN: reports are off again for the other tests


# Production collects no request bodies; collecting them proves that a body would be scrubbed too.
@pytest.mark.parametrize("request_bodies", [[], ["incoming_request"]])
@pytest.mark.urls(__name__)
def test_an_error_report_never_carries_a_session_id(reports, request_bodies):
    transport = reports(data_collection={**sentry.DATA_COLLECTION, "http_bodies": request_bodies})
    canary = uuid.uuid4()

    status = post("/api/fail", f"sessionId={canary}",
                  {"message": "Where is my parcel?", "sessionId": str(canary)},
                  {"X-Session-Id": str(canary).upper(), "User-Agent": "test"})
    assert status == 500
    sentry_sdk.flush()

    [event] = transport.events()
    assert event["exception"]["values"][-1]["type"] == "LookupError"
    assert event["exception"]["values"][-1]["value"] == "no conversation for session:[Filtered] ([Filtered])"
    frame = event["exception"]["values"][-1]["stacktrace"]["frames"][-1]
    assert frame["function"] == "failing_view" and frame["vars"]["session_id"] == "UUID('[Filtered]')"
    assert "looking up session [Filtered]" in [
        crumb.get("message") for crumb in event["breadcrumbs"]["values"]
    ]
    assert event["request"]["headers"]["x-session-id"] == "[Filtered]"
    assert event["request"]["headers"]["user-agent"] == "test"  # the rest of the request is there
    assert parse_qs(event["request"]["query_string"]) == {"sessionId": ["[Filtered]"]}
    if request_bodies:
        assert event["request"]["data"] == {"message": "Where is my parcel?", "sessionId": "[Filtered]"}
    else:
        assert "data" not in event["request"]

    sent = transport.raw()
    assert event["event_id"] in sent  # Sentry's own ids go through untouched
    assert "[Filtered]" not in event.get("release", "")  # a commit id is not a session id
    for form in (str(canary), canary.hex, str(canary).upper()):
        assert form not in sent


@pytest.mark.urls(__name__)
def test_without_the_scrubbing_the_same_report_would_carry_it(reports):
    """What the test above guards against: the SDK alone sends the session id."""
    transport = reports(before_send=None, before_breadcrumb=None)
    canary = uuid.uuid4()
    post("/api/fail", "", {"message": "Hi", "sessionId": str(canary)}, {})
    sentry_sdk.flush()
    assert str(canary) in transport.raw()
