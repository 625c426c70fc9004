"""Conversation and Message methods support staff use, and the idle timeout with a moved clock."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import forget, sessions
from conversations.models import Conversation, Message, session_id_range

from . import data
from .client import post_chat

pytestmark = pytest.mark.django_db(transaction=True)

SESSION_ID = uuid.UUID("a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91")


# --- finding a conversation ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "a1c9a0a3", "A1C9A0A3", " a1c9a0a3 ", str(SESSION_ID), str(SESSION_ID).upper(),
    SESSION_ID.hex, "a1c9a0a3-42af", SESSION_ID,
])
def test_for_session_finds_by_reference_or_id(text):
    wanted = data.conversation(session_id=SESSION_ID)
    # The ids either side of the reference's range.
    data.conversation(session_id=uuid.UUID("a1c9a0a2-ffff-4fff-bfff-ffffffffffff"))
    data.conversation(session_id=uuid.UUID("a1c9a0a4-0000-4000-8000-000000000000"))

    assert Conversation.objects.for_session(text) == wanted


def test_for_session_explains_what_it_cannot_find():
    data.conversation(session_id=SESSION_ID)
    data.conversation(session_id=uuid.UUID("b0000000-0000-4000-8000-000000000001"))
    data.conversation(session_id=uuid.UUID("b0000000-0000-4000-8000-000000000002"))

    with pytest.raises(Conversation.DoesNotExist, match="'a1c9a0a4'"):
        Conversation.objects.for_session("a1c9a0a4")
    with pytest.raises(Conversation.MultipleObjectsReturned, match="give more of the session id"):
        Conversation.objects.for_session("b0000000")
    assert Conversation.objects.for_session("b0000000-0000-4000-8000-000000000002").session_id.hex.endswith("2")
    for bad in ["a1c9a0a", "a1c9a0a3x", "", "g1c9a0a3", "a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91-00"]:
        with pytest.raises(ValueError, match="neither a session id nor"):
            Conversation.objects.for_session(bad)


def test_for_session_includes_expired_conversations_unless_asked_not_to(settings):
    expired = data.conversation(session_id=SESSION_ID,
                                started=timezone.now() - timedelta(days=settings.CHAT_SESSION_IDLE_DAYS + 1))
    assert Conversation.objects.for_session("a1c9a0a3") == expired
    with pytest.raises(Conversation.DoesNotExist):
        Conversation.objects.active().for_session("a1c9a0a3")


def test_the_reference_range_is_one_indexed_range_query():
    low, high = session_id_range("a1c9a0a3")
    assert (str(low), str(high)) == ("a1c9a0a3-0000-0000-0000-000000000000", "a1c9a0a3-ffff-ffff-ffff-ffffffffffff")
    assert session_id_range(str(SESSION_ID)) == (SESSION_ID, SESSION_ID)

    with CaptureQueriesContext(connection) as queries:
        list(Conversation.objects.matching("a1c9a0a3"))
    assert "BETWEEN" in queries[0]["sql"] and "LIKE" not in queries[0]["sql"]


# --- reading it ----------------------------------------------------------------

def test_transcript_reads_like_the_conversation():
    conversation = data.conversation(turns=2, model="gpt-4o-mini", latency_ms=812)
    Message.objects.create(conversation=conversation, seq=4, role="user", content="Line one\nLine two",
                           status=Message.Status.FAILED, created_at=timezone.now())
    Message.objects.filter(conversation=conversation, seq=3).update(status=Message.Status.STOPPED)
    Conversation.objects.filter(pk=conversation.pk).update(failed_turns=1)
    conversation.refresh_from_db()

    with CaptureQueriesContext(connection) as queries:
        transcript = conversation.transcript()

    assert len(queries) == 1
    lines = transcript.splitlines()
    assert lines[0] == f"Conversation {conversation.reference}"  # never the session id
    assert lines[1].startswith("Started ") and lines[1].endswith("5 messages, 1 failed turn")
    bodies = [line for line in lines if line.startswith("    ")]
    assert bodies == ["    Question 1?", "    Answer 1.", "    Question 2?", "    Answer 2.",
                      "    Line one", "    Line two"]
    headings = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert headings == [
        "Customer:",
        "Assistant (gpt-4o-mini, 812 ms, 50+20 tokens):",
        "Customer:",
        "Assistant (gpt-4o-mini, 812 ms, 50+20 tokens) [stopped by the customer]:",
        "Customer [failed: not answered]:",
    ]


def test_with_summary_counts_messages_and_names_the_latest_model():
    conversation = data.conversation(turns=2, model="gpt-4o-mini")
    Message.objects.filter(conversation=conversation, seq=1).update(model="offline-faq")
    failed = data.conversation(failed_last=True)

    rows = {c.pk: c for c in Conversation.objects.with_summary()}

    assert (rows[conversation.pk].message_count, rows[conversation.pk].latest_model) == (4, "gpt-4o-mini")
    assert (rows[failed.pk].message_count, rows[failed.pk].latest_model) == (1, None)


def test_forget_deletes_conversations_messages_and_cache_entries():
    gone, kept = data.conversations(2, turns=2)
    for conversation in (gone, kept):
        sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)

    assert forget.conversations(Conversation.objects.filter(pk=gone.pk)) == (1, 4)

    assert list(Conversation.objects.all()) == [kept] and Message.objects.count() == 4
    assert sessions.cached_conversation_id(gone.session_id) is None
    assert sessions.cached_conversation_id(kept.session_id) == kept.pk
    assert forget.conversations(Conversation.objects.filter(pk=gone.pk)) == (0, 0)


# --- the idle timeout, with a moved clock ----------------------------------------

@pytest.fixture
def clock(monkeypatch):
    """Move the server's clock: clock(days=31) makes timezone.now() 31 days later."""

    def move(**delta):
        moved = real_now() + timedelta(**delta)
        monkeypatch.setattr(timezone, "now", lambda: moved)

    real_now = timezone.now
    return move


