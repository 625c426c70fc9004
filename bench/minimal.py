"""The minimal turn: a chat turn's inherent I/O and nothing else, the reference a turn is held to.

One async Django view, served by the Procfile's command like the site, does
exactly what a returning turn cannot avoid:

1. one Redis GET of session -> conversation id (redis.asyncio),
2. one SELECT of the conversation's last 20 messages,
3. the INSERT of the question,
4. the LLM call, with the same system prompt and history as the site
   (the official `openai` client's `chat.completions.create`;
   BENCH_MINIMAL_LLM=httpx posts with its HTTP library, httpx2, and reads the
   JSON itself; BENCH_MINIMAL_LLM=site calls the client the way the site does:
   its lower-level `post` returning the raw response, on its aiohttp
   transport, so that a comparison measures the site's own code, not the
   SDK's typed layer),
5. the INSERT of the reply,
6. the JSON answer the site gives.

Asked for `text/event-stream` (BENCH_MINIMAL_LLM=site only), it is the minimal
streamed turn: steps 1-3, then the LLM called with `stream=True`, each chunk's
text sent on as an SSE event as it comes (the site's events: session,
delta..., done), and the reply inserted when the stream ends.

The SQL runs on psycopg's AsyncConnectionPool (as many connections as the
site's DATABASE_POOL_MAX_SIZE), on the site's own tables, taking a connection
for each of the two database steps so that none is held while the LLM thinks,
as the site does. No middleware, no validation, no limits, no budgets, no
lease, no logging, no error handling: what is left of the site's cost above
this is what its guarantees and its code cost.

A session not in Redis yet is looked up once (the bench's warm-up does that).
Like the site (chatsite/asgi.py), its requests run Django's thread-sensitive sync
calls on the event loop's thread (chatsite/loop_executor.py) instead of a thread
each (Django's default), so that neither side is handicapped by it.
This module is the minimal turn's settings, URLconf and ASGI application at once.
"""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import openai
import redis.asyncio
from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from psycopg_pool import AsyncConnectionPool

from chatsite.loop_executor import OnTheLoop

SECRET_KEY = "bench-minimal-only"
DEBUG = os.environ.get("BENCH_MINIMAL_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True
ROOT_URLCONF = __name__
# What the Procfile's worker (chatsite/worker.py) reads: the site's defaults.
CHAT_HEADER_TIMEOUT = 10.0
CHAT_BODY_TIMEOUT = 30.0
CHAT_MAX_CONNECTIONS = 4000
CHAT_MAX_TURNS_IN_FLIGHT = 1000
# What conversations.knowledge reads to build the system prompt.
CHAT_KNOWLEDGE_FILE = Path(__file__).resolve().parent.parent / "knowledge" / "faq.md"
CHAT_SHOP_NAME = os.environ.get("CHAT_SHOP_NAME", "our shop")

MODEL = os.environ.get("OPENAI_MODEL", "fake-model")
HISTORY = 20
LLM = os.environ.get("BENCH_MINIMAL_LLM", "openai")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)
django_application = get_asgi_application()

from conversations import knowledge  # noqa: E402 - needs the settings above

SYSTEM_PROMPT = knowledge.system_prompt()

# Made at the lifespan's startup, on the worker's event loop.
pool: AsyncConnectionPool
cache: redis.asyncio.Redis
llm: Any  # openai.AsyncOpenAI, or httpx2.AsyncClient with BENCH_MINIMAL_LLM=httpx
# Django's thread-sensitive calls on the event loop's thread, as the site's API runs them (chatsite/asgi.py).
sync_thread = OnTheLoop()

SELECT = (
    "SELECT seq, role, content FROM conversations_message WHERE conversation_id = %s "
    "ORDER BY seq DESC LIMIT %s"
)
INSERT = (
    "INSERT INTO conversations_message (conversation_id, seq, role, content, created_at, status, "
    "client_message_id, author, model, prompt_tokens, completion_tokens, latency_ms) "
    "VALUES (%s, %s, %s, %s, %s, 'complete', '', '', %s, %s, %s, %s)"
)


async def start() -> None:
    global pool, cache, llm
    pool = AsyncConnectionPool(
        os.environ["DATABASE_URL"], min_size=1, max_size=int(os.environ.get("DATABASE_POOL_MAX_SIZE", "10")),
        kwargs={"autocommit": True}, open=False,
    )
    await pool.open()
    # Its default pool refuses a command past 100 connections (MaxConnectionsError):
    # past that many turns at once, one waits for a connection instead.
    cache = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
        os.environ["REDIS_URL"], max_connections=100, timeout=20))
    timeout = httpx2.Timeout(20.0, connect=3.0)
    if LLM == "httpx":
        llm = httpx2.AsyncClient(
            base_url=os.environ["OPENAI_BASE_URL"], timeout=timeout,
            headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
            # The openai client's default limits, which the other variant has.
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
        )
    elif LLM == "site":
        # As conversations/llm.py makes it: on aiohttp, every connection kept for reuse.
        llm = openai.AsyncOpenAI(
            base_url=os.environ["OPENAI_BASE_URL"], timeout=timeout, max_retries=1,
            http_client=openai.DefaultAioHttpClient(
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=1000)),
        )
    else:
        llm = openai.AsyncOpenAI(base_url=os.environ["OPENAI_BASE_URL"], timeout=timeout, max_retries=1)


