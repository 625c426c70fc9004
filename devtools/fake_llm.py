"""The stand-in LLM: an OpenAI-compatible chat completions server for development, tests and bench.

It answers "Echo: <the customer's last message>", word by word when streamed,
and can be told to fail in every way a real LLM fails (errors, rate limits,
hangs, dripping bytes, reset connections, broken JSON).

By hand (``make fake-llm``, then ``make run`` pointed at it; see docs/development.md, "Dev tools"):

    python -m devtools.fake_llm --port 8001
    curl -d '{"mode": "status", "status": 500, "fail_times": 2}' http://127.0.0.1:8001/_control

From Python (the tests and bench/ do this): the real ``openai`` client can be
pointed at it (``base_url=fake.url``) and the server's behaviour switched at run
time from another process:

    with FakeLLM() as fake:
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.url)
        fake.control("status", status=429, retry_after="1", fail_times=1)
        ...
        assert fake.stats()["cancelled"] == 1

Command line: ``python -m devtools.fake_llm [--host H] [--port P] [--quiet]`` prints
``READY http://127.0.0.1:<port>`` once listening (and, unless --quiet, how to use
it, on stderr) and serves until SIGTERM/SIGINT.

HTTP API
  POST /v1/chat/completions   OpenAI chat completions (JSON or SSE when "stream": true)
  POST /_control              {"mode": ..., **params} -- behaviour for all later requests
  POST /_reset                default behaviour, empty request log, zeroed stats
  GET  /_requests             {"count": n, "requests": [body, ...]} (oldest first)
  GET  /_stats                {"received": n, "active": n, "cancelled": n}

Modes (all accept "fail_times": N, after which requests behave as "ok"):
  ok         delay (s before the reply starts), chunk_delay (s between SSE chunks), reply (text),
             chunks (N: streamed as a real model does, N pieces of the reply, the words over again
             if it has fewer, spread over `delay`, the first after delay / N; a whole reply still
             waits `delay`), stamp (true: each streamed piece opens with "<t=UNIX_SECONDS>", the
             time it was sent, so that a client can tell how late it arrived: bench/stream.py),
             and for a server that misbehaves: repeat (the reply N times over), piece_chars (SSE
             pieces of this many characters instead of words), ignore_max_tokens (true: the whole
             reply whatever max_tokens says), model / usage / content (any JSON value, sent as is
             in place of the model's name, the token counts, the message's content; streamed,
             `content` is the one delta's content)
  status     status (e.g. 500/429/401/503), retry_after (header value), message, type, code
  hang       never answers; waits until the client goes away
  drip       sends 200 + headers, then one body byte every `interval` s (default 2) forever
  reset      aborts the TCP connection (RST) without sending any response
  malformed  200 with `body` (default: truncated JSON) as `content_type` (default application/json;
             for stream requests without `body`: text/event-stream with a truncated `data:` line)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

JSON = b"application/json"
SSE = b"text/event-stream; charset=utf-8"

MODES = ("ok", "status", "hang", "drip", "reset", "malformed")
DEFAULT_MODEL = "fake-model"

_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
}

# Live transports keyed by the client's (host, port), so the "reset" mode can
# abort the socket: ASGI gives the app no handle on the connection itself.
_TRANSPORTS: dict[tuple[str, int], asyncio.Transport] = {}


class _TrackingH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None:
            _TRANSPORTS[self.client] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None and _TRANSPORTS.get(self.client) is self.transport:
            del _TRANSPORTS[self.client]
        super().connection_lost(exc)


# ---------------------------------------------------------------------------
# Reply construction


def _text_of(content: Any) -> str:
    """Text of a message's content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""


def _prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(_text_of(m.get("content")).split()) + 1 for m in messages if isinstance(m, dict))


