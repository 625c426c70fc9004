"""Whatever a client sends, every endpoint answers JSON: never a 5xx, never an HTML page.

Hypothesis throws arbitrary bodies, headers and session ids at POST /api/chat,
GET and DELETE /api/history and GET /healthz, through Django's test client with
the offline responder (no OPENAI_API_KEY) on SQLite or PostgreSQL. The views do
their database work in worker threads (turns.in_db_thread), hence the
transactional database.
"""

import json
import uuid

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from .client import read_stream

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ = hypothesis_settings(
    max_examples=150,
    deadline=None,
    # The fixtures (database, settings) are the same for every example.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def _offline(settings):
    # (conftest turns the rate limits off: all these requests come from one address.)
    settings.OPENAI_API_KEY = ""


# --- what a client might send -------------------------------------------------

# Any character, and especially the ones that break storage and encoders.
awkward_text = st.text(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),  # lone surrogates
        st.sampled_from(["\x00", "\u2028", "\ufeff", "\U0001f600", "\\", '"', "<", "\r", "\n"]),
    ),
    max_size=50,
)
huge_text = st.integers(min_value=3_000, max_value=100_000).map(lambda n: "x" * n)
uuid_like = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: f"{{{u}}}"),
    st.uuids().map(lambda u: f" {u}"),
    st.just(str(uuid.UUID(int=0))),
)
session_ids = st.one_of(uuid_like, awkward_text)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | awkward_text | huge_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(awkward_text, children, max_size=5),
    max_leaves=20,
)
chat_objects = st.fixed_dictionaries(
    {},
    optional={
        "message": st.one_of(awkward_text, huge_text, json_values),
        "sessionId": st.one_of(session_ids, json_values),
        "clientMessageId": st.one_of(st.from_regex(r"[A-Za-z0-9_-]{0,70}", fullmatch=True), json_values),
    },
)


def encoded(values):
    """`values` as JSON bytes: lone surrogates either as \\ud800 escapes (valid JSON
    text) or as raw surrogate bytes (not UTF-8 at all)."""
    return st.tuples(values, st.booleans()).map(
        lambda drawn: json.dumps(drawn[0]).encode() if drawn[1]
        else json.dumps(drawn[0], ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


plausible_chat_objects = st.fixed_dictionaries(
    {"message": st.one_of(st.sampled_from(["Hi", "What is your return policy?", " Refund? "]), awkward_text)},
    optional={
        "sessionId": st.one_of(st.none(), session_ids),
        "clientMessageId": st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)),
    },
)
chat_bodies = st.one_of(
    encoded(plausible_chat_objects),
    encoded(chat_objects),
    encoded(json_values),
    st.binary(max_size=200),
    st.integers(min_value=3_000, max_value=200_000).map(lambda n: json.dumps({"message": "x" * n}).encode()),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b"", b"{", b"null", b"NaN", b'{"message": "Hi"', b"\xef\xbb\xbf{}"]),
)

# Header values as HTTP can carry them: latin-1, no control characters.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
)
# A session id as a header can carry it (no line breaks).
header_session_ids = session_ids.filter(lambda value: "\r" not in value and "\n" not in value)
content_types = st.one_of(
    st.sampled_from([
        "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
        "application/json; charset=nonsense", "APPLICATION/JSON", "text/plain", "text/html",
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/octet-stream",
    ]),
    header_text,
)
accepts = st.one_of(
    st.sampled_from(["application/json", "text/event-stream", "text/html", "*/*", "text/event-stream, */*"]),
    header_text,
)
origins = st.one_of(
    st.sampled_from(["http://testserver", "https://testserver", "null", "https://elsewhere.example", ""]),
    header_text,
)


hosts = st.one_of(
    st.sampled_from(["testserver", "evil.example", "127.0.0.1:8000", "testserver:99999", "[::1"]), header_text
)
fetch_sites = st.one_of(st.sampled_from(["same-origin", "same-site", "cross-site", "none"]), header_text)


def headers_with(any_host=True, **extra):
    """Arbitrary headers in a third of the examples; the rest get past the cross-site check."""
    fuzzed = st.fixed_dictionaries(
        {},
        optional={
            "Accept": accepts,
            "Origin": origins,
            "Sec-Fetch-Site": fetch_sites,
            **({"Host": hosts} if any_host else {}),
            **extra,
        },
    )
    same_site = st.fixed_dictionaries(
        {}, optional={"Accept": accepts, "Origin": st.just("http://testserver"), **extra}
    )
    return st.one_of(same_site, st.fixed_dictionaries({}, optional=extra), fuzzed)


# --- what every answer must be ------------------------------------------------


