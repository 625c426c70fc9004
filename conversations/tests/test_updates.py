"""GET /api/updates: the long poll an open page waits on for staff replies and notices.

The waits run in the test's event loop through Django's AsyncClient, while the
changes that should end them are made from worker threads, as the admin makes them.
"""

import asyncio
import gc
import json
import random
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, connections
from django.test import AsyncClient

from conversations import forget, handoff, runtime, updates
from conversations.errors import DatabaseUnavailable
from conversations.models import Conversation

from .client import asgi_scope, get_updates, post_chat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def short_waits(settings):
    settings.CHAT_UPDATES_WAIT = 10.0
    settings.CHAT_UPDATES_TICK = 0.05
    # As deployed (chatsite/asgi.py): the API's async-only middleware. Under the
    # sync ones each waiting poll would hold the one thread they run in.
    settings.MIDDLEWARE = settings.API_MIDDLEWARE


def started(client) -> dict:
    _, body = post_chat(client, message="What is your return policy?")
    return body


def staff_member() -> User:
    return User.objects.create_user("mia-login", is_staff=True)


def test_answers_at_once_with_the_messages_after_the_cursor(client, settings):
    body = started(client)

    status, first = get_updates(client, body["sessionId"], after=-1)
    status_later, later = get_updates(client, body["sessionId"], after=0)

    assert status == status_later == 200
    assert first["sessionId"] == body["sessionId"]
    assert first["handoff"] == "assistant" and first["turnInProgress"] is False
    assert [(m["seq"], m["role"], m["author"]) for m in first["messages"]] == [
        (0, "user", None), (1, "assistant", None)
    ]
    assert first["messages"][1]["content"] == body["reply"]
    assert [m["seq"] for m in later["messages"]] == [1]


def test_answers_at_once_when_the_state_differs_from_the_pages(client):
    body = started(client)
    handoff.request_person(Conversation.objects.get().pk)

    status, answer = get_updates(client, body["sessionId"], after=99, state="assistant")

    assert status == 200
    assert answer["handoff"] == "waiting" and answer["messages"] == []


@pytest.mark.parametrize("wait, least, most", [
    (0.3, 0.3 * 0.25, None),  # updates.page_wait: up to three quarters less
    (0, 0.0, 2.0),  # the long poll turned off: each poll answers at once
])
def test_with_nothing_new_it_waits_then_answers_empty(client, settings, wait, least, most):
    settings.CHAT_UPDATES_WAIT = wait
    body = started(client)

    began = time.monotonic()
    status, answer = get_updates(client, body["sessionId"], after=1, state="assistant")

    assert status == 200
    assert answer == {"sessionId": body["sessionId"], "handoff": "assistant", "turnInProgress": False,
                      "messages": [], "hasMore": False}
    assert time.monotonic() - began >= least
    if most is not None:
        assert time.monotonic() - began < most


class Clock:
    """A worker's loop clock for the watcher's bookings (Watcher.book reads only its time())."""

    def __init__(self):
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def ask_again_and_again(arrivals: list[float], seconds: float) -> list[tuple[float, float]]:
    """Pages that first ask at `arrivals` (seconds from now) and ask again each time their wait
    (updates.page_wait) runs out, for `seconds`: each poll's (time asked, wait)."""
    clock = Clock()
    watcher = updates.Watcher(clock)  # type: ignore[arg-type]  # book() reads only its time()
    start, asked = clock.now, []
    due = sorted(start + arrival for arrival in arrivals)
    while due and due[0] < start + seconds:
        clock.now = due[0]
        ready = [at for at in due if at <= clock.now + 0.01]
        due = due[len(ready):]
        for _ in ready:
            wait = updates.page_wait(watcher)
            asked.append((clock.now - start, wait))
            due.append(clock.now + wait)
        due.sort()
    return asked


