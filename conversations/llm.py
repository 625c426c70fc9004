"""The assistant: the only module that talks to the LLM.

With OPENAI_API_KEY set, replies come from any OpenAI-compatible server through
the official `openai` client; without it, an offline responder answers from the
knowledge file, so a fresh clone works with nothing configured.

What the LLM returns is checked where it enters (`_read`, for a whole reply
and for each chunk of a streamed one alike), as a server that ignores the API
could send anything: a model name too long to store or not text is taken as
the configured model; a token count that is not a whole number from 0 to
MAX_TOKENS is dropped (None: tokens_used estimates it); NUL characters
(which PostgreSQL cannot store) are taken out of the text and lone surrogates
(which UTF-8 cannot encode) replaced; content that is not text is a reply that
does not parse. A reply is cut at settings.CHAT_REPLY_MAX_CHARS characters,
with CUT_NOTE at its end, and upstream is no longer read; a JSON body larger
than RESPONSE_MAX_BYTES, or a line of a stream, is not read at all.

Every failure of the LLM (timeout, refused connection, 429, 5xx, a reply that
does not parse, or too large to) becomes AssistantUnavailable, and the whole call, retries
included, ends within settings.CHAT_LLM_DEADLINE seconds. It is logged once with its
cause (`failure_cause`: refused, DNS, TLS, timeout, HTTP status and the server's error
code...) and the LLM's host, never the API key, and counted in the metrics by cause.

The circuit breaker: the LLM counts as down, and customers get the offline
responder, after CHAT_LLM_DOWN_AFTER_FAILURES (5) failed calls in a row in one
worker, each within FAILURE_WINDOW seconds of the one before (one slow hour of
sporadic failures is not an outage). The worker then sets a shared `llm:down`
flag, holding since when (Unix seconds), that limits.admit reads with the budget
counters (no extra round trip) and /healthz reports (`health`).
While it is set, one turn every PROBE_SECONDS, site-wide, still tries the LLM:
its success clears the flag at once, its failure renews it. The flag lapses on
its own after DOWN_SECONDS, so a lost "back up" costs at most that.

A reply is in the customer's language (`ReplyStream(..., language="de")`, the code the
turn read from the request): the LLM is told to answer in it (knowledge.system_prompt),
the offline responder answers in it (knowledge.offline_answer).

`ReplyStream(history, offline=True)` is the fallback when a budget is spent or
the LLM is down (limits.admit): the offline responder answers even with an API
key set, and its reply opens with a notice (languages.said().unavailable), so that the customer (and
support staff reading the transcript) can tell it is not the assistant.
"""

import asyncio
import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import aiohttp
import httpx2
import openai
from django.conf import settings
from django.utils.translation import gettext

from . import knowledge, languages, metrics, shared_state
from .errors import ApiError

logger = logging.getLogger(__name__)

OFFLINE_MODEL = "offline-faq"


# Ends a reply cut at settings.CHAT_REPLY_MAX_CHARS.
CUT_NOTE = "\n\n*[This reply was cut short because it was too long.]*"
# The most bytes read of a JSON reply, or of one line of a streamed one: about 20 ms of
# parsing, far more than any reply within max_tokens, and than the largest reply
# stored (CHAT_REPLY_MAX_CHARS) even written as JSON escapes (6 bytes a character).
RESPONSE_MAX_BYTES = 4 * 1024 * 1024
# The most tokens one call can count: any more is a count that cannot be true.
MAX_TOKENS = 10_000_000
# Message.model's max_length.
MODEL_MAX_CHARS = 100
SURROGATE = re.compile("[\ud800-\udfff]")


class AssistantUnavailable(ApiError):
    """The LLM could not answer. `status` is the HTTP status to answer the browser with.

    `outage` is False for a failure that this request's content caused (the
    server refused it as a bad request, or wrote nothing, as content filters
    do): a customer who sends such messages must not be able to switch the LLM
    off for everyone (failed()).
    """

    code = "llm_unavailable"

    def __init__(self, message: str, status: int = 502, retry_after: int | None = None, outage: bool = True):
        super().__init__(status, message=message, retry_after=retry_after)
        self.outage = outage