def assert_json_answer(response, record: bool = True) -> None:
    status = response.status_code
    content_type = response.get("Content-Type", "")
    if record:
        event(f"status {status}")  # see --hypothesis-show-statistics
    assert status < 500, f"{status}: {response.content[:300]!r}"
    if status == 204:
        assert response.content == b""
        return
    if content_type.startswith("text/event-stream"):
        assert status == 200
        events = [block for block in read_stream(response).split("\n\n") if block]
        assert events[0].startswith("event: session\n")
        assert events[-1].startswith(("event: done\n", "event: error\n"))
        return
    assert content_type == "application/json", f"{status} as {content_type}: {response.content[:300]!r}"
    body = json.loads(response.content)
    if status >= 400:
        if record:
            event(f"code {body['error']['code'] if isinstance(body, dict) and 'error' in body else None}")
        assert isinstance(body, dict) and set(body) <= {"error", "sessionId"}, body
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


# --- the endpoints ------------------------------------------------------------


@FUZZ
@given(
    body=chat_bodies,
    content_type=st.one_of(
        st.just("application/json"), st.just("application/json; charset=utf-8"), content_types
    ),
    headers=headers_with(),
)
@example(body=b'{"message": "Hi", "sessionId": "\\ud800"}', content_type="application/json", headers={})
@example(body=b'{"message": "a\\u0000b"}', content_type="application/json", headers={})
@example(body=b'{"message": "Hi"}', content_type="application/json", headers={"Accept": "text/event-stream"})
def test_chat_answers_any_body_and_headers_with_json(body, content_type, headers):
    response = Client().generic("POST", "/api/chat", data=body, content_type=content_type, headers=headers)
    assert_json_answer(response)


@FUZZ
@given(
    message=st.one_of(awkward_text, st.just("What is your return policy?")),
    session_id=session_ids,
    headers=headers_with(),
)
def test_chat_answers_any_session_id_with_json(message, session_id, headers):
    body = json.dumps({"message": message, "sessionId": session_id}).encode()
    response = Client().post("/api/chat", data=body, content_type="application/json", headers=headers)
    assert_json_answer(response)
    if response.status_code == 200 and response["Content-Type"] == "application/json":
        # A client's id is never adopted: it is the id of a conversation the site made.
        assert response.json()["sessionId"] != session_id


@FUZZ
@given(
    method=st.sampled_from(["GET", "DELETE"]),
    session_id=st.one_of(st.none(), header_session_ids, header_text),
    headers=headers_with(),
    body=st.one_of(st.just(b""), chat_bodies),
)
def test_history_answers_any_session_id_and_headers_with_json(method, session_id, headers, body):
    if session_id is not None:
        headers = {**headers, "X-Session-Id": session_id}
    response = Client().generic(method, "/api/history", data=body, content_type="application/json",
                                headers=headers)
    assert_json_answer(response)


@hypothesis_settings(FUZZ, max_examples=40)
@given(method=st.sampled_from(["GET", "DELETE"]), headers=headers_with())
def test_history_of_a_real_session_answers_with_json(method, headers):
    client = Client()
    started = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json")
    session_id = started.json()["sessionId"]
    response = client.generic(method, "/api/history", headers={**headers, "X-Session-Id": session_id})
    assert_json_answer(response)


@hypothesis_settings(FUZZ, max_examples=30)
@given(
    method=st.one_of(
        st.just("GET"), st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    ),
    # The Host header is left out here: see test_health_answers_a_foreign_host_with_json.
    headers=headers_with(any_host=False, **{"X-Session-Id": header_session_ids}),
    body=st.one_of(st.just(b""), chat_bodies),
)
def test_health_answers_any_request_with_json(method, headers, body):
    response = Client().generic(
        method, "/healthz", data=body, content_type="application/json", headers=headers
    )
    if method == "HEAD":
        assert response.status_code < 500 and response.content == b""
        return
    assert_json_answer(response)


@hypothesis_settings(FUZZ, max_examples=30)
@given(
    path=st.one_of(
        st.sampled_from(["/api/", "/api/chat/", "/api/history/", "/api/chat/x", "/api//chat"]),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#%"), max_size=30)
        .map(lambda tail: "/api/" + tail),
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    headers=headers_with(),
)
def test_any_other_api_request_answers_with_json(path, method, headers):
    response = Client().generic(method, path, data=b'{"message": "Hi"}', content_type="application/json",
                                headers=headers)
    assert_json_answer(response)
    # 400 is bad_request, for a Host that is not the site's.
    assert response.status_code in {400, 403, 404, 405} or path in {"/api/chat", "/api/history"}


@pytest.mark.parametrize("depth", [1_000, 30_000])
def test_chat_answers_deeply_nested_json_with_a_400(depth):
    body = b"[" * depth + b"]" * depth  # under the body cap, over Python's recursion limit
    response = Client().post("/api/chat", data=body, content_type="application/json")
    assert_json_answer(response, record=False)
    assert response.json()["error"]["code"] == "invalid_json"


def test_health_answers_a_foreign_host_with_json():
    # A load balancer may well ask by the machine's address rather than the site's name.
    response = Client().get("/healthz", headers={"Host": "10.0.0.7:8000"})
    assert_json_answer(response, record=False)
