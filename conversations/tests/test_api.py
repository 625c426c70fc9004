"""The HTTP contract of /api/chat and /api/history (offline responder, any database)."""

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import sessions
from conversations.models import Conversation, Message
from devtools.sse import parse_events

from .client import post_chat, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


def test_first_message_issues_a_session_and_stores_both_messages(client):
    status, body = post_chat(client, message="What is your return policy?")

    assert status == 200
    assert "30 days" in body["reply"]
    assert body["responder"] == "offline"
    session_id = uuid.UUID(body["sessionId"])
    assert str(session_id) == body["sessionId"] and session_id.version == 4
    conversation = Conversation.objects.get(session_id=session_id)
    assert [(m.role, m.content) for m in conversation.messages.all()] == [
        ("user", "What is your return policy?"),
        ("assistant", body["reply"]),
    ]


def test_returning_session_continues_the_same_conversation(client):
    _, first = post_chat(client, message="Hi")
    status, second = post_chat(client, message="How long does shipping take?", sessionId=first["sessionId"])

    assert status == 200
    assert second["sessionId"] == first["sessionId"]
    assert "business days" in second["reply"]
    assert Conversation.objects.count() == 1
    assert list(Message.objects.values_list("seq", "role")) == [
        (0, "user"), (1, "assistant"), (2, "user"), (3, "assistant")
    ]


def test_two_browsers_get_two_conversations(client):
    _, first = post_chat(client, message="Hi")
    _, second = post_chat(client, message="Hi")
    assert first["sessionId"] != second["sessionId"]
    assert Conversation.objects.count() == 2


def test_unknown_session_id_gets_a_new_one_and_is_never_adopted(client):
    chosen = str(uuid.uuid4())
    status, body = post_chat(client, message="Hi", sessionId=chosen)

    assert status == 200
    assert body["sessionId"] != chosen
    assert not Conversation.objects.filter(session_id=chosen).exists()
    assert Conversation.objects.filter(session_id=body["sessionId"]).exists()


def test_expired_session_gets_a_new_one(client, settings):
    _, first = post_chat(client, message="Hi")
    Conversation.objects.update(last_activity_at=timezone.now() - timedelta(days=settings.CHAT_SESSION_IDLE_DAYS, seconds=1))

    status, body = post_chat(client, message="Hi again", sessionId=first["sessionId"])

    assert status == 200
    assert body["sessionId"] != first["sessionId"]
    assert body["newSession"] is True


@pytest.mark.parametrize(
    "session_id",
    [5, True, [], {}, "", "abc", "A1C9A0A3-42AF-4E4B-9DB2-4C6A0A2B2A91",
     "a1c9a0a342af4e4b9db24c6a0a2b2a91", "{a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91}",
     " a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91"],
)
def test_malformed_session_id_is_refused(client, session_id):
    status, body = post_chat(client, message="Hi", sessionId=session_id)
    assert status == 400
    assert body["error"]["code"] == "invalid_session_id"
    assert Conversation.objects.count() == 0


@pytest.mark.parametrize("message", [None, 5, ["Hi"], "", "   \n\t", "bad\x00byte", "\ud800"])
def test_invalid_message_is_refused(client, message):
    body = {"sessionId": None} if message is None else {"message": message}
    status, answer = post_chat(client, **body)
    assert status == 400
    assert answer["error"]["code"] == "invalid_message"
    assert Message.objects.count() == 0


