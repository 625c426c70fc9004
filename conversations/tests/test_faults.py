"""Faults injected into the deployed site: the LLM, Redis and PostgreSQL misbehaving, clients leaving."""

import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

from conversations.models import Conversation, Message
from devtools.processes import Site

from .client import SiteClient
from .helpers import site_env


@pytest.fixture(scope="module")
def quick_deployed_site(site, django_db_blocker, fake_llm_server):
    with django_db_blocker.unblock():
        env = site_env(fake_llm_server, CHAT_LLM_DEADLINE="2")
    quick = Site(env)
    yield quick
    quick.stop()


@pytest.fixture
def quick_site(quick_deployed_site, live_site):
    """A deployed site with a 2-second LLM deadline (and a clean database, the fake LLM reset)."""
    return quick_deployed_site


@pytest.mark.parametrize(
    ("mode", "params", "status"),
    [
        ("hang", {}, 504),
        ("drip", {"interval": 0.5}, 504),
        ("reset", {}, 502),
        ("status", {"status": 401}, 502),
        ("status", {"status": 429, "retry_after": "3600"}, 503),
        ("status", {"status": 500}, 502),
        ("malformed", {}, 502),
    ],
)
def test_llm_faults_end_within_the_deadline_and_a_retry_gives_one_reply(quick_site, llm, mode, params, status):
    api = SiteClient(quick_site)
    _, first, _ = api.send({"message": "Hi"})
    llm.control(mode, **params)
    body = {"message": "Where is my parcel?", "sessionId": first["sessionId"], "clientMessageId": "q-1"}

    started = time.monotonic()
    code, answer, _ = api.send(body)
    elapsed = time.monotonic() - started

    assert code == status
    assert answer["error"]["code"] == "llm_unavailable"
    assert answer["sessionId"] == first["sessionId"]
    assert elapsed < 2 + 1.5
    llm.control("ok")
    code, retried, _ = api.send(body)
    assert code == 200 and retried["reply"] == "Echo: Where is my parcel?"
    assert api.send(body)[1]["reply"] == retried["reply"]  # and again: the same reply

    conversation = Conversation.objects.get(session_id=first["sessionId"])
    assert conversation.messages.filter(content="Where is my parcel?").count() == 1
    assert conversation.messages.filter(role="assistant", client_message_id="q-1").count() == 1
    assert "WORKER TIMEOUT" not in quick_site.log()


def redis_command(port: int, *words: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall((f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)).encode())
        return sock.recv(1024)


@pytest.mark.parametrize("fault", ["stop", "pause"])
def test_redis_stopped_or_paused_with_turns_in_flight(live_site, llm, fake_llm_server, own_redis, fault):
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url))
    try:
        api = SiteClient(site)
        # One session a turn: two turns on one session at once would rightly get a 409.
        sessions = [api.send({"message": f"start {n}"})[1]["sessionId"] for n in range(12)]
        llm.control("ok", delay=1.0)

        def turn(n):
            return api.send({"message": f"in flight {n}", "sessionId": sessions[n]})

        with ThreadPoolExecutor(12) as pool:
            in_flight = [pool.submit(turn, n) for n in range(6)]
            time.sleep(0.3)
            if fault == "stop":
                own_redis.stop()
            else:
                assert redis_command(own_redis.port, "CLIENT", "PAUSE", "4000", "ALL").startswith(b"+OK")
            after = [pool.submit(turn, n) for n in range(6, 12)]
            results = [future.result() for future in in_flight + after]

        assert [status for status, _, _ in results] == [200] * 12
        assert all(body["sessionId"] == sessions[n] for n, (_, body, _) in enumerate(results))
        for n in range(12):
            assert Message.objects.filter(content=f"in flight {n}").count() == 1
            assert Message.objects.filter(content=f"Echo: in flight {n}").count() == 1
    finally:
        site.stop()


def test_no_stale_mapping_survives_redis_coming_back(live_site, llm, fake_llm_server, own_redis):
    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url))
    try:
        api = SiteClient(site)
        _, first, _ = api.send({"message": "Hi"})
        session_id = first["sessionId"]
        # Redis stalls while the customer deletes the conversation: the cache
        # entry cannot be deleted and is still there when Redis comes back.
        assert redis_command(own_redis.port, "CLIENT", "PAUSE", "1500", "WRITE").startswith(b"+OK")
        assert api.forget(session_id, timeout=10).status == 204
        time.sleep(1.6)

        status, body, _ = api.send({"message": "Hello again", "sessionId": session_id})

        assert status == 200
        assert body["sessionId"] != session_id  # a new conversation, not the deleted one
        assert not Conversation.objects.filter(session_id=session_id).exists()
    finally:
        site.stop()


def test_dropped_database_connections_are_replaced(live_site, llm):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "Hi"})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1  # the site's pooled connections

    status, body, _ = api.send({"message": "Still there?", "sessionId": first["sessionId"]})

    assert status == 200 and body["sessionId"] == first["sessionId"]


