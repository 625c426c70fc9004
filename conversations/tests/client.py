"""The one way tests talk to the site: HTTP to a deployed site, Django's test client, or the ASGI app.

- `SiteClient`: real HTTP to a deployed site (devtools.processes.Site, or any base URL), with
  http.client: every status is returned, never raised, and redirects are not followed.
- `post_chat`, `post_handoff`, `get_updates`, `read_stream`: Django's in-process test client.
- `asgi_request`: the ASGI application as served (chatsite.asgi), called in this process.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

from asgiref.sync import async_to_sync

from devtools.sse import parse_events


class Response(NamedTuple):
    """What the site answered: `body` is the parsed JSON, or the text when it is not JSON (a stream)."""

    status: int
    body: Any
    headers: http.client.HTTPMessage

    @property
    def text(self) -> str:
        return self.body if isinstance(self.body, str) else json.dumps(self.body)

    def ok(self) -> Any:
        """The body of a 200, failing the test on any other status."""
        assert self.status == 200, (self.status, self.body)
        return self.body

    def events(self) -> list[tuple[str, dict]]:
        """The server-sent events of a streamed reply, in order."""
        return parse_events(self.body)


class SiteClient:
    """Requests to a deployed site: `SiteClient(site)` or `SiteClient("http://127.0.0.1:8000")`."""

    def __init__(self, site, timeout: float = 30):
        self.url = site if isinstance(site, str) else site.url
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout

    def connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """A connection of the caller's own, for tests that work the socket (leave mid-stream, ...)."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def request(self, method: str, path: str, body: dict | bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float | None = None) -> Response:
        """Any request; a dict body is sent as JSON."""
        sent = {**({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        connection = self.connect(timeout)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            raw = response.read().decode()
        finally:
            connection.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw
        return Response(response.status, parsed, response.msg)

    def send(self, body: dict, stream: bool = False, headers: dict[str, str] | None = None,
             timeout: float | None = None) -> Response:
        """POST /api/chat with this exact body; streamed (text/event-stream) if `stream`."""
        accept = {"Accept": "text/event-stream" if stream else "application/json"}
        return self.request("POST", "/api/chat", body, {**accept, **(headers or {})}, timeout)

    def chat(self, message: str, session_id: str | None = None, client_message_id: str | None = None,
             stream: bool = False, headers: dict[str, str] | None = None,
             timeout: float | None = None) -> Response:
        """A turn: POST /api/chat with the message and, when given, sessionId and clientMessageId."""
        body = {"message": message}
        if session_id is not None:
            body["sessionId"] = session_id
        if client_message_id is not None:
            body["clientMessageId"] = client_message_id
        return self.send(body, stream=stream, headers=headers, timeout=timeout)

    def history(self, session_id: str, timeout: float | None = None, **query: Any) -> Response:
        """GET /api/history: the newest page, or with `before=<seq>` an older one (and `limit`)."""
        path = f"/api/history?{urlencode(query)}" if query else "/api/history"
        return self.request("GET", path, headers={"X-Session-Id": session_id}, timeout=timeout)

    def forget(self, session_id: str, timeout: float | None = None) -> Response:
        """DELETE /api/history: the customer deletes the conversation."""
        return self.request("DELETE", "/api/history", headers={"X-Session-Id": session_id}, timeout=timeout)

    def updates(self, session_id: str, after: int = 0, state: str | None = None,
                timeout: float | None = None) -> Response:
        """GET /api/updates, the page's long poll."""
        query = urlencode({"after": after, **({"state": state} if state else {})})
        return self.request("GET", f"/api/updates?{query}", headers={"X-Session-Id": session_id},
                            timeout=timeout)

    def handoff_request(self, session_id: str | None = None) -> Response:
        """POST /api/handoff: the customer asks for a person."""
        return self.request("POST", "/api/handoff", {"sessionId": session_id})

    def health(self, timeout: float | None = None) -> Response:
        return self.request("GET", "/healthz", timeout=timeout)


# --- Django's test client, in this process ---------------------------------------------


def post_chat(client, headers=None, **body):
    """POST /api/chat with a JSON body; returns (status, parsed JSON)."""
    response = client.post(
        "/api/chat", data=json.dumps(body), content_type="application/json", headers=headers or {}
    )
    return response.status_code, response.json()


def post_handoff(client, **body):
    """POST /api/handoff (the customer asks for a person); returns (status, parsed JSON)."""
    response = client.post("/api/handoff", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def get_updates(client, session_id, **params):
    """GET /api/updates (the page's long poll) with these query parameters; returns (status, parsed JSON)."""
    response = client.get("/api/updates", params, headers={"X-Session-Id": str(session_id)})
    return response.status_code, response.json()


def read_stream(response) -> str:
    """The whole body of a streaming response from Django's test client."""

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)().decode()


# --- the ASGI application as served, in this process -----------------------------------

# The body messages the application read in the latest asgi_request().
RECEIVED: list[dict] = []


def asgi_request(method: str, path: str, headers: Mapping[str, bytes | str] | list | None = None,
                 body: bytes = b"", chunks: list[bytes] | None = None, client: str = "127.0.0.1",
                 query: str = "", scheme: str = "http"):
    """(status, headers, body) of one request to chatsite.asgi's application. `headers` may be a
    list of pairs, to send one header twice. `chunks` sends the body in pieces, without a length.

    Use it with the `rebuilt_api_handler` fixture (conftest.py), so that the API's handler is
    built under the test's settings (or send it as HTTPS, as the settings of production want).
    """
    return async_to_sync(asgi_exchange)(method, path, headers, body, chunks, client, query, scheme)


async def asgi_exchange(method: str, path: str, headers: Mapping[str, bytes | str] | list | None = None,
                        body: bytes = b"", chunks: list[bytes] | None = None, client: str = "127.0.0.1",
                        query: str = "", scheme: str = "http"):
    """asgi_request(), awaited: for requests at the same time on one event loop."""
    from chatsite import asgi  # the application loads WhiteNoise: after the session's collectstatic

    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    raw = [(name.lower().encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
           for name, value in pairs]
    if not any(name == b"host" for name, _ in raw):
        raw.append((b"host", b"testserver"))
    if chunks is None and body and not any(name == b"content-length" for name, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    pieces = chunks if chunks is not None else [body]
    messages = [{"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
                for i, piece in enumerate(pieces)]
    received = RECEIVED
    received.clear()
    sent = []

    async def receive():
        if messages:
            received.append(messages[0])
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    await asgi.application(asgi_scope(method, path, raw, client, query, scheme), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {name.decode().lower(): value.decode("latin-1") for name, value in start["headers"]}
    return start["status"], response_headers, content


def asgi_scope(method: str, path: str, headers: list[tuple[bytes, bytes]], client: str = "127.0.0.1",
               query: str = "", scheme: str = "http") -> dict:
    """The ASGI scope of an HTTP request, as uvicorn builds it."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": scheme, "path": path, "raw_path": path.encode(), "query_string": query.encode(),
            "root_path": "", "headers": headers, "client": (client, 50000),
            "server": ("testserver", 443 if scheme == "https" else 80)}


# --- a staff member in the admin of a deployed site ------------------------------------


class StaffSession:
    """A staff member's browser on a deployed site's admin, over HTTP: cookies kept, forms posted
    with their CSRF token, redirects not followed (`follow()` reads where one points)."""

    def __init__(self, site, username: str, password: str):
        self.http = SiteClient(site)
        self.cookies: dict[str, str] = {}
        self.get("/admin/login/")
        response = self.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
        assert response.status == 302, (response.status, response.text[-2000:])

    def request(self, method: str, path: str, form: dict[str, str] | None = None, timeout: float | None = None
                ) -> Response:
        headers = {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}
        body = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode({"csrfmiddlewaretoken": self.cookies.get("csrftoken", ""), **form}).encode()
        response = self.http.request(method, path, body, headers, timeout)
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";")[0]
        return response

    def get(self, path: str, timeout: float | None = None) -> Response:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, form: dict[str, str], timeout: float | None = None) -> Response:
        return self.request("POST", path, form, timeout)

    def follow(self, response: Response) -> Response:
        """The page a redirect points to."""
        assert response.status in (301, 302, 303), (response.status, response.text[-2000:])
        location = urlsplit(response.headers["Location"])
        return self.get(location.path + (f"?{location.query}" if location.query else ""))