def test_message_over_the_limit_is_refused(client, settings):
    settings.CHAT_MESSAGE_MAX_CHARS = 10
    status, body = post_chat(client, message="x" * 11)
    assert status == 413
    assert body["error"]["code"] == "message_too_long"
    status, _ = post_chat(client, message="x" * 10)
    assert status == 200


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"Hi"', b"null", b"\xff\xfe", b"{"])
def test_body_that_is_not_a_json_object_is_refused(client, raw):
    response = client.post("/api/chat", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_not_declared_json_is_refused(client, content_type):
    response = client.generic("POST", "/api/chat", b'{"message": "Hi"}', content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert Message.objects.count() == 0


def test_a_body_over_the_cap_is_refused_before_it_is_parsed(client, settings):
    settings.CHAT_MAX_BODY_BYTES = 100
    body = json.dumps({"message": "x" * 200})
    response = client.post("/api/chat", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert Message.objects.count() == 0


@pytest.mark.parametrize("value", [5, "", "has space", "x" * 65, "<script>"])
def test_invalid_client_message_id_is_refused(client, value):
    status, body = post_chat(client, message="Hi", clientMessageId=value)
    assert status == 400
    assert body["error"]["code"] == "invalid_client_message_id"


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_wrong_method_on_chat_is_405_json(client, method):
    response = getattr(client, method)("/api/chat")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "POST"


def test_unknown_api_path_is_404_json(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_history_returns_the_conversation_oldest_first(client):
    _, first = post_chat(client, message="Hi")
    post_chat(client, message="Do you ship internationally?", sessionId=first["sessionId"])

    response = client.get("/api/history", headers={"X-Session-Id": first["sessionId"]})

    assert response.status_code == 200
    body = response.json()
    assert body["sessionId"] == first["sessionId"]
    assert [(m["role"], m["content"][:11]) for m in body["messages"]] == [
        ("user", "Hi"),
        ("assistant", first["reply"][:11]),
        ("user", "Do you ship"),
        ("assistant", "We ship to "),
    ]
    assert all(m["createdAt"] for m in body["messages"])


def test_history_of_unknown_or_expired_session_is_404(client, settings):
    response = client.get("/api/history", headers={"X-Session-Id": str(uuid.uuid4())})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"

    _, first = post_chat(client, message="Hi")
    Conversation.objects.update(last_activity_at=timezone.now() - timedelta(days=settings.CHAT_SESSION_IDLE_DAYS + 1))
    response = client.get("/api/history", headers={"X-Session-Id": first["sessionId"]})
    assert response.status_code == 404


@pytest.mark.parametrize("headers", [{}, {"X-Session-Id": "nope"}, {"X-Session-Id": ""}])
def test_history_without_a_valid_session_header_is_400(client, headers):
    response = client.get("/api/history", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_session_id"


def test_history_ignores_a_session_id_in_the_url(client):
    _, first = post_chat(client, message="Hi")
    response = client.get(f"/api/history?sessionId={first['sessionId']}")
    assert response.status_code == 400


def test_streaming_sends_session_first_then_deltas_then_done(client):
    response = client.post(
        "/api/chat",
        data={"message": "Which payment methods do you accept?"},
        content_type="application/json",
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = parse_events(read_stream(response))
    names = [name for name, _ in events]
    assert names[0] == "session" and names[-1] == "done"
    assert names.count("delta") > 3
    text = "".join(data["text"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert done["reply"] == text and "PayPal" in text
    assert done["sessionId"] == events[0][1]["sessionId"]
    assert Message.objects.get(role="assistant").content == text


def test_delete_history_forgets_the_conversation_and_its_cache_entry(client):
    _, first = post_chat(client, message="Hi")
    _, other = post_chat(client, message="Hi")
    session_id = uuid.UUID(first["sessionId"])
    assert sessions.cached_conversation_id(session_id) is not None

    response = client.delete("/api/history", headers={"X-Session-Id": first["sessionId"]})

    assert response.status_code == 204
    assert not Conversation.objects.filter(session_id=session_id).exists()
    assert set(Message.objects.values_list("conversation__session_id", flat=True)) == {
        uuid.UUID(other["sessionId"])
    }
    assert sessions.cached_conversation_id(session_id) is None
    response = client.get("/api/history", headers={"X-Session-Id": first["sessionId"]})
    assert response.status_code == 404
    _, again = post_chat(client, message="Hi", sessionId=first["sessionId"])
    assert again["sessionId"] != first["sessionId"]


def test_delete_history_of_an_expired_session_still_deletes_it(client, settings):
    _, first = post_chat(client, message="Hi")
    Conversation.objects.update(last_activity_at=timezone.now() - timedelta(days=settings.CHAT_SESSION_IDLE_DAYS + 1))

    response = client.delete("/api/history", headers={"X-Session-Id": first["sessionId"]})

    assert response.status_code == 204
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({"X-Session-Id": str(uuid.uuid4())}, 404, "session_not_found"),
     ({}, 400, "invalid_session_id"),
     ({"X-Session-Id": "nope"}, 400, "invalid_session_id")],
)
def test_delete_history_of_an_unknown_or_invalid_session_is_refused(client, headers, status, code):
    post_chat(client, message="Hi")
    response = client.delete("/api/history", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_wrong_method_on_history_is_405_json(client, method):
    response = getattr(client, method)("/api/history")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, DELETE"


def test_a_streamed_answer_is_not_cacheable(client):
    response = client.post("/api/chat", data={"message": "Hi"}, content_type="application/json",
                           headers={"Accept": "text/event-stream"})
    read_stream(response)
    assert response["Cache-Control"] == "no-store"