# As many connections to the LLM as the client allows by default, all kept for reuse.
LLM_CONNECTIONS = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000)


def failure_cause(error: BaseException) -> tuple[str, str]:
    """Why a call to the LLM failed, as (cause, detail): a short name for the metrics and the
    log (refused, dns, tls, reset, connection, timeout, http_<status>, bad_reply, too_large)
    and what the log line says. The openai client reports every transport failure as a
    timeout (APITimeoutError), a refused connection too: the exceptions it was raised from tell.
    Never the error's own text for an HTTP answer: a 401's names the API key, partly masked."""
    if isinstance(error, openai.APIStatusError):
        code = error.code or error.type  # what the server named the error, e.g. invalid_api_key
        return f"http_{error.status_code}", f"HTTP {error.status_code}" + (f" {code!s:.80}" if code else "")
    if isinstance(error, _TooLarge):
        return "too_large", str(error)
    if not isinstance(error, openai.APIConnectionError):
        return "bad_reply", f"a reply that does not parse: {type(error).__name__}"
    seen: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in seen and len(seen) < 10:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    # A failure of the connection that the client dressed up as a timeout.
    transport = any(isinstance(e, (aiohttp.ClientConnectionError, OSError)) and not isinstance(e, TimeoutError)
                    for e in seen)
    for name, kinds, detail in [
        ("dns", (socket.gaierror, aiohttp.ClientConnectorDNSError), "DNS lookup failed"),
        ("tls", (ssl.SSLError, ssl.CertificateError, aiohttp.ClientSSLError), "TLS handshake failed"),
        ("refused", (ConnectionRefusedError,), "connection refused"),
        ("reset", (ConnectionResetError, aiohttp.ServerDisconnectedError), "connection closed by the server"),
    ]:
        found = next((e for e in seen if isinstance(e, kinds)), None)
        if found is not None:
            return name, detail + (f" ({_reason(found)})" if name in ("dns", "tls") else "")
    if not transport and isinstance(error, openai.APITimeoutError):
        return "timeout", "timed out"
    return "connection", f"connection failed: {type(seen[-1]).__name__} ({_reason(seen[-1])})"


def _reason(error: BaseException) -> str:
    """The operating system's or the TLS library's words for `error`, e.g. "Name or service not known"."""
    return str(getattr(error, "strerror", None) or getattr(error, "reason", None) or error)[:200]


def llm_host() -> str:
    """Host and port of the LLM (OPENAI_BASE_URL's, else OpenAI's), never a user or password in it."""
    parts = urlsplit(settings.OPENAI_BASE_URL or "https://api.openai.com/v1")
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def _log_failure(cause: str, detail: str) -> None:
    metrics.LLM_FAILURES.labels(cause).inc()
    logger.warning("LLM call failed: %s, at %s", detail, llm_host(), extra={"cause": cause, "llm_host": llm_host()})


def _config() -> tuple:
    return (settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.CHAT_LLM_DEADLINE,
            settings.CHAT_LLM_CONNECT_TIMEOUT, settings.CHAT_LLM_MAX_RETRIES)


def _new_client() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL,
        # The client's defaults (600 s, 2 retries) would let a turn hang for
        # half an hour; our own deadline below bounds the whole call.
        timeout=httpx2.Timeout(settings.CHAT_LLM_DEADLINE, connect=settings.CHAT_LLM_CONNECT_TIMEOUT),
        max_retries=settings.CHAT_LLM_MAX_RETRIES,
        # On aiohttp, the client's documented transport for many requests at once:
        # httpx's connection pool walks every connection, and probes each idle
        # one's socket, twice per request, which was the largest cost of a turn
        # with hundreds of turns waiting on the LLM in a worker (docs/benchmarks.md).
        # All its connections are kept for reuse (the default keeps 100).
        http_client=openai.DefaultAioHttpClient(limits=LLM_CONNECTIONS),
    )


