"""The site as served (the Procfile's gunicorn and uvicorn worker), over raw sockets:
oversized bodies are refused before they are read, and idle connections are kept
open longer than a load balancer keeps its own (docs/deploy.md).

The in-process tests call chatsite.asgi's application directly, to see what it read.
"""

import asyncio
import gc
import json
import select
import socket
import time

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIRequest

from .client import RECEIVED, SiteClient, asgi_request, asgi_scope

# The API's handler built again under each test's settings (conftest.py).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rebuilt_api_handler")]


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: (status, headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    chunked = headers.get("transfer-encoding") == "chunked"
    while (not body.endswith(b"0\r\n\r\n") if chunked else len(body) < int(headers.get("content-length", 0))):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    if chunked:
        body = _dechunked(body)
    return int(status_line.split()[1]), headers, body


def _dechunked(data: bytes) -> bytes:
    body = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        if int(size, 16) == 0:
            return body
        body, data = body + data[:int(size, 16)], data[int(size, 16) + 2:]


def connect(site) -> socket.socket:
    return socket.create_connection(("127.0.0.1", site.port), timeout=10)


# --- bodies -------------------------------------------------------------------


def test_a_declared_length_over_the_cap_is_refused_at_once(live_site):
    with connect(live_site) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n{\"message\": \"")
        started = time.monotonic()
        status, headers, body = read_response(sock, timeout=5)
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_read_only_up_to_the_cap(live_site):
    """A body without a length is answered 413 once it passes the cap (64 KiB), long before
    its end; the server closes the connection rather than read the rest."""
    chunk = b"x" * 65536
    sent = 0
    with connect(live_site) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 50 * 2**20:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server: what it has answered is waiting to be read
        status, _, body = read_response(sock, timeout=5)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert sent < 50 * 2**20  # it did not wait for the end of a body that has none


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n",  # a NUL in a header
    b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"GET /api/history HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",  # a header without its colon
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,  # TLS spoken to the plain port
])
def test_a_request_that_is_not_http_gets_the_apis_json_error(live_site, request_bytes):
    """What the HTTP parser refuses never reaches Django: the worker answers it, in the API's
    shape (uvicorn's own answer was a plain-text 400), and closes the connection."""
    with connect(live_site) as sock:
        sock.sendall(request_bytes)
        status, headers, body = read_response(sock, timeout=5)
        sock.settimeout(5)
        assert sock.recv(1) == b""  # closed
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert SiteClient(live_site).health().status == 200  # the worker serves on

def test_the_page_and_admin_refuse_bodies_over_djangos_cap_too(live_site):
    with connect(live_site) as sock:
        sock.sendall(b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 300000000\r\n\r\n")
        status, headers, _ = read_response(sock, timeout=5)
    assert status == 413
    assert headers["content-type"].startswith("text/plain")


def test_a_declared_length_over_the_cap_is_not_read(settings):
    status, _, content = asgi_request("POST", "/api/chat", {"content-type": "application/json",
                                                            "content-length": "1000000000"}, b"{}")
    assert (status, json.loads(content)["error"]["code"]) == (413, "body_too_large")
    assert RECEIVED == []


@pytest.mark.parametrize("headers, message", [
    ({"accept-language": "de-DE,de;q=0.9"}, "Der Anfragetext darf höchstens"),
    ({"x-chat-language": "fr", "accept-language": "de"}, "Le corps de la requête doit faire au plus"),
    ({}, "The request body must be at most"),
])
def test_a_refusal_before_django_reads_the_request_speaks_its_language(headers, message):
    status, response_headers, content = asgi_request("POST", "/api/chat", {
        "content-type": "application/json", "content-length": "1000000000", **headers}, b"{}")
    assert status == 413 and json.loads(content)["error"]["message"].startswith(message)


def test_an_undeclared_body_is_read_only_up_to_the_cap(settings):
    settings.CHAT_MAX_BODY_BYTES = 1000
    chunks = [b"x" * 300] * 100
    status, _, content = asgi_request("POST", "/api/chat", {"content-type": "application/json"}, chunks=chunks)
    assert (status, json.loads(content)["error"]["code"]) == (413, "body_too_large")
    assert len(RECEIVED) == 4  # 1,200 bytes: over the cap, and no more


def test_an_undeclared_body_under_the_cap_is_answered(settings):
    body = json.dumps({"message": "Hi"}).encode()
    status, _, content = asgi_request("POST", "/api/chat", {"content-type": "application/json"},
                                      chunks=[body[:5], body[5:], b""])
    assert status == 200, content
    assert json.loads(content)["reply"]


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b"99999999999999999999999"])
def test_a_content_length_that_is_not_a_number_gets_a_json_400(length):
    status, headers, content = asgi_request("POST", "/api/chat", {"content-type": "application/json",
                                                                  "content-length": length}, b"{}")
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(content)["error"]["code"] == "bad_request"


# --- connections --------------------------------------------------------------


def test_an_idle_connection_is_kept_longer_than_a_load_balancer_keeps_its_own(live_site):
    """gunicorn's default keep-alive (2 s) closed connections a proxy reused a moment later.
    The Procfile keeps them 75 s, above common balancers' idle timeouts (AWS ALB: 60 s)."""
    with connect(live_site) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _ = read_response(sock)
            assert status == 200
            time.sleep(3)


# --- what a served request leaves behind ----------------------------------------------


@pytest.mark.parametrize("path", ["/livez", "/api/history"])
def test_a_request_is_freed_when_it_ends_not_left_to_the_garbage_collector(path):
    """The server reports `http.disconnect` once the response is complete, as uvicorn does. Django's
    listener for it used to end in a RequestAborted that closed a reference cycle around the
    request's whole graph: with the collector off, every request served stayed in memory
    (chatsite.asgi._answered_quietly says why that mattered)."""
    from chatsite import asgi

    async def exchange():
        answered = asyncio.Event()
        body = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            if body:
                return body.pop()
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()

        await asgi.application(asgi_scope("GET", path, [(b"host", b"testserver")], scheme="https"), receive, send)
        assert answered.is_set()

    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            async_to_sync(exchange)()
        left = [o for o in gc.get_objects() if type(o) is ASGIRequest]  # not isinstance: a lazy object would evaluate
    finally:
        gc.enable()
    assert left == []
