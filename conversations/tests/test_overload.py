"""A turn that finds no place in its worker (chatsite/admission.py) waits for one, up to
CHAT_TURN_QUEUE_SECONDS, and is then refused (chatsite/asgi.py).

Driven through the project's ASGI application itself, as uvicorn calls it.
"""

import asyncio
import json
import time

import pytest

from chatsite import asgi
from conversations.models import Conversation

from .client import asgi_exchange

pytestmark = pytest.mark.django_db(transaction=True)


async def post_turn(body: dict) -> tuple[int, dict, dict]:
    """POST /api/chat to the application, over HTTPS as in production; (status, headers, JSON)."""
    status, headers, content = await asgi_exchange(
        "POST", "/api/chat", {"host": "localhost", "content-type": "application/json"},
        json.dumps(body).encode(), scheme="https")
    return status, headers, json.loads(content)


def a_turn_behind_another() -> tuple[tuple, tuple, float]:
    """A first turn in flight (waiting on the LLM), then a second one: (the first's answer, the
    second's, and how long the second took)."""
    async def scenario():
        first = asyncio.ensure_future(post_turn({"message": "Where is my order?"}))
        while asgi.turns.in_flight == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # it is waiting on the LLM now
        started = time.monotonic()
        second = await post_turn({"message": "And my refund?"})
        took = time.monotonic() - started
        return await first, second, took

    return asyncio.run(scenario())


def test_with_no_queue_a_turn_past_the_cap_is_refused_at_once_and_one_under_it_is_served(settings, llm):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1
    settings.CHAT_TURN_QUEUE_SECONDS = 0
    llm.control("ok", delay=1.5)  # the first turn stays in flight meanwhile

    served, (status, headers, body), refused_after = a_turn_behind_another()

    assert served[0] == 200 and served[2]["reply"]
    assert status == 503
    assert body == {"error": {"code": "overloaded",
                              "message": "The assistant is busy right now; try again in a few seconds."}}
    assert headers["retry-after"] == str(settings.CHAT_OVERLOADED_RETRY_AFTER)
    assert refused_after < 1.0  # not after the turn in flight ended
    assert Conversation.objects.count() == 1  # the refused question was never stored
    assert asgi.turns.in_flight == 0

    status, _, body = asyncio.run(post_turn({"message": "And my refund?"}))
    assert status == 200 and body["reply"]  # the cap is free again


def test_the_count_is_given_back_when_a_turn_fails(settings):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1

    status, _, body = asyncio.run(post_turn({"message": ""}))

    assert status == 400 and body["error"]["code"] == "invalid_message"
    assert asgi.turns.in_flight == 0
    assert asyncio.run(post_turn({"message": "Hi"}))[0] == 200


def test_a_turn_past_the_places_waits_for_one_and_is_served(settings, llm):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1
    settings.CHAT_TURN_QUEUE_SECONDS = 5
    llm.control("ok", delay=1.5)

    first, second, waited = a_turn_behind_another()

    assert first[0] == 200 and second[0] == 200 and second[2]["reply"]
    assert waited > 2.2  # it began once the first had ended (1.2 s later), then its own 1.5 s on the LLM
    assert Conversation.objects.count() == 2
    assert asgi.turns.in_flight == 0 and not asgi.turns.waiting


def test_a_turn_that_waits_longer_than_the_queue_allows_is_refused_and_not_stored(settings, llm):
    settings.CHAT_MAX_TURNS_IN_FLIGHT = 1
    settings.CHAT_TURN_QUEUE_SECONDS = 0.3
    llm.control("ok", delay=2.0)

    first, (status, headers, body), waited = a_turn_behind_another()

    assert first[0] == 200
    assert status == 503 and body["error"]["code"] == "overloaded" and "retry-after" in headers
    assert 0.3 <= waited < 1.2  # not after the turn in flight ended
    assert Conversation.objects.count() == 1
    assert asgi.turns.in_flight == 0 and not asgi.turns.waiting
