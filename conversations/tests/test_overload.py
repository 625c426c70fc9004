"""A worker past CHAT_MAX_TURNS_IN_FLIGHT refuses a turn at once (chatsite/asgi.py).

Driven through the project's ASGI application itself, as uvicorn calls it.
"""

import asyncio
import json
import time

import pytest

from chatsite import asgi
from conversations.models import Conversation

pytestmark = pytest.mark.django_db(transaction=True)


async def post_turn(body: dict) -> tuple[int, dict, dict]:
    raw = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "https", "path": "/api/chat", "raw_path": b"/api/chat", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 40000), "server": ("localhost", 443),
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode())],
    }
    messages = [{"type": "http.request", "body": raw, "more_body": False}]
    sent = []

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays until the answer

    async def send(message):
        sent.append(message)

    await asgi.application(scope, receive, send)
    headers = {name.decode().lower(): value.decode() for name, value in sent[0]["headers"]}
    return sent[0]["status"], headers, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_a_turn_past_the_cap_is_refused_at_once_and_one_under_it_is_served(settings, llm):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1
    llm.control("ok", delay=1.5)  # the first turn stays in flight meanwhile

    async def scenario():
        first = asyncio.ensure_future(post_turn({"message": "Where is my order?"}))
        while asgi.turns_in_flight == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # it is waiting on the LLM now
        started = time.monotonic()
        refused = await post_turn({"message": "And my refund?"})
        refused_after = time.monotonic() - started
        return await first, refused, refused_after

    served, (status, headers, body), refused_after = asyncio.run(scenario())

    assert served[0] == 200 and served[2]["reply"]
    assert status == 503
    assert body == {"error": {"code": "overloaded",
                              "message": "The assistant is busy right now; try again in a few seconds."}}
    assert headers["retry-after"] == str(settings.CHAT_OVERLOADED_RETRY_AFTER)
    assert refused_after < 1.0  # not after the turn in flight ended
    assert Conversation.objects.count() == 1  # the refused question was never stored
    assert asgi.turns_in_flight == 0

    status, _, body = asyncio.run(post_turn({"message": "And my refund?"}))
    assert status == 200 and body["reply"]  # the cap is free again


def test_the_count_is_given_back_when_a_turn_fails(settings):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1

    status, _, body = asyncio.run(post_turn({"message": ""}))

    assert status == 400 and body["error"]["code"] == "invalid_message"
    assert asgi.turns_in_flight == 0
    assert asyncio.run(post_turn({"message": "Hi"}))[0] == 200
