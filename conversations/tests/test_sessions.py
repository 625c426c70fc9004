"""Session ids and the Redis cache session:{id} -> conversation id in front of the database."""

import time
import uuid
from datetime import timedelta

import pytest

from conversations import sessions, shared_state
from conversations.models import Conversation
from conversations.sessions import InvalidSessionId, parse_session_id

from .client import post_chat


def test_parse_session_id_accepts_only_canonical_uuids():
    value = "a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91"
    assert parse_session_id(value) == uuid.UUID(value)
    for bad in [None, 1, value.upper(), value.replace("-", ""), f"urn:uuid:{value}", value + " "]:
        with pytest.raises(InvalidSessionId):
            parse_session_id(bad)


def test_short_hash_does_not_contain_the_id():
    session_id = uuid.uuid4()
    assert str(session_id)[:8] not in sessions.short_hash(session_id)
    assert sessions.short_hash(session_id) == sessions.short_hash(session_id)


@pytest.mark.django_db(transaction=True)
def test_the_mapping_is_cached_in_redis_under_the_prefix(client, shared_redis):
    _, body = post_chat(client, message="Hi")
    conversation = Conversation.objects.get(session_id=body["sessionId"])

    key = sessions.cache_key(uuid.UUID(body["sessionId"]))
    raw_keys = shared_redis.client.get_client().keys("*")
    assert shared_redis.make_key(key).encode() in raw_keys
    assert shared_redis.get(key) == conversation.pk
    ttl = shared_redis.ttl(key)
    assert 0 < ttl <= 24 * 3600


@pytest.mark.django_db(transaction=True)
def test_no_redis_key_holds_a_session_id(client, shared_redis):
    """Whoever can list the keys (monitoring, a backup, SCAN) must not learn a session id from them."""
    _, body = post_chat(client, message="Hi")
    session_id = uuid.UUID(body["sessionId"])
    raw_keys = b" ".join(shared_redis.client.get_client().keys("*"))
    for form in (str(session_id), session_id.hex, str(session_id)[:8]):
        assert form.encode() not in raw_keys
    assert b":session:v2:" in raw_keys  # the format is versioned


@pytest.mark.django_db(transaction=True)
def test_the_cache_ttl_never_outlives_the_idle_timeout(client, shared_redis, settings):
    settings.CHAT_SESSION_CACHE_SECONDS = 10**9
    _, body = post_chat(client, message="Hi")
    ttl = shared_redis.ttl(sessions.cache_key(uuid.UUID(body["sessionId"])))
    assert 0 < ttl <= settings.CHAT_SESSION_IDLE_DAYS * 86400


@pytest.mark.django_db(transaction=True)
def test_a_stale_cache_entry_is_not_trusted(client, shared_redis):
    _, first = post_chat(client, message="Hi")
    _, other = post_chat(client, message="Hi")
    other_conversation = Conversation.objects.get(session_id=other["sessionId"])
    # The cache says the first session's conversation is the other one's.
    stale_key = sessions.cache_key(uuid.UUID(first["sessionId"]))
    shared_redis.set(stale_key, other_conversation.pk)

    status, body = post_chat(client, message="Still me?", sessionId=first["sessionId"])

    assert status == 200
    assert body["sessionId"] != first["sessionId"]  # nothing went into the other conversation
    assert other_conversation.messages.count() == 2
    assert shared_redis.get(stale_key) is None


@pytest.mark.django_db(transaction=True)
def test_a_returning_turn_runs_a_constant_number_of_queries(client, shared_redis, settings, queries):
    settings.CHAT_HISTORY_MESSAGES = 10
    _, first = post_chat(client, message="Hi")
    counts = []
    for n in range(12):
        queries.clear()
        status, _ = post_chat(client, message=f"turn {n}", sessionId=first["sessionId"])
        assert status == 200
        counts.append(len(queries))
    # History read, question insert, reply insert: the history's length changes nothing.
    assert counts == [3] * 12


@pytest.mark.django_db(transaction=True)
def test_last_activity_moves_forward_once_it_is_a_minute_old(client, queries):
    _, first = post_chat(client, message="Hi")
    conversation = Conversation.objects.get()
    an_hour_ago = conversation.last_activity_at - timedelta(hours=1)
    Conversation.objects.update(last_activity_at=an_hour_ago)

    queries.clear()
    post_chat(client, message="Back again", sessionId=first["sessionId"])

    assert len(queries) == 4  # the activity update comes along
    conversation.refresh_from_db()
    question = conversation.messages.get(content="Back again")
    assert conversation.last_activity_at == question.created_at


@pytest.mark.django_db(transaction=True)
def test_redis_stopped_mid_test_and_started_again(client, own_redis):
    _, first = post_chat(client, message="Hi")
    assert sessions.cached_conversation_id(uuid.UUID(first["sessionId"])) is not None

    own_redis.stop()
    started = time.monotonic()
    status, second = post_chat(client, message="How long does shipping take?", sessionId=first["sessionId"])
    assert status == 200 and second["sessionId"] == first["sessionId"]
    status, new = post_chat(client, message="Hi")  # a new session, too
    assert status == 200
    assert time.monotonic() - started < 2.0  # no hang: the socket timeouts hold

    own_redis.start()
    shared_state.reset()  # as after the back-off of a few seconds
    status, third = post_chat(client, message="Thanks", sessionId=first["sessionId"])
    assert status == 200 and third["sessionId"] == first["sessionId"]
    assert sessions.cached_conversation_id(uuid.UUID(first["sessionId"])) is not None

    conversation = Conversation.objects.get(session_id=first["sessionId"])
    assert [m.content for m in conversation.messages.filter(role="user")] == [
        "Hi", "How long does shipping take?", "Thanks"
    ]
    assert Conversation.objects.count() == 2


def test_a_failing_cache_is_left_alone_for_a_while(own_redis):
    own_redis.stop()
    session_id = uuid.uuid4()
    assert sessions.cached_conversation_id(session_id) is None
    started = time.monotonic()
    for _ in range(20):
        assert sessions.cached_conversation_id(session_id) is None
    assert time.monotonic() - started < 0.1  # skipped, not timed out 20 times


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("planted", ["12", [1], {"id": 1}, True, 1.5])
def test_a_cache_entry_of_the_wrong_type_is_a_miss_and_is_dropped(client, shared_redis, planted):
    _, first = post_chat(client, message="Hi")
    key = sessions.cache_key(uuid.UUID(first["sessionId"]))
    shared_redis.set(key, planted)  # plain JSON, as anyone who can write to Redis could

    status, body = post_chat(client, message="Still me?", sessionId=first["sessionId"])

    assert status == 200 and body["sessionId"] == first["sessionId"]
    # Dropped, then written again as remember() writes it: the conversation's id.
    assert shared_redis.get(key) == Conversation.objects.get(session_id=first["sessionId"]).pk