def test_pages_opened_together_do_not_all_ask_again_together(settings):
    """Every page reconnecting within two seconds (after a deploy): their next asks are spread over
    three quarters of the wait, not the quarter a random wait alone spreads them over (1,000 a second
    here), and none waits longer than CHAT_UPDATES_WAIT."""
    settings.CHAT_UPDATES_WAIT = 20.0
    asked = ask_again_and_again([i / 2500 for i in range(5000)], seconds=60)

    assert all(5.0 <= wait <= 20.0 for _, wait in asked)
    # Each round after the crowd's first: how many asked in the busiest second.
    for first, last in ((5, 22), (22, 40), (40, 60)):
        per_second: dict[int, int] = {}
        for at, _ in asked:
            if first <= at < last:
                per_second[int(at)] = per_second.get(int(at), 0) + 1
        assert max(per_second.values()) <= 480, (first, per_second)  # an even share is 5,000 / 17.5


def test_pages_that_ask_at_their_own_times_wait_as_before(settings):
    """A worker in its steady state: pages that came over a while wait three quarters to all of the
    wait, at random, as they did before the bookings (once the first pages' round is over: 100
    pages a second coming to an empty worker are a crowd of its first seconds)."""
    settings.CHAT_UPDATES_WAIT = 20.0
    rng = random.Random(7)
    asked = ask_again_and_again([rng.uniform(0, 20) for _ in range(2000)], seconds=100)

    waits = [wait for at, wait in asked if at >= 40]
    assert len(waits) > 6000
    assert all(15.0 <= wait <= 20.0 for wait in waits)
    assert max(waits) - min(waits) > 4.5
    assert 17.0 < sum(waits) / len(waits) < 18.0