class Client:
    """A worker's client of the LLM, made on the loop it serves from (by its runtime, runtime.py)
    and kept while it serves: its connections to the LLM are reused turn after turn."""

    def __init__(self) -> None:
        self.config = _config()
        self.openai = _new_client()

    async def close(self) -> None:
        await self.openai.close()


@contextlib.asynccontextmanager
async def _client(worker: Client | None) -> AsyncIterator[openai.AsyncOpenAI]:
    """The worker's client; without one (Django's test clients, a management command) or with a
    setting changed since, a client for this call only, closed after it: an aiohttp session
    belongs to one event loop and must be closed on it."""
    if worker is not None and worker.config == _config():
        yield worker.openai
        return
    client = _new_client()
    try:
        yield client
    finally:
        await client.close()


class ReplyStream:
    """The assistant's reply to `history`, written as it comes.

    `async for text in ReplyStream(history)` yields pieces of the reply; the
    attributes hold the whole text, the model and the token counts so far.
    Closing the iterator early (the user pressed Stop) closes the upstream call.
    With `streamed=False` the LLM is asked for the whole reply at once, which
    costs the client far less CPU than parsing it chunk by chunk: for callers
    that do not show the words as they come.
    """

    def __init__(self, history: list[dict[str, str]], streamed: bool = True, offline: bool = False,
                 client: Client | None = None, language: str = "en", system: str | None = None):
        self.history = history
        # The instructions: the shop assistant's (knowledge.system_prompt), unless another task's.
        self.system = system
        # The customer's: the LLM is told to answer in it, the offline responder answers in it.
        self.language = language
        self.client = client
        self.streamed = streamed
        # The reply's pieces, joined when `text` is read: adding to one string would copy
        # all of it for every piece (quadratic in a long reply).
        self._pieces: list[str] = []
        self._length = 0
        self.cut = False  # whether the reply was cut at settings.CHAT_REPLY_MAX_CHARS
        self._logged: set[str] = set()  # what _odd logged
        online = bool(settings.OPENAI_API_KEY) and not offline
        # A fallback (the LLM is configured but may not be used) says so; a site
        # that runs on the offline responder by design does not.
        self.notice = languages.said(language).unavailable if offline and settings.OPENAI_API_KEY else ""
        self.responder = "openai" if online else "offline"
        self.model = settings.OPENAI_MODEL if online else OFFLINE_MODEL
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self._started = time.monotonic()

    @property
    def text(self) -> str:
        """The reply so far."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    @property
    def tokens_used(self) -> int:
        """Tokens this reply cost, as the server counted them, else estimated (4 characters a token)."""
        if self.prompt_tokens is not None and self.completion_tokens is not None:
            return self.prompt_tokens + self.completion_tokens
        characters = sum(len(m["content"]) for m in self.history) + self._length
        return characters // 4

    @property
    def latency_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000)

    def __aiter__(self) -> AsyncIterator[str]:
        self._started = time.monotonic()
        if self.responder == "offline":
            return self._offline()
        return self._openai()

    async def _offline(self) -> AsyncIterator[str]:
        question = next(m["content"] for m in reversed(self.history) if m["role"] == "user")
        words = (self.notice + knowledge.offline_answer(question, self.language)).split(" ")
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            self._pieces.append(piece)
            self._length += len(piece)
            yield piece
            if settings.CHAT_OFFLINE_WORD_DELAY:
                await asyncio.sleep(settings.CHAT_OFFLINE_WORD_DELAY)

    async def _openai(self) -> AsyncIterator[str]:
        metrics.LLM_CALLS.inc()
        first = True
        try:
            # aclosing: on Stop, the upstream call is closed now, not when garbage collected.
            async with contextlib.aclosing(self._openai_checked()) as pieces:
                async for piece in pieces:
                    if first:
                        metrics.FIRST_TOKEN_SECONDS.observe(time.monotonic() - self._started)
                        first = False
                    yield piece
        except AssistantUnavailable as error:
            if error.outage:
                failed()
            raise
        succeeded()

    async def _openai_checked(self) -> AsyncGenerator[str, None]:
        deadline = asyncio.get_running_loop().time() + settings.CHAT_LLM_DEADLINE
        try:
            if self.streamed:
                async for piece in self._openai_streamed(deadline):
                    yield piece
            else:
                async with asyncio.timeout_at(deadline):
                    piece = await self._openai_whole()
                if piece:
                    yield piece
        except TimeoutError as error:
            _log_failure("timeout", f"the deadline of {settings.CHAT_LLM_DEADLINE}s passed")
            raise AssistantUnavailable(gettext("The assistant took too long to answer."), status=504) from error
        except openai.RateLimitError as error:
            _log_failure(*failure_cause(error))
            raise AssistantUnavailable(
                gettext("The assistant is busy right now."), status=503, retry_after=_retry_after(error)
            ) from error
        except (openai.OpenAIError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            # Refused connections, timeouts, 4xx/5xx answers, and replies that do not parse
            # (ValueError from JSON, KeyError/TypeError/IndexError from odd shapes).
            cause, detail = failure_cause(error)
            _log_failure(cause, detail)
            if cause == "timeout":
                raise AssistantUnavailable(gettext("The assistant took too long to answer."), status=504) from error
            # A reply too large to read: this question asked for it, as far as we can tell.
            refused = isinstance(error, (openai.BadRequestError, openai.UnprocessableEntityError, _TooLarge))
            raise AssistantUnavailable(
                gettext("The assistant is unavailable right now."), status=502, outage=not refused
            ) from error
        if not self._length:
            _log_failure("empty_reply", "the LLM returned an empty reply")
            raise AssistantUnavailable(gettext("The assistant returned an empty reply."), status=502, outage=False)


    def _request(self) -> dict:
        return {
            "model": settings.OPENAI_MODEL,
            "messages": [{"role": "system", "content": self.system or knowledge.system_prompt(self.language)},
                         *self.history],
            "max_tokens": settings.CHAT_MAX_OUTPUT_TOKENS,
        }

    # Both calls go through the client's lower-level request (`post` with
    # cast_to=httpx2.Response): its retries, timeouts, auth and errors, without
    # its typed layer, which built each request from typed parameters and each
    # reply into models at about 2 ms of CPU a turn (docs/benchmarks.md). The
    # reply is read as the JSON the API documents; a reply that does not have
    # its shape raises ValueError, KeyError, TypeError or IndexError.

    async def _openai_whole(self) -> str:
        async with _client(self.client) as client:
            response = await client.post(
                "/chat/completions", body=self._request(), cast_to=httpx2.Response, stream=True
            )
            try:
                # Read with a limit: a body of megabytes would take the event loop
                # that long to parse, for a reply cut to CHAT_REPLY_MAX_CHARS anyway.
                body, size, limit = [], 0, _max_bytes()
                async for part in response.aiter_bytes():
                    size += len(part)
                    if size > limit:
                        raise _TooLarge(f"a reply of more than {limit} bytes")
                    body.append(part)
            finally:
                await response.aclose()
        return self._add(self._read(json.loads(b"".join(body)), "message"))

    async def _openai_streamed(self, deadline: float) -> AsyncIterator[str]:
        async with _client(self.client) as client:
            async with asyncio.timeout_at(deadline):
                response = await client.post(
                    "/chat/completions",
                    body={**self._request(), "stream": True, "stream_options": {"include_usage": True}},
                    cast_to=httpx2.Response,
                    stream=True,
                )
            try:
                async with contextlib.aclosing(_lines(response, deadline)) as lines:
                    async for line in lines:
                        if not line.startswith(b"data:"):
                            continue  # SSE comments, event names and blank separators
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            break
                        chunk = json.loads(data)
                        if isinstance(chunk, dict) and "error" in chunk:
                            raise ValueError(f"error event in the stream: {chunk['error']!r}")
                        if piece := self._add(self._read(chunk, "delta")):
                            yield piece
                        if self.cut:
                            break  # a reply cut is read no further
            finally:
                await response.aclose()  # on Stop and on a cut too: the upstream call ends now

    def _read(self, reply: object, part: str) -> str:
        """The text of a reply (`part` "message") or of a chunk of one ("delta"), noting its
        model and token counts, by the rules of the module docstring, for both alike.

        Raises TypeError, KeyError or IndexError for a shape the API does not have.
        """
        if not isinstance(reply, dict):
            raise TypeError(f"a reply of {type(reply).__name__}, not an object")
        model = reply.get("model")
        if isinstance(model, str) and 0 < len(model) <= MODEL_MAX_CHARS and model.isprintable():
            self.model = model
        elif model not in (None, ""):
            self._odd("model", f"LLM named its model {model!r:.120}: kept {self.model!r}")
        usage = reply.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens, self.completion_tokens = (
                self._count(usage.get("prompt_tokens")), self._count(usage.get("completion_tokens"))
            )
        elif usage is not None:
            self._odd("usage", f"LLM counted its tokens as {usage!r:.120}: not stored")
        choices = reply.get("choices")
        if part == "delta" and not choices:
            return ""  # the chunk of the usage, or of nothing
        content = choices[0][part].get("content")  # type: ignore[index]
        if content is None:
            return ""
        if not isinstance(content, str):
            raise TypeError(f"content of {type(content).__name__}, not text")
        return content

    def _count(self, value: object) -> int | None:
        """A token count as the API documents it (a whole number), if it can be true; else None."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
            return value
        if value is not None:
            self._odd("tokens", f"LLM counted {value!r:.40} tokens: not stored")
        return None

    def _odd(self, what: str, message: str) -> None:
        """Log what the LLM got wrong, once a reply for each kind of thing (not once a chunk)."""
        if what not in self._logged:
            self._logged.add(what)
            logger.warning(message)

    def _add(self, piece: str) -> str:
        """`piece` added to the reply, as far as settings.CHAT_REPLY_MAX_CHARS allows, cleaned
        for storing; past the cap, the reply is cut, ending with CUT_NOTE."""
        room = settings.CHAT_REPLY_MAX_CHARS - self._length
        if len(piece) > room:
            logger.warning("LLM wrote more than %s characters: the reply is cut", settings.CHAT_REPLY_MAX_CHARS)
            piece = _clean(piece[: max(room, 0)]) + CUT_NOTE
            self.cut = True
        else:
            piece = _clean(piece)
        self._pieces.append(piece)
        self._length += len(piece)
        return piece