async def ask(messages: list[Any]) -> tuple[str, str, int, int]:
    """The reply's text, model and token counts."""
    if LLM == "httpx":
        response = await llm.post("/chat/completions", json={
            "model": MODEL, "messages": messages, "max_tokens": 500,
        })
        response.raise_for_status()
        data = response.json()
        usage = data["usage"]
        return (data["choices"][0]["message"]["content"], data["model"],
                usage["prompt_tokens"], usage["completion_tokens"])
    if LLM == "site":
        response = await llm.post("/chat/completions", cast_to=httpx2.Response, body={
            "model": MODEL, "messages": messages, "max_tokens": 500,
        })
        data = json.loads(response.content)
        usage = data["usage"]
        return (data["choices"][0]["message"]["content"], data["model"],
                usage["prompt_tokens"], usage["completion_tokens"])
    completion = await llm.chat.completions.create(model=MODEL, messages=messages, max_tokens=500)
    return (completion.choices[0].message.content, completion.model,
            completion.usage.prompt_tokens, completion.usage.completion_tokens)


@csrf_exempt
@require_POST
async def chat(request):
    body = json.loads(request.body)
    session, text = body["sessionId"], body["message"]
    key = f"minimal:session:{session}"
    conversation = await cache.get(key)
    async with pool.connection() as conn:
        if conversation is None:
            row = await (await conn.execute(
                "SELECT id FROM conversations_conversation WHERE session_id = %s", [session])).fetchone()
            conversation = row[0]
            await cache.set(key, conversation, ex=3600)
        conversation = int(conversation)
        recent = await (await conn.execute(SELECT, [conversation, HISTORY])).fetchall()
        seq = recent[0][0] + 1
        await conn.execute(INSERT, [conversation, seq, "user", text, datetime.now(UTC), "", None, None, None])
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                *({"role": role, "content": content} for _, role, content in reversed(recent)),
                {"role": "user", "content": text}]
    if "text/event-stream" in request.headers.get("Accept", ""):
        return StreamingHttpResponse(streamed(session, conversation, seq, messages),
                                     content_type="text/event-stream")
    started = datetime.now(UTC)
    reply, model, prompt_tokens, completion_tokens = await ask(messages)
    latency_ms = round((datetime.now(UTC) - started).total_seconds() * 1000)
    async with pool.connection() as conn:
        await conn.execute(INSERT, [conversation, seq + 1, "assistant", reply, datetime.now(UTC), model,
                                    prompt_tokens, completion_tokens, latency_ms])
    return JsonResponse(answer(session, reply, model))


def answer(session: str, reply: str, model: str) -> dict:
    return {"reply": reply, "sessionId": session, "newSession": False, "stopped": False,
            "responder": "openai", "model": model}


def event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def streamed(session: str, conversation: int, seq: int, messages: list[Any]):
    """The minimal streamed turn's events: session, a delta for each chunk of the LLM's, done."""
    yield event("session", {"sessionId": session, "newSession": False})
    started = datetime.now(UTC)
    response = await llm.post("/chat/completions", cast_to=httpx2.Response, stream=True, body={
        "model": MODEL, "messages": messages, "max_tokens": 500,
        "stream": True, "stream_options": {"include_usage": True},
    })
    pieces, model, usage = [], MODEL, {}
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            model, usage = chunk.get("model", model), chunk.get("usage") or usage
            if chunk["choices"] and (piece := chunk["choices"][0]["delta"].get("content")):
                pieces.append(piece)
                yield event("delta", {"text": piece})
    finally:
        await response.aclose()
    reply = "".join(pieces)
    latency_ms = round((datetime.now(UTC) - started).total_seconds() * 1000)
    async with pool.connection() as conn:
        await conn.execute(INSERT, [conversation, seq + 1, "assistant", reply, datetime.now(UTC), model,
                                    usage.get("prompt_tokens"), usage.get("completion_tokens"), latency_ms])
    yield event("done", answer(session, reply, model))


urlpatterns = [path("api/chat", chat)]


async def application(scope, receive, send):
    """Django for HTTP; the lifespan (which Django does not speak) opens the pool and clients."""
    if scope["type"] != "lifespan":
        async with ThreadSensitiveContext(executor=sync_thread):
            return await django_application(scope, receive, send)
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await pool.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
