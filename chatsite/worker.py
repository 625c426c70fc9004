"""The web worker: gunicorn's UvicornWorker, with connections bounded (the Procfile names it).

uvicorn on its own closes a connection only between requests (the keep-alive
timeout, armed after a response): a connection that never sends a byte, or
stops halfway through its request's head or body, is kept for ever, and a
worker keeps every connection it is offered until it runs out of file
descriptors or memory. Neither of uvicorn's bounds helps: gunicorn's
--worker-connections is not passed to uvicorn workers, and uvicorn's
limit_concurrency counts idle connections too and refuses the next requests
with a plain-text 503, so a flood of idle connections would turn away /healthz
and every customer instead of the flood. So this worker's protocol:

- closes a connection whose request head has not arrived CHAT_HEADER_TIMEOUT
  after the connection opened (or after the head's first byte, on a connection
  kept alive), and one whose body has not arrived CHAT_BODY_TIMEOUT after its
  head; a request begun is answered 408 request_timeout, an idle one just closed;
- keeps at most CHAT_MAX_CONNECTIONS connections: a new one past that closes
  the connection that has waited longest without a whole request (idle, or
  its request half sent, or kept alive between two requests). An idle or
  half-sent flood then pushes out itself, not the requests being served, and a
  new connection (a customer, the load balancer's check) gets in as long as any
  connection is waiting; only if every one is serving a whole request is the
  new one closed.

Held requests (long polls, streams) are capped by address and per worker in
chatsite/asgi.py, which knows the client's address behind a trusted proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

logger = logging.getLogger("chatsite.connections")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    # Set from the settings by the worker before it serves (the settings are not loaded before).
    header_timeout = 10.0
    body_timeout = 30.0
    max_connections = 4000
    # This worker's connections with no request, or a request not all here yet (idle, or half
    # sent), the longest waiting first; a request that has arrived whole is not among them.
    waiting: OrderedDict[BoundedHttpToolsProtocol, None] = OrderedDict()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.deadline: asyncio.TimerHandle | None = None
        self.stage = "idle"  # no request in progress, or its "head" or "body" is on its way
        self._expect(self.header_timeout)
        self.waiting[self] = None
        if self.max_connections and len(self.connections) > self.max_connections:
            oldest, _ = self.waiting.popitem(last=False)
            oldest.transport.close()
            self.connections.discard(oldest)  # closing: count it out now, not when the loop gets to it

    def connection_lost(self, exc) -> None:
        self.waiting.pop(self, None)
        self._stop_expecting()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.stage = "head"
        if self.deadline is None:  # a kept-alive connection's next request: its head's first byte
            self._expect(self.header_timeout)

    def on_headers_complete(self) -> None:
        self.stage = "body"
        self._expect(self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.waiting.pop(self, None)
        self.stage = "idle"
        self._stop_expecting()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # kept alive, no pipelined request to serve
            self.waiting[self] = None

    def send_400_response(self, msg: str) -> None:
        # What the HTTP parser refuses (a NUL in a header, two lengths, TLS to the plain port) is
        # answered here, in the API's shape, not in uvicorn's plain text; and the connection closed.
        self._stop_expecting()
        self.transport.write(_BAD_REQUEST)
        self.transport.close()

    def _expect(self, seconds: float) -> None:
        self._stop_expecting()
        if seconds:
            self.deadline = self.loop.call_later(seconds, self._too_slow)

    def _stop_expecting(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        answered = False
        if self.stage == "body":
            answered = self.cycle.response_started
            if not self.cycle.response_complete:
                # The application waits for the rest of the body: it hears a disconnect,
                # and what it would send now is dropped.
                self.cycle.disconnected = True
                self.cycle.message_event.set()
        if self.stage != "idle" and not answered:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def _response(status: str, code: str, message: str) -> bytes:
    # The API's error shape (conversations/payloads.error), which cannot be imported before
    # the worker has loaded Django.
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\ncache-control: no-store\r\n\r\n").encode() + body


_REQUEST_TIMEOUT = _response("408 Request Timeout", "request_timeout",
                             "The request did not arrive in time; send it again.")
_BAD_REQUEST = _response("400 Bad Request", "bad_request", "The request is not valid HTTP.")


class Worker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": BoundedHttpToolsProtocol}

    def run(self) -> None:
        from django.conf import settings  # loaded with the application by now

        protocol = BoundedHttpToolsProtocol
        protocol.header_timeout = settings.CHAT_HEADER_TIMEOUT
        protocol.body_timeout = settings.CHAT_BODY_TIMEOUT
        protocol.max_connections = _affordable_connections(settings.CHAT_MAX_CONNECTIONS,
                                                           settings.CHAT_MAX_TURNS_IN_FLIGHT)
        super().run()


# Descriptors a worker needs besides its clients': the database pool, Redis, logs, the listening socket.
SPARE_DESCRIPTORS = 200


def _affordable_connections(wanted: int, turns: int) -> int:
    """CHAT_MAX_CONNECTIONS, within the process's file descriptor limit.

    Each connection is a descriptor, and so is each turn's connection to the LLM; a worker
    out of descriptors can accept nothing, /healthz included. The soft limit is raised
    toward the hard one as far as needed; if that is not enough, fewer connections are kept.
    """
    need = wanted + turns + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if not wanted or soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    affordable = max(soft // 2, 1)
    logger.warning("CHAT_MAX_CONNECTIONS lowered to fit the file descriptor limit",
                   extra={"wanted": wanted, "kept": affordable, "limit": soft})
    return affordable
