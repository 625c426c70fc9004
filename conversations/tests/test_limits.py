"""Abuse and cost limits: rates per IP, per session and of new sessions; daily token budgets."""

import uuid

import pytest

from conversations import limits
from conversations.limits import Rate, parse_rate
from conversations.models import Conversation, Message

from .helpers import post_chat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("value", "rate"),
    [("20/m", Rate(20, 60)), ("10/h", Rate(10, 3600)), ("5/10s", Rate(5, 10)), ("1/d", Rate(1, 86400)),
     ("0", None), ("", None), ("0/m", None)],
)
def test_parse_rate(value, rate):
    assert parse_rate(value) == rate


@pytest.mark.parametrize("value", ["20", "x/m", "20/w", "-1/m"])
def test_parse_rate_refuses_nonsense(value):
    with pytest.raises(ValueError):
        parse_rate(value)


@pytest.fixture(params=["redis", "local"])
def counters(request, settings):
    """Run a test with the counters in Redis, and again with the per-process fallback."""
    if request.param == "redis":
        return request.getfixturevalue("shared_redis")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return None


def test_turns_per_ip_are_limited(client, settings, counters):
    settings.CHAT_RATE_LIMIT_IP = "3/m"
    statuses = [post_chat(client, message="Hi")[0] for _ in range(3)]
    status, body = post_chat(client, message="one too many")
    response = client.post("/api/chat", data={"message": "again"}, content_type="application/json")

    assert statuses == [200, 200, 200]
    assert status == 429
    assert body["error"]["code"] == "rate_limited"
    assert 0 < int(response["Retry-After"]) <= 61
    assert not Message.objects.filter(content="one too many").exists()
    # Another address is not affected.
    other = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                        REMOTE_ADDR="192.0.2.7")
    assert other.status_code == 200


def test_turns_per_session_are_limited(client, settings, counters):
    settings.CHAT_RATE_LIMIT_SESSION = "2/m"
    _, first = post_chat(client, message="Hi")
    assert post_chat(client, message="two", sessionId=first["sessionId"])[0] == 200
    assert post_chat(client, message="three", sessionId=first["sessionId"])[0] == 200
    status, body = post_chat(client, message="four", sessionId=first["sessionId"])
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert post_chat(client, message="Hi")[0] == 200  # a new session is not affected


def test_new_sessions_per_ip_are_limited_even_with_made_up_ids(client, settings, counters):
    settings.CHAT_RATE_LIMIT_NEW_SESSIONS = "2/h"
    _, first = post_chat(client, message="Hi")
    post_chat(client, message="Hi")
    status, body = post_chat(client, message="Hi")
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    status, _ = post_chat(client, message="Hi", sessionId=str(uuid.uuid4()))  # unknown id: would be new
    assert status == 429
    assert Conversation.objects.count() == 2
    # Continuing a conversation is not a new session.
    assert post_chat(client, message="more", sessionId=first["sessionId"])[0] == 200


def test_a_spoofed_forwarded_for_changes_nothing_without_a_trusted_proxy(client, settings):
    settings.CHAT_RATE_LIMIT_IP = "2/m"
    for n in range(2):
        assert post_chat(client, message="Hi", headers={"X-Forwarded-For": f"198.51.100.{n}"})[0] == 200
    status, _ = post_chat(client, message="Hi", headers={"X-Forwarded-For": "198.51.100.99"})
    assert status == 429


def test_forwarded_for_counts_from_a_trusted_proxy(client, settings):
    settings.CHAT_RATE_LIMIT_IP = "1/m"
    settings.CHAT_TRUSTED_PROXIES = ["127.0.0.0/8"]
    assert post_chat(client, message="Hi", headers={"X-Forwarded-For": "198.51.100.1"})[0] == 200
    assert post_chat(client, message="Hi", headers={"X-Forwarded-For": "198.51.100.1"})[0] == 429
    # The nearest untrusted address counts, not what the client put in front of it.
    assert post_chat(client, message="Hi", headers={"X-Forwarded-For": "203.0.113.5, 198.51.100.1"})[0] == 429
    assert post_chat(client, message="Hi", headers={"X-Forwarded-For": "198.51.100.2"})[0] == 200


def test_limits_fall_back_to_counting_in_the_process_when_redis_is_down(client, settings, own_redis):
    settings.CHAT_RATE_LIMIT_IP = "2/m"
    own_redis.stop()
    assert [post_chat(client, message="Hi")[0] for _ in range(3)] == [200, 200, 429]
    other = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                        REMOTE_ADDR="192.0.2.8")
    assert other.status_code == 200  # limited, not everyone blocked


def test_a_sessions_daily_token_budget_stops_llm_calls(client, settings, llm, shared_redis):
    settings.CHAT_DAILY_TOKENS_PER_SESSION = 10
    _, first = post_chat(client, message="a question long enough to spend the budget")
    assert first["reply"]
    calls = len(llm.requests())

    status, body = post_chat(client, message="more", sessionId=first["sessionId"])

    assert status == 429
    assert body["error"]["code"] == "budget_exhausted"
    assert len(llm.requests()) == calls
    assert post_chat(client, message="another customer")[0] == 200


def test_the_sites_daily_token_budget_stops_llm_calls(client, settings, llm, shared_redis):
    settings.CHAT_DAILY_TOKENS_SITE = 10
    assert post_chat(client, message="a question long enough to spend the budget")[0] == 200
    calls = len(llm.requests())

    response = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "budget_exhausted"
    assert int(response["Retry-After"]) > 0
    assert len(llm.requests()) == calls


def test_the_offline_responder_spends_no_budget(client, settings, shared_redis):
    settings.CHAT_DAILY_TOKENS_SITE = 1
    assert [post_chat(client, message="Hi")[0] for _ in range(3)] == [200, 200, 200]


def test_viewing_the_page_creates_no_session(client):
    for _ in range(3):
        assert client.get("/").status_code == 200
    assert client.get("/api/history").status_code == 400
    assert Conversation.objects.count() == 0


def test_local_counters_expire():
    limits.reset_local_counts()
    assert limits._add_locally("k", 1, 60) == 1
    assert limits._add_locally("k", 1, 60) == 2
    assert limits._add_locally("gone", 1, 0) == 1
    assert limits._add_locally("gone", 1, 0) == 1  # its window had ended