class _TooLarge(ValueError):
    """A reply larger than we read."""


def _max_bytes() -> int:
    return max(RESPONSE_MAX_BYTES, 8 * settings.CHAT_REPLY_MAX_CHARS)


async def _lines(response: httpx2.Response, deadline: float) -> AsyncGenerator[bytes, None]:
    """The lines of a server-sent event stream, as bytes: none may be longer than _max_bytes(),
    and none read after `deadline` (the event loop's time).

    Split at CR, LF and CRLF, as SSE is (the client's aiter_lines also splits at
    the other Unicode line breaks, which a JSON string may hold unescaped).
    """
    limit, rest, size = _max_bytes(), [], 0  # the line begun: its parts and its size
    parts = aiter(response.aiter_bytes())
    while True:
        # The client's timeout is per read: a server that drips a byte at a time would never
        # trip it, so the deadline covers every read. Per read, not per line: a read holds
        # several lines, all of them when the server wrote fast (docs/benchmarks.md).
        async with asyncio.timeout_at(deadline):
            part = await anext(parts, None)
        if part is None:
            break
        if b"\n" not in part and b"\r" not in part:
            rest.append(part)  # joined once, when the line ends
            size += len(part)
            if size > limit:
                raise _TooLarge(f"a line of more than {limit} bytes")
            continue
        lines = b"".join([*rest, part]).splitlines(keepends=True)
        last = lines.pop() if not lines[-1].endswith((b"\n", b"\r")) else b""
        rest, size = [last], len(last)
        for index, line in enumerate(lines, 1):
            yield line.rstrip(b"\r\n")
            if index % 64 == 0:
                # A server that wrote fast may have buffered megabytes, thousands of
                # chunks to parse: other requests get the loop between every 64 of them.
                await asyncio.sleep(0)
    if size:
        yield b"".join(rest)