def _pieces(text: str) -> list[str]:
    """Split text into word-sized pieces that concatenate back to exactly `text`."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest:
        pieces.append(rest)
    return pieces


class _Reply:
    def __init__(self, body: dict[str, Any], params: dict[str, Any]) -> None:
        reply_override = params.get("reply")
        if reply_override is not None:
            text = str(reply_override)
        else:
            text = "Echo: " + _last_user_text(body.get("messages"))
        text *= int(params.get("repeat", 1))
        piece_chars = int(params.get("piece_chars", 0))
        if piece_chars > 0:
            pieces: list[Any] = [text[i : i + piece_chars] for i in range(0, len(text), piece_chars)]
        else:
            pieces = _pieces(text)
        count = int(params.get("chunks", 0))
        if count > 0 and pieces:
            again = [" " + pieces[0].lstrip(), *pieces[1:]]  # the words over again, after a space
            pieces = (pieces + again * count)[:count]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self.finish_reason = "stop"
        if isinstance(limit, int) and 0 < limit < len(pieces) and not params.get("ignore_max_tokens"):
            pieces = pieces[:limit]
            self.finish_reason = "length"
        self.completion_tokens = len(pieces)
        # A content of any JSON value, as a broken server might send it.
        self.content: Any = params["content"] if "content" in params else "".join(pieces)
        self.pieces = [params["content"]] if "content" in params else pieces
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model: Any = params["model"] if "model" in params else str(body.get("model") or DEFAULT_MODEL)
        prompt_tokens = _prompt_tokens(body.get("messages"))
        self.usage: Any = params["usage"] if "usage" in params else {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": prompt_tokens + self.completion_tokens,
        }

    def completion(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage,
            "system_fingerprint": "fp_fake",
        }

    def chunks(self, include_usage: bool) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            data: dict[str, Any] = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            return data

        yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        for piece in self.pieces:
            yield chunk({"content": piece}, None)
        yield chunk({}, self.finish_reason)
        if include_usage:
            yield {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": self.usage,
            }


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


# ---------------------------------------------------------------------------
# ASGI helpers


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body)


async def _wait_disconnect(receive: Receive) -> None:
    # Note: uvicorn also reports http.disconnect once the response is complete.
    while (await receive())["type"] != "http.disconnect":
        pass


async def _start(send: Send, status: int, content_type: bytes, headers: Headers = ()) -> None:
    all_headers = [(b"content-type", content_type), *headers]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})


async def _send_json(send: Send, status: int, data: Any, headers: Headers = ()) -> None:
    await _start(send, status, JSON, headers)
    await send({"type": "http.response.body", "body": json.dumps(data).encode()})


def _error_body(message: str, type_: str = "invalid_request_error", code: Any = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


# ---------------------------------------------------------------------------
# The app


class FakeLLMApp:
    """ASGI app; state is per instance and shared by all connections."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.mode = "ok"
        self.params: dict[str, Any] = {}
        self.fail_times: int | None = None
        self.request_log: list[Any] = []
        self.received = 0
        self.active = 0
        self.cancelled = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if path in ("/v1/chat/completions", "/chat/completions") and method == "POST":
            await self._chat_completions(scope, receive, send)
        elif path == "/_control" and method == "POST":
            await self._control(receive, send)
        elif path == "/_reset" and method == "POST":
            self.reset()
            await _send_json(send, 200, {"ok": True})
        elif path == "/_requests" and method == "GET":
            await _send_json(send, 200, {"count": len(self.request_log), "requests": self.request_log})
        elif path == "/_stats" and method == "GET":
            await _send_json(send, 200, self._stats())
        else:
            await _send_json(send, 404, _error_body(f"No route {method} {path}"))

    def _stats(self) -> dict[str, int]:
        return {"received": self.received, "active": self.active, "cancelled": self.cancelled}

    async def _control(self, receive: Receive, send: Send) -> None:
        try:
            params = json.loads(await _read_body(receive) or b"{}")
            assert isinstance(params, dict)
        except (ValueError, AssertionError):
            await _send_json(send, 400, {"error": "body must be a JSON object"})
            return
        mode = params.pop("mode", "ok")
        if mode not in MODES:
            await _send_json(send, 400, {"error": f"unknown mode {mode!r}; expected one of {MODES}"})
            return
        fail_times = params.pop("fail_times", None)
        self.mode, self.params = mode, params
        self.fail_times = int(fail_times) if fail_times is not None else None
        await _send_json(send, 200, {"mode": mode, "fail_times": self.fail_times, **params})

    def _current_mode(self) -> str:
        if self.mode == "ok" or self.fail_times is None:
            return self.mode
        if self.fail_times > 0:
            self.fail_times -= 1
            return self.mode
        return "ok"

    async def _chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.request_log.append(body)
        self.received += 1
        if not isinstance(body, dict):
            await _send_json(send, 400, _error_body("Request body is not a JSON object"))
            return
        mode = self._current_mode()
        params = self.params

        if mode == "reset":
            await self._reset_connection(scope, receive, send)
            return

        # Run the reply against a disconnect watcher, so a client that goes away
        # mid-reply cancels it and is counted (uvicorn silently drops sends to
        # a closed connection, so the reply itself would never notice).
        self.active += 1
        reply_task = asyncio.ensure_future(self._respond(mode, params, body, send))
        watch_task = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({reply_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
            if not reply_task.done():
                self.cancelled += 1
        finally:
            self.active -= 1
            for task in (reply_task, watch_task):
                task.cancel()
            await asyncio.gather(reply_task, watch_task, return_exceptions=True)
        if not reply_task.cancelled() and reply_task.exception() is not None:
            raise reply_task.exception()  # type: ignore[misc]

    async def _respond(self, mode: str, params: dict[str, Any], body: dict[str, Any], send: Send) -> None:
        stream = bool(body.get("stream"))
        if mode == "ok":
            await self._respond_ok(params, body, send)
        elif mode == "status":
            status = int(params.get("status", 500))
            default_type, default_code = _ERROR_TYPES.get(status, ("server_error", "error"))
            headers: list[tuple[bytes, bytes]] = []
            if params.get("retry_after") is not None:
                headers.append((b"retry-after", str(params["retry_after"]).encode()))
            error = _error_body(
                str(params.get("message", f"Fake error {status}")),
                str(params.get("type", default_type)),
                params.get("code", default_code),
            )
            await _send_json(send, status, error, headers)
        elif mode == "hang":
            await asyncio.Event().wait()
        elif mode == "drip":
            interval = float(params.get("interval", 2))
            await _start(send, 200, SSE if stream else JSON)
            # An SSE comment line / JSON whitespace: valid so far, never complete.
            drip: Iterator[int]
            if stream:
                drip = itertools.cycle(b": drip\n")
            else:
                drip = itertools.chain(b"{", itertools.repeat(ord(" ")))
            for byte in drip:
                await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
                await asyncio.sleep(interval)
        elif mode == "malformed":
            if stream and "body" not in params:
                broken_type, broken_body = SSE, 'data: {"id": "chatcmpl-broken", \n\n'
            else:
                broken_type, broken_body = JSON, '{"id": "chatcmpl-broken", "choices": [{"message": '
            content_type = str(params["content_type"]).encode() if "content_type" in params else broken_type
            await _start(send, 200, content_type)
            await send({"type": "http.response.body", "body": str(params.get("body", broken_body)).encode()})

    async def _respond_ok(self, params: dict[str, Any], body: dict[str, Any], send: Send) -> None:
        reply = _Reply(body, params)
        delay = float(params.get("delay", 0))
        spread = int(params.get("chunks", 0)) > 0 and bool(body.get("stream"))
        if spread:
            # A piece every delay / N, the first one too; the chunks around them (the role's,
            # the finish, the usage) go with the first and the last piece, as a model's do.
            delay /= max(len(reply.pieces), 1)
        if delay > 0:
            await asyncio.sleep(delay)
        if not body.get("stream"):
            await _send_json(send, 200, reply.completion())
            return
        stream_options = body.get("stream_options") or {}
        include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
        chunk_delay = delay if spread else float(params.get("chunk_delay", 0))
        stamp = bool(params.get("stamp"))
        await _start(send, 200, SSE, [(b"cache-control", b"no-cache")])
        pieces_sent = 0
        for i, chunk in enumerate(reply.chunks(include_usage)):
            content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            is_piece = i > 0 and content is not None  # not the role's chunk
            if i and chunk_delay > 0 and (not spread or (is_piece and pieces_sent)):
                await asyncio.sleep(chunk_delay)
            else:
                # Let the disconnect watcher run: writing to a client that has gone
                # never blocks, so a long reply would be written to nobody to the end.
                await asyncio.sleep(0)
            pieces_sent += is_piece
            if stamp and isinstance(content, str) and content:
                chunk["choices"][0]["delta"]["content"] = f"<t={time.time():.6f}>{content}"
            await send({"type": "http.response.body", "body": _sse(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _reset_connection(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        transport = _TRANSPORTS.get(tuple(client)) if client else None
        if transport is None:
            await _send_json(send, 500, _error_body("fake_llm: no transport to reset", "server_error"))
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout turns close() into a TCP RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        # Return only once uvicorn has seen the disconnect, or it would try to send a 500.
        await _wait_disconnect(receive)


# ---------------------------------------------------------------------------
# Server entry point


HINTS = """
The stand-in LLM answers "Echo: <your message>" at {url}/v1
Point the site at it, in another terminal:
    OPENAI_API_KEY=fake OPENAI_BASE_URL={url}/v1 make run
Then change how it answers every later request, and send a message on the page:
    # slow streaming (try Stop)
    curl -d '{{"mode": "ok", "chunk_delay": 0.3}}' {url}/_control
    # fail twice (the site's call and its one retry), then answer: the page offers Retry
    curl -d '{{"mode": "status", "status": 500, "fail_times": 2}}' {url}/_control
    # rate limited by the provider
    curl -d '{{"mode": "status", "status": 429, "retry_after": "30"}}' {url}/_control
    # never answers: the site gives up after CHAT_LLM_DEADLINE seconds
    curl -d '{{"mode": "hang"}}' {url}/_control
    # a reply of your choosing (Markdown is rendered)
    curl -d '{{"mode": "ok", "reply": "**Bold** and [a link](https://example.com)"}}' {url}/_control
    # back to normal; what the site has sent (the prompts)
    curl -X POST {url}/_reset
    curl {url}/_requests
All modes and their parameters: devtools/fake_llm.py. Ctrl-C stops it.
"""


class _Server(uvicorn.Server):
    hints = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            print(f"READY http://{host}:{port}", flush=True)
            if self.hints:
                print(HINTS.format(url=f"http://{host}:{port}"), file=sys.stderr, flush=True)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Drop open connections (hanging/dripping requests would otherwise hold
        # up the graceful shutdown until its timeout).
        for transport in list(_TRANSPORTS.values()):
            transport.close()
        await super().shutdown(sockets=sockets)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def serve(host: str = "127.0.0.1", port: int = 0, hints: bool = True) -> None:
    _raise_fd_limit()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    config = uvicorn.Config(
        FakeLLMApp(),
        http=_TrackingH11Protocol,
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
        limit_concurrency=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
    )
    server = _Server(config)
    server.hints = hints
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it captured
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fake_llm", description="The stand-in OpenAI-compatible LLM server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--quiet", action="store_true", help="print only the READY line, no usage hints")
    args = parser.parse_args(argv)
    serve(args.host, args.port, hints=not args.quiet)


# ---------------------------------------------------------------------------
# For tests and bench: the server in a subprocess


class FakeLLM:
    """Runs the fake server in a subprocess.

    ``url`` is the openai ``base_url`` (``http://127.0.0.1:PORT/v1``);
    ``root_url`` is the server root (``http://127.0.0.1:PORT``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 15.0) -> None:
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.root_url = ""
        self.url = ""

    def start(self) -> FakeLLM:
        project_root = Path(__file__).resolve().parents[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.fake_llm", "--quiet"]
            + ["--host", self.host, "--port", str(self.port)],
            cwd=project_root,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._read_ready_line()
        self.root_url = line.split(" ", 1)[1]
        self.url = self.root_url + "/v1"
        self.port = int(self.root_url.rsplit(":", 1)[1])
        return self

    def _read_ready_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        result: list[str] = []
        # readline() has no timeout, so read in a thread and wait on it.
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        line = result[0].strip() if result else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"fake LLM server did not start (got {line!r})")
        return line

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, method: str, path: str, data: dict[str, Any] | None = None) -> Any:
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(
            self.root_url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"fake LLM {method} {path}: {error.code} {error.read().decode()}") from None

    def control(self, mode: str = "ok", **params: Any) -> dict[str, Any]:
        """Set the behaviour for all later requests, e.g. control("status", status=500, fail_times=1)."""
        result: dict[str, Any] = self._call("POST", "/_control", {"mode": mode, **params})
        return result

    def reset(self) -> None:
        """Default behaviour ("ok", no delay), empty request log, zeroed stats."""
        self._call("POST", "/_reset", {})

    def requests(self) -> list[Any]:
        """Bodies received on /v1/chat/completions, oldest first."""
        result: list[Any] = self._call("GET", "/_requests")["requests"]
        return result

    def stats(self) -> dict[str, int]:
        """{"received": n, "active": n, "cancelled": n}."""
        result: dict[str, int] = self._call("GET", "/_stats")
        return result


if __name__ == "__main__":
    main()