def test_a_session_expires_once_idle_longer_than_the_timeout(client, clock, settings):
    settings.CHAT_SESSION_IDLE_DAYS = 30
    _, first = post_chat(client, message="Hi")
    conversation = Conversation.objects.get(session_id=first["sessionId"])

    clock(days=30, seconds=-60)  # a minute before the timeout: still the same conversation
    assert list(Conversation.objects.active()) == [conversation]
    assert client.get("/api/history", headers={"X-Session-Id": first["sessionId"]}).status_code == 200
    status, second = post_chat(client, message="Still there?", sessionId=first["sessionId"])
    assert status == 200 and second["sessionId"] == first["sessionId"]

    clock(days=60, seconds=-59)  # 30 days and a second after that last turn
    assert list(Conversation.objects.active()) == [] and list(Conversation.objects.idle()) == [conversation]
    response = client.get("/api/history", headers={"X-Session-Id": first["sessionId"]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"
    status, third = post_chat(client, message="Hello again", sessionId=first["sessionId"])
    assert status == 200 and third["sessionId"] != first["sessionId"] and third["newSession"] is True
    assert conversation.messages.count() == 4  # nothing went into the expired conversation


def test_an_expired_session_is_unknown_even_while_its_cache_entry_lives(client, clock):
    _, first = post_chat(client, message="Hi")
    session_id = uuid.UUID(first["sessionId"])
    assert sessions.cached_conversation_id(session_id) is not None

    clock(days=31)  # the cache's own clock has not moved: the entry is still there

    status, second = post_chat(client, message="Hi again", sessionId=first["sessionId"])
    assert status == 200 and second["sessionId"] != first["sessionId"]
    assert sessions.cached_conversation_id(session_id) is None  # dropped as stale


@pytest.mark.parametrize(("idle_for", "ttl_at_most"), [
    (timedelta(days=29, hours=23), 3600),  # an hour left: cached for at most that hour
    (timedelta(days=1), 24 * 3600),  # plenty left: the cache's own limit
])
def test_the_cache_entry_never_outlives_the_idle_timeout(shared_redis, clock, settings, idle_for, ttl_at_most):
    settings.CHAT_SESSION_IDLE_DAYS = 30
    settings.CHAT_SESSION_CACHE_SECONDS = 24 * 3600
    conversation = data.conversation()
    clock(seconds=(idle_for - (timezone.now() - conversation.last_activity_at)).total_seconds())

    sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)

    ttl = shared_redis.ttl(sessions.cache_key(conversation.session_id))
    assert ttl_at_most - 5 <= ttl <= ttl_at_most


def test_an_expired_session_is_not_cached_at_all(shared_redis, clock):
    conversation = data.conversation()
    clock(days=31)
    sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)
    assert shared_redis.get(sessions.cache_key(conversation.session_id)) is None