def _clean(text: str) -> str:
    """Text that PostgreSQL can store: no NUL character, no lone surrogate (not encodable in UTF-8)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return SURROGATE.sub("\ufffd", text)


def _retry_after(error: openai.APIStatusError) -> int | None:
    value = error.response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


# --- The circuit breaker: whether the LLM is up ------------------------------------------------------

DOWN = "llm:down"
PROBE = "llm:probe"
FAILURE_WINDOW = 60
PROBE_SECONDS = 30
DOWN_SECONDS = 600

_llm_health = {"failures": 0, "last_failure": 0.0, "down_seen": False, "down_since": 0}
_llm_lock = threading.Lock()


def is_down(flag: int | None) -> bool:
    """Whether the shared `llm:down` flag, as read, says the LLM is down (and remember what was seen).
    The flag's value is since when, in Unix seconds, so that every worker reports the same."""
    down = bool(flag) and settings.CHAT_LLM_DOWN_AFTER_FAILURES > 0
    _llm_health["down_seen"] = down
    _llm_health["down_since"] = flag if down and flag else 0
    return down


def health(flag: int | None) -> dict[str, str | None]:
    """The LLM's part of /healthz, from the shared `llm:down` flag as read (docs/health.md).

    The check calls no LLM: the breaker already watches every real call, and a probe from
    each load balancer every few seconds would cost requests (tokens, with some servers)
    and say less than the customers' own calls do.
    """
    if not settings.OPENAI_API_KEY:
        return {"llm": "offline"}  # the offline responder, by configuration
    if settings.CHAT_LLM_DOWN_AFTER_FAILURES <= 0:
        return {"llm": "unchecked"}  # the breaker is off: nothing watches the LLM
    if not flag:
        return {"llm": "ok"}
    # 1 is the flag as written before it held a time (for the few minutes of an upgrade).
    since = datetime.fromtimestamp(flag, UTC).isoformat().replace("+00:00", "Z") if flag > 1 else None
    return {"llm": "down", "llmDownSince": since}


