"""docs/openapi.yaml is true to the code: the same routes and methods, and real responses fit it.

Responses come from the app through Django's test client (offline responder or
the fake LLM, any database) and are checked against the schema the document
gives for their path, method, status and content type.
"""

import json
import uuid
from datetime import timedelta

import jsonschema_rs
import pytest
import yaml
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from conversations.models import Conversation, Message
from devtools.processes import ROOT
from devtools.sse import parse_events

from .client import read_stream

SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
HTTP_METHODS = ["get", "post", "put", "patch", "delete"]

pytestmark = pytest.mark.django_db(transaction=True)


# --- the document -------------------------------------------------------------


def resolve(node: dict) -> dict:
    """`node`, or what its local $ref points to."""
    while set(node) == {"$ref"}:
        assert node["$ref"].startswith("#/"), f"only local references are used: {node['$ref']}"
        target = SPEC
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def response_spec(path: str, method: str, status: int) -> dict:
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which is not documented"
    return resolve(responses[str(status)])


def schema_validator(schema: dict) -> jsonschema_rs.Draft202012Validator:
    # The schema's own $refs point into the document's components.
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": SPEC["components"]}, validate_formats=True
    )


def assert_fits(schema: dict, instance: object, what: str) -> None:
    errors = [
        f"{error.instance_path}: {error.message}" for error in schema_validator(schema).iter_errors(instance)
    ]
    assert not errors, f"{what} does not fit the documented schema: {errors}\n{json.dumps(instance)[:500]}"


def assert_documented(response, path: str, method: str) -> None:
    """`response` (to `method path`) has a documented status, content type, headers and body."""
    spec = response_spec(path, method, response.status_code)
    what = f"{method.upper()} {path} -> {response.status_code}"
    for name, header in spec.get("headers", {}).items():
        if response.has_header(name):
            assert_fits(resolve(header)["schema"], response[name], f"{what} header {name}")
    content = spec.get("content")
    if not content:
        assert response.content == b"", f"{what} documents no body but has one"
        return
    media_type = response["Content-Type"].split(";")[0].strip()
    assert media_type in content, f"{what} answered {media_type}; documented: {list(content)}"
    if media_type == "application/json":
        assert_fits(content[media_type]["schema"], response.json(), what)


# --- routes -------------------------------------------------------------------


def api_routes() -> list[str]:
    """The concrete paths under /api/ and /healthz the URLconf routes, as OpenAPI paths."""
    found = []

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                if route.startswith("^"):
                    # A regex route is the catch-all that answers not_found for
                    # any other /api/ path; it is documented in prose.
                    assert pattern.callback.__name__ == "api_not_found", route
                    continue
                if route.startswith(("api/", "healthz")):
                    found.append("/" + route.replace("<", "{").replace(">", "}"))

    walk(get_resolver().url_patterns, "")
    return sorted(found)


def test_every_api_route_is_documented_and_every_documented_path_is_routed():
    assert api_routes() == sorted(SPEC["paths"])


@pytest.mark.parametrize("path", sorted(SPEC["paths"]))
def test_each_path_allows_exactly_the_documented_methods(client, path):
    documented = {method for method in HTTP_METHODS if method in SPEC["paths"][path]}
    for method in HTTP_METHODS:
        response = getattr(client, method)(path, headers={"X-Session-Id": str(uuid.uuid4())})
        if method in documented:
            assert response.status_code != 405, f"{method.upper()} {path} is documented but refused"
        else:
            assert response.status_code == 405, f"{method.upper()} {path} is not documented but allowed"
            assert response.json()["error"]["code"] == "method_not_allowed"
            assert_fits({"$ref": "#/components/schemas/Error"}, response.json(), f"{method} {path}")
            allowed = {m.strip().lower() for m in response["Allow"].split(",")}
            assert allowed - {"head", "options"} == documented


def test_any_other_api_path_is_a_documented_not_found(client):
    for path in ["/api/", "/api/chat/", "/api/nothing", "/api/history/extra"]:
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
        assert_fits({"$ref": "#/components/schemas/Error"}, response.json(), path)


