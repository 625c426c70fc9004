"""The assistant through the real openai client, against the fake OpenAI-compatible server."""

import time

import pytest

from conversations.models import Conversation, Message
from devtools.processes import free_port
from devtools.sse import parse_events

from .client import post_chat, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


def test_reply_comes_from_the_llm_with_usage_and_model(client, llm):
    status, body = post_chat(client, message="Where is my parcel?")

    assert status == 200
    assert body["reply"] == "Echo: Where is my parcel?"
    assert body["responder"] == "openai"
    reply = Message.objects.get(role="assistant")
    assert reply.model == "fake-model"
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.latency_ms is not None


def test_the_llm_gets_the_system_prompt_the_whole_history_and_an_output_cap(client, llm, settings):
    settings.CHAT_MAX_OUTPUT_TOKENS = 123
    _, first = post_chat(client, message="one")
    post_chat(client, message="two", sessionId=first["sessionId"])
    post_chat(client, message="three", sessionId=first["sessionId"])

    sent = llm.requests()[-1]
    assert sent["max_tokens"] == 123
    system, *history = sent["messages"]
    assert system["role"] == "system"
    assert "return any unused item" in system["content"]  # grounded in knowledge/faq.md
    assert history == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Echo: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "Echo: two"},
        {"role": "user", "content": "three"},
    ]


def test_history_sent_to_the_llm_is_capped(client, llm, settings):
    settings.CHAT_HISTORY_MESSAGES = 3
    _, first = post_chat(client, message="m0")
    for n in range(1, 6):
        post_chat(client, message=f"m{n}", sessionId=first["sessionId"])

    history = llm.requests()[-1]["messages"][1:]
    assert [m["content"] for m in history] == ["m4", "Echo: m4", "m5"]


def test_history_sent_to_the_llm_is_capped_by_characters(client, llm, settings):
    settings.CHAT_HISTORY_CHARS = 30
    _, first = post_chat(client, message="a" * 20)
    post_chat(client, message="b" * 20, sessionId=first["sessionId"])

    history = llm.requests()[-1]["messages"][1:]
    assert history == [{"role": "user", "content": "b" * 20}]


@pytest.mark.parametrize(
    ("mode", "params", "status"),
    [
        ("status", {"status": 500}, 502),
        ("status", {"status": 503}, 502),
        ("status", {"status": 401}, 502),
        ("status", {"status": 429, "retry_after": "7"}, 503),
        ("hang", {}, 504),
        ("drip", {"interval": 0.5}, 504),
        ("malformed", {}, 502),
        ("reset", {}, 502),
    ],
)
def test_llm_failure_is_a_json_error_with_the_session_and_keeps_the_question(
    client, llm, settings, mode, params, status
):
    settings.CHAT_LLM_DEADLINE = 2.0
    llm.control(mode, **params)

    started = time.monotonic()
    code, body = post_chat(client, message="Is my question kept?")
    elapsed = time.monotonic() - started

    assert code == status
    assert body["error"]["code"] == "llm_unavailable"
    assert elapsed < settings.CHAT_LLM_DEADLINE + 1.5
    conversation = Conversation.objects.get(session_id=body["sessionId"])
    assert conversation.failed_turns == 1
    question = conversation.messages.get()
    assert (question.role, question.content, question.status) == ("user", "Is my question kept?", "failed")


def test_rate_limit_passes_retry_after_on(client, llm):
    llm.control("status", status=429, retry_after="7")
    response = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json")
    assert response.status_code == 503
    assert response["Retry-After"] == "7"


def test_connection_refused_is_a_502(client, llm, settings):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    status, body = post_chat(client, message="Hi")
    assert status == 502
    assert body["error"]["code"] == "llm_unavailable"
    assert Message.objects.get().status == "failed"


def test_retry_with_the_same_client_message_id_completes_the_turn_once(client, llm):
    _, first = post_chat(client, message="Hi", clientMessageId="q1")
    llm.control("status", status=500)
    status, failed = post_chat(client, message="Refund?", sessionId=first["sessionId"], clientMessageId="q2")
    assert status == 502

    llm.control("ok")
    status, retried = post_chat(client, message="Refund?", sessionId=first["sessionId"], clientMessageId="q2")

    assert status == 200
    assert retried["reply"] == "Echo: Refund?"
    conversation = Conversation.objects.get()
    assert [(m.role, m.content, m.status) for m in conversation.messages.all()] == [
        ("user", "Hi", "complete"),
        ("assistant", "Echo: Hi", "complete"),
        ("user", "Refund?", "complete"),
        ("assistant", "Echo: Refund?", "complete"),
    ]
    assert conversation.failed_turns == 1


def test_repeating_an_answered_message_returns_the_same_reply_without_calling_the_llm(client, llm):
    _, first = post_chat(client, message="Hi", clientMessageId="q1")
    calls = len(llm.requests())

    status, again = post_chat(client, message="Hi", sessionId=first["sessionId"], clientMessageId="q1")

    assert status == 200
    assert again["reply"] == first["reply"]
    assert len(llm.requests()) == calls
    assert Message.objects.count() == 2


def test_a_retry_after_newer_messages_is_refused(client, llm):
    _, first = post_chat(client, message="Hi", clientMessageId="q1")
    llm.control("status", status=500)
    post_chat(client, message="first", sessionId=first["sessionId"], clientMessageId="q2")
    llm.control("ok")
    post_chat(client, message="second", sessionId=first["sessionId"], clientMessageId="q3")

    status, body = post_chat(client, message="first", sessionId=first["sessionId"], clientMessageId="q2")

    assert status == 409
    assert body["error"]["code"] == "retry_superseded"


def test_streamed_reply_from_the_llm_arrives_in_pieces(client, llm):
    llm.control("ok", reply="one two three four five")
    response = client.post(
        "/api/chat", data={"message": "Hi"}, content_type="application/json",
        headers={"Accept": "text/event-stream"},
    )
    events = parse_events(read_stream(response))

    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) == 5
    assert "".join(deltas) == "one two three four five"
    assert events[-1] == ("done", {**events[-1][1], "reply": "one two three four five"})


def test_streamed_failure_ends_with_an_error_event(client, llm):
    llm.control("status", status=500)
    response = client.post(
        "/api/chat", data={"message": "Hi"}, content_type="application/json",
        headers={"Accept": "text/event-stream"},
    )
    events = parse_events(read_stream(response))

    assert [name for name, _ in events] == ["session", "error"]
    assert events[1][1]["error"]["code"] == "llm_unavailable"
    assert events[1][1]["sessionId"] == events[0][1]["sessionId"]
    assert Message.objects.get().status == "failed"


def test_only_a_streamed_turn_asks_the_llm_to_stream(client, llm):
    post_chat(client, message="Hi")
    assert not llm.requests()[-1].get("stream")  # one parse, not one per chunk
    response = client.post(
        "/api/chat", data={"message": "Hi"}, content_type="application/json",
        headers={"Accept": "text/event-stream"},
    )
    read_stream(response)
    assert llm.requests()[-1]["stream"] is True
    assert llm.requests()[-1]["stream_options"] == {"include_usage": True}