def test_a_client_leaving_a_stream_cancels_the_llm_call_and_keeps_the_partial_reply(live_site, llm):
    api = SiteClient(live_site)
    llm.control("ok", reply="one two three four five six seven eight", chunk_delay=0.4)
    conn = api.connect(timeout=10)
    conn.request("POST", "/api/chat", body=json.dumps({"message": "Tell me"}),
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    response = conn.getresponse()
    received = b""
    while received.count(b"event: delta") < 2:
        received += response.read1(4096)
    session_id = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])["sessionId"]
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and llm.stats()["cancelled"] < 1:
        time.sleep(0.05)
    assert llm.stats()["cancelled"] == 1
    reply = None
    while time.monotonic() < deadline and (reply is None or reply.status == "answering"):
        # The reply's row exists from the start, as the question's answer slot (turns.py).
        reply = Message.objects.filter(conversation__session_id=session_id, role="assistant").first()
        time.sleep(0.05)
    assert reply is not None and reply.status == "stopped"
    assert reply.content.startswith("one") and "eight" not in reply.content
    # The conversation goes on.
    llm.control("ok")
    status, body, _ = api.send({"message": "Again", "sessionId": session_id})
    assert status == 200 and body["sessionId"] == session_id


def test_an_id_that_is_not_ours_never_reaches_the_database(live_site, llm):
    made_up = str(uuid.uuid4())
    status, body, _ = SiteClient(live_site).send({"message": "Hi", "sessionId": made_up})
    assert status == 200 and body["sessionId"] != made_up
    assert not Conversation.objects.filter(session_id=made_up).exists()


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
def test_a_conversation_deleted_while_it_is_answered_ends_the_turn_cleanly(live_site, llm, accept):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "Hi"})
    session_id = first["sessionId"]
    llm.control("ok", delay=1.0)

    with ThreadPoolExecutor(1) as pool:
        if accept == "application/json":
            turn = pool.submit(api.send, {"message": "Slow one", "sessionId": session_id})
        else:
            turn = pool.submit(api.chat, "Slow one", session_id, stream=True)
        time.sleep(0.4)
        assert api.forget(session_id, timeout=10).status == 204
        result = turn.result()

    if accept == "application/json":
        status, body, _ = result
        assert (status, body["error"]["code"]) == (404, "session_not_found")
    else:
        stream = result.ok()
        assert "event: error" in stream and "session_not_found" in stream
    assert not Conversation.objects.filter(session_id=session_id).exists()
    assert "Traceback" not in live_site.log()


def test_a_client_leaving_while_its_question_is_stored_does_not_block_the_conversation(live_site, llm):
    api = SiteClient(live_site)
    _, first, _ = api.send({"message": "Hi"})
    session_id = first["sessionId"]
    body = {"message": "Are you there?", "sessionId": session_id, "clientMessageId": "q-left"}

    # Hold the question's INSERT back with a table lock, and leave meanwhile.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE conversations_message IN SHARE ROW EXCLUSIVE MODE")
        conn = api.connect(timeout=10)
        conn.request("POST", "/api/chat", body=json.dumps(body), headers={"Content-Type": "application/json"})
        time.sleep(0.5)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        time.sleep(0.5)

    deadline = time.monotonic() + 5
    question = None
    while time.monotonic() < deadline and (question is None or question.status != "failed"):
        question = Message.objects.filter(client_message_id="q-left", role="user").first()
        time.sleep(0.05)
    assert question is not None and question.status == "failed"  # kept, and retryable
    status, answer, _ = api.send({"message": "Hello?", "sessionId": session_id})
    assert status == 200 and answer["sessionId"] == session_id  # not 409 for half a minute
    status, answer, _ = api.send(body)
    assert status == 409 and answer["error"]["code"] == "retry_superseded"


def test_waiting_pages_get_their_staff_reply_with_redis_stopped_and_database_connections_dropped(
        live_site, llm, fake_llm_server, own_redis):
    """A served worker's pages look through the turn store (one statement on the event loop) and its
    async Redis client (updates._look): Redis stopped and the site's database connections killed
    while they wait, a staff reply still reaches each page, and no page sees an error."""
    from django.contrib.auth.models import User

    from conversations import handoff

    site = Site(site_env(fake_llm_server, REDIS_URL=own_redis.url, CHAT_UPDATES_WAIT="20"))
    try:
        api = SiteClient(site)
        pages = []
        for n in range(4):
            session_id = api.send({"message": f"Hi {n}"})[1]["sessionId"]
            conversation_id = Conversation.objects.of_session(session_id).get().pk
            handoff.request_person(conversation_id)  # its notice is message 2
            pages.append((session_id, conversation_id))
        staff = User.objects.create_user("mia-login", is_staff=True)

        with ThreadPoolExecutor(len(pages)) as pool:
            polls = [pool.submit(api.updates, session_id, 2, "waiting", 30) for session_id, _ in pages]
            time.sleep(1.0)  # all four wait
            own_redis.stop()
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE datname = current_database() AND pid <> pg_backend_pid()")
                assert cursor.fetchone()[0] >= 1  # the site's pooled connections
            for _, conversation_id in pages:
                handoff.staff_reply(conversation_id, staff, "Mia", "Hello, Mia here.", f"token-{conversation_id}")
            answers = [poll.result() for poll in polls]

        for answer in answers:
            body = answer.ok()
            assert body["handoff"] == "staff"
            assert [(m["role"], m["content"]) for m in body["messages"]] == [("staff", "Hello, Mia here.")]
    finally:
        site.stop()