@pytest.mark.parametrize("params, headers, code", [
    ({"after": "0"}, {}, "invalid_session_id"),
    ({"after": "0"}, {"X-Session-Id": "not-a-uuid"}, "invalid_session_id"),
    ({}, None, "invalid_after"),
    ({"after": "x"}, None, "invalid_after"),
    ({"after": "-2"}, None, "invalid_after"),
    ({"after": "1.5"}, None, "invalid_after"),
    ({"after": "0", "state": "closed"}, None, "invalid_state"),
])
def test_bad_requests_get_a_json_error(client, params, headers, code):
    body = started(client)
    response = client.get("/api/updates", params,
                          headers={"X-Session-Id": body["sessionId"]} if headers is None else headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_an_unknown_session_is_not_found(client):
    status, answer = get_updates(client, uuid.uuid4(), after=-1)
    assert status == 404 and answer["error"]["code"] == "session_not_found"


async def _wait_while(action, session_id, **params):
    """Start a poll, do `action` in a worker thread once it waits, and return the poll's answer."""
    client = AsyncClient()
    poll = asyncio.ensure_future(
        client.get("/api/updates", params, headers={"X-Session-Id": str(session_id)})
    )
    await asyncio.sleep(0.5)
    assert not poll.done(), "the poll should be waiting"
    began = time.monotonic()
    await in_a_thread(action)
    response = await poll
    return response.status_code, response.json(), time.monotonic() - began


async def in_a_thread(action) -> None:
    """Make a change as the admin makes it, from a worker thread, and hand that thread's database
    connection back to the pool: the thread outlives the test, and its connection would stay
    taken, until later tests found the test process's pool empty."""
    def run():
        try:
            action()
        finally:
            connections.close_all()

    await sync_to_async(run, thread_sensitive=False)()


def reply_from_staff(conversation_id):
    def action():
        handoff.staff_reply(conversation_id, staff_member(), "Mia", "Hello, Mia here.", "token-1")
    return action


@pytest.mark.parametrize("cache", ["shared_redis", "local_memory"])
def test_a_staff_reply_ends_a_waiting_poll(client, request, cache):
    if cache == "shared_redis":
        request.getfixturevalue("shared_redis")  # versions in Redis, one MGET a tick
    # else the per-process cache: the watcher asks the database each tick
    body = started(client)
    conversation = Conversation.objects.get()
    handoff.request_person(conversation.pk)

    status, answer, waited = async_to_sync(_wait_while)(
        reply_from_staff(conversation.pk), body["sessionId"], after=2, state="waiting"
    )

    assert status == 200
    assert answer["handoff"] == "staff"
    assert [(m["seq"], m["role"], m["author"], m["content"]) for m in answer["messages"]] == [
        (3, "staff", "Mia", "Hello, Mia here.")
    ]
    assert waited < 5  # woken, not the 10 s wait running out


async def _served_poll(session_id: str, query: str, leave: asyncio.Event):
    """GET /api/updates through chatsite.asgi's application, as uvicorn serves it: (the task, what
    it sends). The client leaves when `leave` is set."""
    from chatsite import asgi

    sent, messages = [], [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = asgi_scope("GET", "/api/updates", [(b"host", b"testserver"), (b"x-session-id", session_id.encode())],
                       query=query)
    return asyncio.ensure_future(asgi.application(scope, receive, send)), sent


async def _until_waiting(count: int) -> None:
    async with asyncio.timeout(5):
        while sum(len(w) for w in runtime.current().watcher.waiters.values()) != count:
            await asyncio.sleep(0.01)


@pytest.mark.usefixtures("rebuilt_api_handler")
def test_a_served_poll_waits_below_django_then_the_view_answers(client, caplog):
    """Served (chatsite/asgi.py), a page's poll waits before Django makes a request of it
    (views.park_poll): ten thousand waiting pages keep no request, middleware or view. What
    the wait found is answered by the view, through the API's middleware, whose log line
    counts the wait."""
    body = started(client)
    conversation = Conversation.objects.get()
    handoff.request_person(conversation.pk)

    async def scenario():
        poll, sent = await _served_poll(body["sessionId"], "after=2&state=waiting", asyncio.Event())
        await _until_waiting(1)
        requests = [o for o in gc.get_objects() if type(o) is ASGIRequest]  # not isinstance: a lazy object would evaluate
        await asyncio.sleep(0.5)
        await in_a_thread(reply_from_staff(conversation.pk))
        await asyncio.wait_for(poll, 5)
        return requests, sent

    requests, sent = async_to_sync(scenario)()

    assert requests == []
    start, answer = sent[0], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    headers = {name.lower(): value for name, value in start["headers"]}
    assert start["status"] == 200 and headers[b"cache-control"] == b"no-store" and b"x-request-id" in headers
    assert [(m["role"], m["content"]) for m in answer["messages"]] == [("staff", "Hello, Mia here.")]
    [logged] = [r for r in caplog.records if r.name == "chatsite.requests" and getattr(r, "route", "") == "api/updates"]
    assert logged.status == 200 and logged.duration_ms >= 500


@pytest.mark.usefixtures("rebuilt_api_handler")
def test_a_served_poll_whose_page_leaves_stops_waiting_and_answers_no_one(client):
    body = started(client)

    async def scenario():
        leave = asyncio.Event()
        poll, sent = await _served_poll(body["sessionId"], "after=1", leave)
        await _until_waiting(1)
        leave.set()
        await asyncio.wait_for(poll, 1)  # not the 10 s wait
        return sent, runtime.current().watcher.waiters

    sent, waiters = async_to_sync(scenario)()

    assert sent == [] and waiters == {}


@pytest.mark.usefixtures("rebuilt_api_handler")
def test_a_served_poll_the_view_refuses_does_not_wait(client):
    async def scenario():
        poll, sent = await _served_poll(str(uuid.uuid4()), "after=x", asyncio.Event())
        await asyncio.wait_for(poll, 1)
        return sent

    sent = async_to_sync(scenario)()

    assert sent[0]["status"] == 400 and json.loads(sent[1]["body"])["error"]["code"] == "invalid_after"


@pytest.mark.usefixtures("rebuilt_api_handler")
def test_a_served_poll_with_the_database_gone_answers_503_and_logs_no_traceback(client, caplog, monkeypatch):
    """The database unreachable (the store's DatabaseUnavailable, logged where it failed): the wait
    below Django gives up, the view looks again and answers 503. No traceback is logged for a
    failure the site decides how to answer: during an outage every open page's poll meets it."""
    body = started(client)

    async def unavailable(rt, session_id, after):
        raise DatabaseUnavailable

    monkeypatch.setattr(updates, "_look", unavailable)

    async def scenario():
        poll, sent = await _served_poll(body["sessionId"], "after=1", asyncio.Event())
        await asyncio.wait_for(poll, 5)
        return sent

    sent = async_to_sync(scenario)()

    assert sent[0]["status"] == 503
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]["code"] == "database_unavailable"
    assert [(r.name, r.getMessage()) for r in caplog.records if r.exc_info] == []


def test_with_redis_stopped_the_database_wakes_the_poll(client, own_redis):
    body = started(client)
    conversation = Conversation.objects.get()
    handoff.request_person(conversation.pk)
    own_redis.stop()

    status, answer, waited = async_to_sync(_wait_while)(
        reply_from_staff(conversation.pk), body["sessionId"], after=2, state="waiting"
    )

    assert status == 200
    assert [m["role"] for m in answer["messages"]] == ["staff"]
    assert waited < 5


def test_a_version_lost_with_redis_is_seen_by_the_next_poll(client, own_redis):
    body = started(client)
    conversation = Conversation.objects.get()
    own_redis.stop()
    handoff.request_person(conversation.pk)  # its version cannot be set
    own_redis.start()

    status, answer = get_updates(client, body["sessionId"], after=1, state="assistant")

    assert status == 200 and answer["handoff"] == "waiting"
    assert [m["role"] for m in answer["messages"]] == ["event"]


def test_a_conversation_deleted_while_waited_on_ends_the_poll(client):
    body = started(client)

    def delete():
        forget.conversations(Conversation.objects.all())

    status, answer, _ = async_to_sync(_wait_while)(delete, body["sessionId"], after=1)

    assert status == 404 and answer["error"]["code"] == "session_not_found"


def test_waiting_pages_hold_no_database_connection_or_thread(client, postgres, shared_redis):
    """100 pages wait on 100 conversations; none holds a connection or a thread meanwhile."""
    session_ids = [started(client)["sessionId"] for _ in range(100)]
    last = Conversation.objects.get(session_id=session_ids[-1])

    def open_connections():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return cursor.fetchone()[0]

    async def scenario():
        client = AsyncClient()
        polls = [
            asyncio.ensure_future(client.get("/api/updates", {"after": 1}, headers={"X-Session-Id": sid}))
            for sid in session_ids
        ]
        await asyncio.sleep(2)
        waiting = sum(len(w) for w in runtime.current().watcher.waiters.values())
        threads, connections = threading.active_count(), await sync_to_async(open_connections)()
        await in_a_thread(reply_from_staff(last.pk))
        done, _ = await asyncio.wait(polls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        return waiting, threads, connections, [p for p in done if not p.cancelled()]

    before, connections_before = threading.active_count(), open_connections()
    waiting, threads, connections, answered = async_to_sync(scenario)()

    assert waiting == 100
    # A few for the pool and the worker threads that come and go, not one per page.
    assert threads - before < 20
    # At most the pool's connections more (other tests' deployed site may hold some of its own).
    assert connections - connections_before <= connection.settings_dict["OPTIONS"]["pool"]["max_size"]
    assert len(answered) == 1 and answered[0].result().json()["messages"][0]["role"] == "staff"


def test_pages_asking_together_look_at_their_conversations_a_few_at_a_time(monkeypatch):
    """Thousands of pages opened in a second queue for their look (updates.LOOKS_AT_ONCE) rather
    than all press on Redis's and the database's pools at once."""
    monkeypatch.setattr(updates, "LOOKS_AT_ONCE", 3)
    looking, most = 0, 0

    async def look(rt, session_id, after):
        nonlocal looking, most
        looking += 1
        most = max(most, looking)
        await asyncio.sleep(0.01)
        looking -= 1
        return None, None  # an unknown session: answered at once

    monkeypatch.setattr(updates, "_look", look)

    async def pages():
        rt = runtime.current()
        return await asyncio.gather(*(updates.wait(rt, uuid.uuid4(), -1, None, 5) for _ in range(40)))

    assert asyncio.run(pages()) == [None] * 40
    assert most == 3