def reset_health() -> None:
    _llm_health.update(failures=0, last_failure=0.0, down_seen=False, down_since=0)


def failed() -> None:
    """A call to the LLM failed (see the module docstring).

    It talks to the cache only when it marks the LLM down (rare): one short Redis
    command, bounded by the socket timeout.
    """
    threshold = settings.CHAT_LLM_DOWN_AFTER_FAILURES
    if threshold <= 0:
        return
    now = time.monotonic()
    with _llm_lock:
        if now - _llm_health["last_failure"] > FAILURE_WINDOW:
            _llm_health["failures"] = 0
        _llm_health["failures"] += 1
        _llm_health["last_failure"] = now
        mark = _llm_health["failures"] >= threshold or _llm_health["down_seen"]
        newly = mark and not _llm_health["down_seen"]
        _llm_health["down_seen"] = _llm_health["down_seen"] or mark
        if mark and not _llm_health["down_since"]:
            _llm_health["down_since"] = int(time.time())
        since = _llm_health["down_since"]
    if mark:
        if newly:
            logger.warning("the LLM failed %s times in a row: customers get the offline responder "
                           "until a probe succeeds", threshold, extra={"llm_host": llm_host()})
        # The next probe in PROBE_SECONDS, not now.
        shared_state.set_many({DOWN: since}, DOWN_SECONDS)
        shared_state.set_many({PROBE: 1}, PROBE_SECONDS)


def succeeded() -> None:
    """A call to the LLM answered. Clears the shared flag only when this process saw it set,
    so that a healthy LLM costs no Redis command per turn."""
    with _llm_lock:
        _llm_health["failures"] = 0
        was_down, _llm_health["down_seen"] = _llm_health["down_seen"], False
        _llm_health["down_since"] = 0
    if was_down:
        logger.warning("the LLM answered again: customers get it again", extra={"llm_host": llm_host()})
        shared_state.delete_many([DOWN, PROBE])
