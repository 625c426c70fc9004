"""Every header a client controls, through the application as served (chatsite.asgi).

Django's test client goes through the page's full middleware list; the API is
served by its own short list (chatsite/asgi.py), so these tests call the ASGI
application itself, in this process, as uvicorn would. Whatever the headers,
the API and /healthz answer JSON, never a 5xx or an HTML page, and they answer
only to the hosts in ALLOWED_HOSTS.
"""

import json

import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from .client import asgi_request

# The API's handler built again under each test's settings (conftest.py).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rebuilt_api_handler")]


def assert_json_error(status, headers, content, code: str | None = None):
    assert 400 <= status < 500, (status, content[:300])
    assert headers["content-type"] == "application/json", (status, headers, content[:300])
    body = json.loads(content)
    assert body["error"]["code"] and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body


CHAT = json.dumps({"message": "Hi"}).encode()
JSON_TYPE = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/healthz", b""), ("GET", "/api/history", b""), ("POST", "/api/chat", CHAT),
     ("GET", "/api/nope", b"")],
)
@pytest.mark.parametrize("host", ["evil.example", "testserver.evil.example", "[::1", "a b", "testserver:99x"])
def test_a_host_the_site_does_not_answer_to_gets_a_json_400(method, path, body, host):
    status, headers, content = asgi_request(method, path, {"host": host, **JSON_TYPE}, body)
    assert_json_error(status, headers, content, "bad_request")


def test_the_sites_own_hosts_are_answered():
    assert asgi_request("GET", "/healthz")[0] == 200
    assert asgi_request("GET", "/healthz", {"host": "localhost:8000"})[0] == 200


@pytest.mark.parametrize("origin", ["http://[", "http://[::1", "http://testserver:port", "http://a:99999",
                                    "\xff\xfe", "https://%zz", "::::"])
@pytest.mark.parametrize(("method", "path", "body"),
                         [("GET", "/healthz", b""), ("POST", "/api/chat", CHAT), ("GET", "/api/history", b"")])
def test_a_malformed_origin_is_refused_as_cross_site(origin, method, path, body):
    status, headers, content = asgi_request(method, path, {"origin": origin, **JSON_TYPE}, body)
    assert_json_error(status, headers, content, "cross_site_request")


def test_an_origin_sent_twice_is_one_foreign_origin():
    status, headers, content = asgi_request(
        "POST", "/api/chat", [("origin", "http://testserver"), ("origin", "https://evil.example"),
                              ("content-type", "application/json")], CHAT)
    assert_json_error(status, headers, content, "cross_site_request")


@pytest.mark.parametrize("forwarded", ["", "garbage", "1.2.3.4:5678", "[2001:db8::1]:443", ",,,",
                                       "300.1.1.1, ::ffff:999.1.1.1", "x" * 4000])
def test_any_forwarded_for_from_a_trusted_proxy_is_survived(settings, forwarded):
    settings.CHAT_TRUSTED_PROXIES = ["127.0.0.0/8"]
    settings.CHAT_RATE_LIMIT_IP = "100/m"
    status, _, content = asgi_request("POST", "/api/chat", {"x-forwarded-for": forwarded, **JSON_TYPE}, CHAT)
    assert status == 200, content


# --- hypothesis: any value of any header the API reads ------------------------

# What HTTP/1.1 can carry in a header value (h11 refuses the rest before the application).
header_values = st.one_of(
    st.binary(max_size=80).map(lambda raw: bytes(b for b in raw if b >= 0x20 and b != 0x7F)),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
    .map(lambda text: text.encode("latin-1")),
    st.sampled_from([b"http://[", b"null", b"http://testserver", b"testserver", b"*/*", b"text/event-stream",
                     b"application/json; charset=\xff", b"application/json; boundary=\"", b"[::1",
                     b"00000000-0000-4000-8000-000000000000", b"1.2.3.4, ::1, fe80::1%eth0"]),
)
READ_BY_THE_API = ["origin", "host", "accept", "x-request-id", "x-forwarded-for", "content-type",
                   "x-session-id", "sec-fetch-site", "content-length", "x-forwarded-proto"]


@hypothesis_settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    request=st.sampled_from([("POST", "/api/chat", CHAT), ("GET", "/api/history", b""),
                             ("DELETE", "/api/history", b""), ("GET", "/healthz", b""),
                             ("PUT", "/api/elsewhere", CHAT)]),
    fuzzed=st.dictionaries(st.sampled_from(READ_BY_THE_API), header_values, max_size=5),
)
@example(request=("GET", "/healthz", b""), fuzzed={"origin": b"http://["})
@example(request=("POST", "/api/chat", CHAT), fuzzed={"host": b"evil.example"})
def test_any_value_of_any_header_the_api_reads_gets_json(settings, request, fuzzed):
    settings.CHAT_TRUSTED_PROXIES = ["127.0.0.0/8"]
    method, path, body = request
    headers = {"content-type": b"application/json", **fuzzed}
    status, response_headers, content = asgi_request(method, path, headers, body)
    assert status < 500, (status, content[:300])
    if status == 200 and response_headers.get("content-type", "").startswith("text/event-stream"):
        return
    assert response_headers["content-type"] == "application/json", (status, response_headers, content[:300])
    json.loads(content)
