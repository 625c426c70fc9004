"""Abuse and cost limits: rates per IP, per session and of new sessions; daily token budgets."""

import time
import uuid

import pytest

from conversations import languages, limits, shared_state
from conversations import llm as llm_module
from conversations.limits import Rate, parse_rate
from conversations.models import Conversation, Message

from .client import post_chat

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


def test_a_spoofed_forwarded_for_changes_nothing_without_a_trusted_proxy(client, settings, counters):
    settings.CHAT_RATE_LIMIT_IP = "2/m"
    for n in range(2):
        assert post_chat(client, message="Hi", headers={"X-Forwarded-For": f"198.51.100.{n}"})[0] == 200
    status, _ = post_chat(client, message="Hi", headers={"X-Forwarded-For": "198.51.100.99"})
    assert status == 429


def test_forwarded_for_counts_from_a_trusted_proxy(client, settings, counters):
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


def assert_offline(status, body):
    """A turn answered by the offline responder, marked as such for the customer."""
    assert status == 200, body
    assert body["responder"] == "offline"
    assert body["reply"].startswith(languages.said("en").unavailable)


def test_a_sessions_spent_budget_gets_offline_answers_not_the_llm(client, settings, llm, shared_redis):
    settings.CHAT_DAILY_TOKENS_PER_SESSION = 10
    _, first = post_chat(client, message="a question long enough to spend the budget")
    assert first["responder"] == "openai"
    calls = len(llm.requests())

    assert_offline(*post_chat(client, message="What is your return policy?", sessionId=first["sessionId"]))

    assert len(llm.requests()) == calls
    assert post_chat(client, message="another customer")[1]["responder"] == "openai"


def test_the_sites_spent_budget_gets_everyone_offline_answers(client, settings, llm, shared_redis):
    settings.CHAT_DAILY_TOKENS_SITE = 10
    assert post_chat(client, message="a question long enough to spend the budget")[0] == 200
    calls = len(llm.requests())

    for address in ("127.0.0.1", "192.0.2.9"):
        response = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                               REMOTE_ADDR=address)
        assert_offline(response.status_code, response.json())
    assert len(llm.requests()) == calls
    stored = Message.objects.filter(role="assistant").order_by("pk").last()
    assert stored.model == llm_module.OFFLINE_MODEL  # support staff can tell, too


def test_one_address_cannot_spend_the_sites_budget(client, settings, llm, counters):
    """Per address, new sessions do not help: the address's budget is shared by all of them."""
    settings.CHAT_DAILY_TOKENS_PER_ADDRESS = 40
    replies = []
    for n in range(4):
        response = client.post("/api/chat", data={"message": f"a long enough question, number {n}"},
                               content_type="application/json", REMOTE_ADDR=f"2001:db8:1:2::{n + 1}")
        replies.append(response.json()["responder"])
    assert replies[0] == "openai" and replies[-1] == "offline"
    calls = len(llm.requests())
    # Another /64 still gets the LLM.
    other = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                        REMOTE_ADDR="2001:db8:1:3::1")
    assert other.json()["responder"] == "openai"
    assert len(llm.requests()) == calls + 1


@pytest.mark.parametrize("setting", ["CHAT_RATE_LIMIT_NEW_SESSIONS", "CHAT_RATE_LIMIT_IP"])
def test_ipv6_clients_are_counted_by_their_64(client, settings, setting, counters):
    setattr(settings, setting, "3/h")
    statuses = [
        client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                    REMOTE_ADDR=f"2001:db8:1:2:{n:x}::{n + 7:x}").status_code
        for n in range(6)
    ]
    assert statuses == [200, 200, 200, 429, 429, 429]
    other = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                        REMOTE_ADDR="2001:db8:1:3::1")
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("address", "group"),
    [("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"), ("::ffff:192.0.2.1", "192.0.2.1"),
     ("192.0.2.1", "192.0.2.1"), ("fe80::1%eth0", "fe80::"), ("not an address", "not an address")],
)
def test_address_groups(address, group):
    assert limits.address_group(address) == group


def test_redis_keys_name_no_address_and_no_session(client, settings, llm, shared_redis):
    settings.CHAT_RATE_LIMIT_IP = settings.CHAT_RATE_LIMIT_SESSION = "100/m"
    settings.CHAT_DAILY_TOKENS_PER_SESSION = settings.CHAT_DAILY_TOKENS_PER_ADDRESS = 10_000
    response = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                           REMOTE_ADDR="198.51.100.77")
    session_id = response.json()["sessionId"]
    post_chat(client, message="more", sessionId=session_id)
    # (The session cache's keys are sessions.py's.)
    keys = [key.decode() for key in shared_redis.client.get_client().keys("*")
            if b":rate:" in key or b":tokens:" in key]
    assert any(":rate:ip:" in key for key in keys) and any(":tokens:address:" in key for key in keys)
    assert not [key for key in keys if "198.51.100.77" in key or session_id in key]


@pytest.fixture
def quick_probes(monkeypatch, settings):
    settings.CHAT_LLM_DOWN_AFTER_FAILURES = 3
    monkeypatch.setattr(llm_module, "PROBE_SECONDS", 1)


def test_an_llm_down_for_long_gets_offline_answers_then_recovers(client, settings, llm, counters,
                                                                  quick_probes):
    llm.control("status", status=500)
    statuses = [post_chat(client, message="What is your return policy?")[0] for _ in range(3)]
    assert statuses == [502, 502, 502]  # each failure is a failure, until it is a pattern

    # Down: customers get the FAQ, marked; at most one probe reaches the LLM per second.
    before = len(llm.requests())
    for _ in range(4):
        assert_offline(*post_chat(client, message="What is your return policy?"))
    assert len(llm.requests()) - before <= 1

    llm.control("ok")
    time.sleep(1.1)  # the next probe is due
    replies = [post_chat(client, message="Hi")[1]["responder"] for _ in range(3)]
    assert replies == ["openai"] * 3


def test_a_failed_probe_keeps_the_llm_down(client, settings, llm, counters, quick_probes):
    llm.control("status", status=503)
    for _ in range(3):
        post_chat(client, message="Hi")
    time.sleep(1.1)
    status, body = post_chat(client, message="Hi")  # the probe: it fails like any turn
    assert status == 502 and body["error"]["code"] == "llm_unavailable"
    assert_offline(*post_chat(client, message="Hi"))


def test_sporadic_llm_failures_are_not_an_outage(client, settings, llm, counters, quick_probes):
    for _ in range(4):
        llm.control("status", status=500, fail_times=2)
        assert [post_chat(client, message="Hi")[0] for _ in range(3)] == [502, 502, 200]
    assert post_chat(client, message="Hi")[1]["responder"] == "openai"


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
    assert shared_state._local_add("k", 1, 60) == 1
    assert shared_state._local_add("k", 1, 60) == 2
    assert shared_state._local_add("gone", 1, 0) == 1
    assert shared_state._local_add("gone", 1, 0) == 1  # its window had ended


@pytest.mark.parametrize("failure", [{"mode": "status", "status": 400}, {"mode": "ok", "reply": ""}])
def test_a_customer_cannot_switch_the_llm_off_for_everyone(client, settings, llm, counters, quick_probes,
                                                          failure):
    """Requests the LLM refuses for their content (400, a content filter's empty reply) are no outage."""
    llm.control(**failure)
    assert [post_chat(client, message="Hi")[0] for _ in range(5)] == [502] * 5
    llm.control("ok")
    assert post_chat(client, message="Hi")[1]["responder"] == "openai"