def test_every_error_code_the_document_names_is_in_the_error_schema():
    codes = set(SPEC["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    named = set()

    def collect(node):
        if isinstance(node, dict):
            if set(node) >= {"code"} and isinstance(node["code"], dict):
                named.update(node["code"].get("enum", []))
                if "const" in node["code"]:
                    named.add(node["code"]["const"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(SPEC["paths"])
    collect(SPEC["components"]["responses"])
    assert named <= codes
    # These belong to no operation (see info.description).
    assert codes - named == {"not_found", "method_not_allowed", "bad_request", "request_timeout"}


# --- POST /api/chat -----------------------------------------------------------


def chat(client, body, headers=None, raw=False):
    data = body if raw else json.dumps(body)
    response = client.post("/api/chat", data=data, content_type="application/json", headers=headers or {})
    assert_documented(response, "/api/chat", "post")
    return response


def new_session(client) -> str:
    return chat(client, {"message": "Hi"}).json()["sessionId"]


def test_chat_replies_fit_the_document(client):
    first = chat(client, {"message": "What is your return policy?", "clientMessageId": "q1"})
    assert first.status_code == 200 and first.json()["newSession"] is True
    session_id = first.json()["sessionId"]

    later = chat(client, {"message": "Shipping?", "sessionId": session_id, "clientMessageId": None})
    assert later.status_code == 200 and later.json()["newSession"] is False
    repeated = chat(client, {"message": "What is your return policy?", "sessionId": session_id,
                             "clientMessageId": "q1"})
    assert repeated.status_code == 200 and repeated.json()["reply"] == first.json()["reply"]
    explicit_null = chat(client, {"message": "Hi", "sessionId": None})
    assert explicit_null.status_code == 200


def test_streamed_reply_fits_the_document(client):
    response = chat(client, {"message": "Hi"}, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    events = parse_events(read_stream(response))

    assert events[0][0] == "session" and events[-1][0] == "done"
    assert {name for name, _ in events[1:-1]} == {"delta"}
    assert_fits({"$ref": "#/components/schemas/SessionId"}, events[0][1]["sessionId"], "session event")
    assert all(set(data) == {"text"} and isinstance(data["text"], str) for _, data in events[1:-1])
    assert_fits({"$ref": "#/components/schemas/ChatReply"}, events[-1][1], "done event")


def test_streamed_failure_fits_the_document(client, llm):
    llm.control("status", status=500)
    response = chat(client, {"message": "Hi"}, headers={"Accept": "text/event-stream"})
    events = parse_events(read_stream(response))

    assert [name for name, _ in events] == ["session", "error"]
    error_event = resolve(SPEC["components"]["responses"]["LlmUnavailable"])["content"]["application/json"]
    assert_fits(error_event["schema"], events[1][1], "error event")


@pytest.mark.parametrize(
    "body, status, code",
    [
        ("not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        ('"a string"', 400, "invalid_json"),
        (" ", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        ({}, 400, "invalid_message"),
        ({"message": 42}, 400, "invalid_message"),
        ({"message": "  \n "}, 400, "invalid_message"),
        ({"message": "a\x00b"}, 400, "invalid_message"),
        ('{"message": "\\ud800"}', 400, "invalid_message"),
        ({"message": "x" * 4001}, 413, "message_too_long"),
        ({"message": "Hi", "sessionId": "not-a-uuid"}, 400, "invalid_session_id"),
        ({"message": "Hi", "sessionId": str(uuid.uuid4()).upper()}, 400, "invalid_session_id"),
        ({"message": "Hi", "sessionId": 7}, 400, "invalid_session_id"),
        ({"message": "Hi", "clientMessageId": ""}, 400, "invalid_client_message_id"),
        ({"message": "Hi", "clientMessageId": "x" * 65}, 400, "invalid_client_message_id"),
        ({"message": "Hi", "clientMessageId": "a b"}, 400, "invalid_client_message_id"),
    ],
)
def test_chat_input_errors_fit_the_document(client, body, status, code):
    response = chat(client, body, raw=isinstance(body, str | bytes))
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_turn_in_progress_fits_the_document(client):
    conversation = Conversation.objects.create()
    Message.objects.create(conversation=conversation, seq=0, role="user", content="still thinking")
    Message.objects.create(conversation=conversation, seq=1, role="assistant", content="", status="answering",
                           lease_owner=uuid.uuid4(), lease_until=timezone.now() + timedelta(seconds=3))

    response = chat(client, {"message": "Hello?", "sessionId": str(conversation.session_id)})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "turn_in_progress"
    assert response["Retry-After"] == "2"


def test_retry_superseded_fits_the_document(client, llm):
    session_id = new_session(client)
    llm.control("status", status=500)
    chat(client, {"message": "first", "sessionId": session_id, "clientMessageId": "q2"})
    llm.control("ok")
    chat(client, {"message": "second", "sessionId": session_id, "clientMessageId": "q3"})

    response = chat(client, {"message": "first", "sessionId": session_id, "clientMessageId": "q2"})

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "retry_superseded"


@pytest.mark.parametrize(
    "mode, params, status",
    [
        ("status", {"status": 500}, 502),
        ("status", {"status": 429, "retry_after": "7"}, 503),
        ("hang", {}, 504),
    ],
)
def test_llm_unavailable_fits_the_document(client, llm, settings, mode, params, status):
    settings.CHAT_LLM_DEADLINE = 1.0
    llm.control(mode, **params)

    response = chat(client, {"message": "Hi"})

    assert response.status_code == status
    assert response.json()["error"]["code"] == "llm_unavailable"
    assert "sessionId" in response.json()


def test_unsupported_media_type_fits_the_document(client):
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]:
        response = client.post("/api/chat", data='{"message": "Hi"}', content_type=content_type)
        assert_documented(response, "/api/chat", "post")
        assert response.status_code == 415, content_type
        assert response.json()["error"]["code"] == "unsupported_media_type"


def test_body_too_large_fits_the_document(client, settings):
    settings.CHAT_MAX_BODY_BYTES = 100
    response = chat(client, {"message": "x" * 200})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")


@pytest.fixture
def own_counters(settings):
    """Rate and budget counters of this test's own, whatever earlier tests counted."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": str(uuid.uuid4())}
    }


def test_rate_limited_fits_the_document(client, settings, own_counters):
    settings.CHAT_RATE_LIMIT_IP = "1/d"  # a fixed window: "1/m" let the second through at a minute's turn
    assert chat(client, {"message": "Hi"}).status_code == 200

    limited = chat(client, {"message": "Hi"})

    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert int(limited["Retry-After"]) >= 1


@pytest.mark.parametrize("budget", ["CHAT_DAILY_TOKENS_PER_SESSION", "CHAT_DAILY_TOKENS_SITE"])
def test_a_spent_budget_answers_offline_as_documented(client, llm, settings, own_counters, budget):
    setattr(settings, budget, 1)
    session_id = new_session(client)

    response = chat(client, {"message": "More?", "sessionId": session_id})

    assert response.status_code == 200
    assert response.json()["responder"] == "offline"


# --- GET /api/history ---------------------------------------------------------


def history(client, session_id=None):
    headers = {} if session_id is None else {"X-Session-Id": session_id}
    response = client.get("/api/history", headers=headers)
    assert_documented(response, "/api/history", "get")
    return response


def test_history_fits_the_document(client, llm):
    session_id = new_session(client)
    llm.control("status", status=500)
    chat(client, {"message": "Refund?", "sessionId": session_id, "clientMessageId": "q2"})

    response = history(client, session_id)

    assert response.status_code == 200
    assert [m["status"] for m in response.json()["messages"]] == ["complete", "complete", "failed"]
    assert [m["clientMessageId"] for m in response.json()["messages"]] == [None, None, "q2"]


@pytest.mark.parametrize(
    "session_id, status, code",
    [
        (None, 400, "invalid_session_id"),
        ("", 400, "invalid_session_id"),
        ("nope", 400, "invalid_session_id"),
        (str(uuid.uuid4()), 404, "session_not_found"),
    ],
)
def test_history_errors_fit_the_document(client, session_id, status, code):
    response = history(client, session_id)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


# --- DELETE /api/history ------------------------------------------------------


def forget(client, session_id=None):
    headers = {} if session_id is None else {"X-Session-Id": session_id}
    response = client.delete("/api/history", headers=headers)
    assert_documented(response, "/api/history", "delete")
    return response


def test_forgetting_a_conversation_fits_the_document(client):
    session_id = new_session(client)
    assert forget(client, session_id).status_code == 204
    response = forget(client, session_id)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "session_not_found")
    response = forget(client, "nope")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_session_id")


# --- GET /healthz -------------------------------------------------------------


def health(client):
    response = client.get("/healthz")
    assert_documented(response, "/healthz", "get")
    return response


def test_health_fits_the_document(client):
    response = health(client)
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_health_with_the_cache_down_fits_the_document(client, own_redis):
    own_redis.stop()
    response = health(client)
    body = response.json()
    assert (response.status_code, body["status"], body["cache"]) == (200, "degraded", "down")


# --- every operation ----------------------------------------------------------


OPERATIONS = [(path, method) for path, item in sorted(SPEC["paths"].items()) for method in HTTP_METHODS
              if method in item]


@pytest.mark.parametrize("path, method", OPERATIONS)
@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://elsewhere.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}],
)
def test_cross_site_requests_are_refused_as_documented(client, path, method, headers):
    headers = {**headers, "X-Session-Id": str(uuid.uuid4())}
    response = getattr(client, method)(path, data={"message": "Hi"}, content_type="application/json",
                                       headers=headers)
    assert_documented(response, path, method)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "cross_site_request")


@pytest.mark.parametrize("path, method", OPERATIONS)
def test_same_site_requests_are_not_refused(client, path, method):
    headers = {
        "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin", "X-Session-Id": str(uuid.uuid4())
    }
    response = getattr(client, method)(path, data={"message": "Hi"}, content_type="application/json",
                                       headers=headers)
    assert_documented(response, path, method)
    assert response.status_code != 403


# --- POST /api/handoff, GET /api/updates ------------------------------------


def test_handoff_and_updates_fit_the_document(client, settings):
    settings.CHAT_UPDATES_WAIT = 0.1
    settings.MIDDLEWARE = settings.API_MIDDLEWARE
    response = client.post("/api/handoff", data="{}", content_type="application/json")
    assert_documented(response, "/api/handoff", "post")
    session_id = response.json()["sessionId"]
    again = client.post("/api/handoff", data=json.dumps({"sessionId": session_id}), content_type="application/json")
    assert_documented(again, "/api/handoff", "post")
    for data in ["[]", '{"sessionId": "x"}']:
        assert_documented(client.post("/api/handoff", data=data, content_type="application/json"),
                          "/api/handoff", "post")

    for params, headers in [({"after": -1}, session_id), ({"after": 5, "state": "waiting"}, session_id),
                            ({"after": "x"}, session_id), ({"after": 0, "state": "?"}, session_id),
                            ({"after": 0}, str(uuid.uuid4())), ({"after": 0}, "nope")]:
        response = client.get("/api/updates", params, headers={"X-Session-Id": headers})
        assert_documented(response, "/api/updates", "get")


# --- Devices (conversations/devices.py) ----------------------------------------


def test_the_devices_flow_fits_the_document(client, settings, own_counters):
    settings.CHAT_DEVICE_JOIN_FAILURES_IP = "1/h"
    phone = new_session(client)

    def post(path, body=None, session_id=None):
        headers = {} if session_id is None else {"X-Session-Id": session_id}
        response = client.post(path, data=json.dumps(body) if body is not None else b"",
                               content_type="application/json", headers=headers)
        assert_documented(response, path, "post")
        return response

    offered = post("/api/devices/link", session_id=phone)
    assert offered.status_code == 200
    wrong = post("/api/devices/join", {"code": "0000000000"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (404, "join_not_found")
    locked = post("/api/devices/join", {"code": offered.json()["code"]})
    assert (locked.status_code, locked.json()["error"]["code"]) == (429, "join_locked")
    settings.CHAT_DEVICE_JOIN_FAILURES_IP = "0"
    token = offered.json()["link"].split("#join=")[1]
    # The browser of the conversation itself: a check, then a join, and neither uses the link.
    for body in ({"token": token, "check": True}, {"token": token}):
        same = post("/api/devices/join", body, session_id=phone)
        assert same.json() == {"sessionId": phone, "newSession": False, "sameConversation": True}
    would = post("/api/devices/join", {"token": token, "check": True})
    assert would.json() == {"sessionId": None, "newSession": False, "sameConversation": False}
    joined = post("/api/devices/join", {"token": token})
    assert joined.status_code == 200 and joined.json()["newSession"]
    assert post("/api/devices/join", {"code": "ABC"}).json()["error"]["code"] == "invalid_join_code"

    listed = client.get("/api/devices", headers={"X-Session-Id": phone})
    assert_documented(listed, "/api/devices", "get")
    assert len(listed.json()["devices"]) == 2
    ended = post("/api/devices/end", {"device": "this"}, session_id=joined.json()["sessionId"])
    assert ended.status_code == 204
    assert post("/api/devices/end", {"device": "all"}, session_id=phone).status_code == 400


def test_making_offers_counts_against_the_sessions_rate(client, settings, own_counters):
    phone = new_session(client)
    settings.CHAT_RATE_LIMIT_SESSION = "2/d"
    answers = [client.post("/api/devices/link", headers={"X-Session-Id": phone}) for _ in range(3)]
    for answer in answers:
        assert_documented(answer, "/api/devices/link", "post")
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[-1].json()["error"]["code"] == "rate_limited"
