"""Talking to a person: POST /api/handoff, the states, staff replies, the email to staff,
and what the commands show of it."""

import io
import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from conversations import handoff, knowledge
from conversations.models import Conversation, Message

from .client import get_updates, post_chat, post_handoff, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


def staff(username="mia.schmidt", email="") -> User:
    user = User.objects.create_user(username, email=email, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "reply_conversation"]))
    return user


def test_asking_for_a_person_puts_the_conversation_in_waiting_with_a_notice(client):
    _, chat = post_chat(client, message="What is your return policy?")

    status, body = post_handoff(client, sessionId=chat["sessionId"])

    assert status == 200
    assert body["sessionId"] == chat["sessionId"] and body["handoff"] == "waiting"
    assert body["newSession"] is False
    assert body["notice"].startswith("You asked to talk to a person.")
    assert knowledge.contact_details() in body["notice"]
    conversation = Conversation.objects.get()
    assert conversation.handoff == "waiting" and conversation.waiting_since is not None
    assert [(m.seq, m.role, m.content) for m in conversation.messages.all()][2:] == [
        (2, "event", body["notice"])
    ]


def test_asking_again_changes_nothing_and_stores_no_second_notice(client):
    _, first = post_handoff(client)

    status, again = post_handoff(client, sessionId=first["sessionId"])

    assert status == 200
    assert again == {"sessionId": first["sessionId"], "handoff": "waiting", "notice": None, "offerEmail": False, "newSession": False,
                              "previousConversationFull": False}
    assert Message.objects.filter(role="event").count() == 1


def test_without_a_session_or_with_an_unknown_one_a_conversation_starts(client):
    status, body = post_handoff(client)
    _, other = post_handoff(client, sessionId="0b8e5f0e-9a3c-4c49-9a51-0d7f8e1c2a3b")

    assert status == 200 and body["newSession"] is True and body["handoff"] == "waiting"
    assert other["newSession"] is True and other["sessionId"] != "0b8e5f0e-9a3c-4c49-9a51-0d7f8e1c2a3b"
    assert Conversation.objects.count() == 2
    # The page can load it like any other conversation.
    response = client.get("/api/history", headers={"X-Session-Id": body["sessionId"]})
    assert [m["role"] for m in response.json()["messages"]] == ["event"]


def test_a_new_conversation_by_handoff_counts_against_the_new_session_limit(client, settings):
    settings.CHAT_RATE_LIMIT_NEW_SESSIONS = "1/h"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}  # counters of its own
    assert post_handoff(client)[0] == 200

    status, body = post_handoff(client)

    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize("data, content_type, status, code", [
    ("[]", "application/json", 400, "invalid_json"),
    ("{", "application/json", 400, "invalid_json"),
    ('{"sessionId": "nope"}', "application/json", 400, "invalid_session_id"),
    ('{"sessionId": 7}', "application/json", 400, "invalid_session_id"),
    ("sessionId=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
])
def test_bad_handoff_requests_get_a_json_error(client, data, content_type, status, code):
    response = client.post("/api/handoff", data=data, content_type=content_type)
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert client.get("/api/handoff").status_code == 405
    assert not Conversation.objects.exists()


def test_a_staff_reply_hand_back_and_close_move_the_state(client):
    _, body = post_handoff(client)
    conversation = Conversation.objects.get()
    mia = staff()

    reply, stored = handoff.staff_reply(conversation.pk, mia, "Mia", "Hello!", "t1")
    conversation.refresh_from_db()
    assert stored and conversation.handoff == "staff" and conversation.waiting_since is None

    post_chat(client, message="Thanks, and one more thing", sessionId=body["sessionId"])
    conversation.refresh_from_db()  # the customer wrote again: waiting again, still with Mia
    assert conversation.handoff == "staff" and conversation.waiting_since is not None

    notice = handoff.hand_back(conversation.pk, mia, "Mia")
    conversation.refresh_from_db()
    assert conversation.handoff == "assistant" and conversation.waiting_since is None
    assert notice.content.startswith("Mia handed you back to the assistant.")
    assert handoff.hand_back(conversation.pk, mia, "Mia", close=True) is None  # nothing to close
    assert conversation.closed_at is None

    handoff.request_person(conversation.pk)
    handoff.hand_back(conversation.pk, mia, "Mia", close=True)
    conversation.refresh_from_db()
    assert conversation.handoff == "assistant" and conversation.closed_at is not None
    _, updates = get_updates(client, body["sessionId"], after=-1)
    assert [(m["role"], m["author"]) for m in updates["messages"]] == [
        ("event", None), ("staff", "Mia"), ("user", None), ("event", "Mia"), ("event", None), ("event", "Mia")
    ]
    assert updates["messages"][-1]["content"].startswith("Mia closed the conversation.")


def test_while_a_person_is_asked_for_questions_are_kept_for_staff_not_answered(client, llm):
    _, first = post_chat(client, message="Hi")
    post_handoff(client, sessionId=first["sessionId"])
    asked = len(llm.requests())

    status, body = post_chat(client, message="My parcel arrived damaged", sessionId=first["sessionId"],
                             clientMessageId="q2")
    again_status, again = post_chat(client, message="My parcel arrived damaged", sessionId=first["sessionId"],
                                    clientMessageId="q2")  # sent again: stored once
    streamed = client.post("/api/chat", data=json.dumps({"message": "Hello?", "sessionId": first["sessionId"]}),
                           content_type="application/json", headers={"Accept": "text/event-stream"})
    events = read_stream(streamed)

    assert status == again_status == 200
    assert body == again == {"reply": None, "sessionId": first["sessionId"], "newSession": False,
                             "stopped": False, "responder": None, "model": None, "handoff": "waiting",
                             "notice": None, "offerEmail": False, "offerPerson": False,
                             "previousConversationFull": False}
    assert "event: delta" not in events and '"reply": null' in events and '"handoff": "waiting"' in events
    assert len(llm.requests()) == asked
    assert [(m.role, m.content) for m in Conversation.objects.get().messages.all()][-2:] == [
        ("user", "My parcel arrived damaged"), ("user", "Hello?")
    ]


@pytest.mark.parametrize("first", [True, False])
def test_asking_for_a_person_in_words_hands_over_without_asking_the_assistant(client, llm, first):
    session_id = None if first else post_chat(client, message="Hi")[1]["sessionId"]
    asked = len(llm.requests())

    status, body = post_chat(client, message="Can I talk to a human please?", sessionId=session_id)

    assert status == 200 and body["reply"] is None and body["handoff"] == "waiting"
    assert body["newSession"] is first
    assert body["notice"].startswith("You asked to talk to a person.")
    assert len(llm.requests()) == asked
    conversation = Conversation.objects.get(session_id=body["sessionId"])
    assert conversation.handoff == "waiting"
    assert [m.role for m in conversation.messages.all()][-2:] == ["user", "event"]


def test_a_first_message_asking_for_a_person_sent_ten_times_at_once_starts_one_conversation(postgres, client):
    """A double click on the very first message, which asks for a person: one conversation, one question."""
    body = {"message": "Can I talk to a human?", "clientMessageId": str(uuid.uuid4())}
    barrier = threading.Barrier(10)
    results = []

    def send():
        try:
            barrier.wait()
            results.append(post_chat(client, **body))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    conversation = Conversation.objects.get()
    assert {status for status, _ in results} == {200}
    assert {answer["sessionId"] for _, answer in results} == {str(conversation.session_id)}
    assert [m.role for m in conversation.messages.all()] == ["user", "event"]
    assert conversation.handoff == "waiting"


def test_after_the_hand_back_the_assistant_answers_seeing_staff_words_not_notices(client, llm):
    _, body = post_chat(client, message="Hi")
    post_handoff(client, sessionId=body["sessionId"])
    conversation = Conversation.objects.get()
    mia = staff()
    handoff.staff_reply(conversation.pk, mia, "Mia", "Your refund is on its way.", "t1")
    handoff.hand_back(conversation.pk, mia, "Mia")

    status, answer = post_chat(client, message="When will it arrive?", sessionId=body["sessionId"])

    assert status == 200 and answer["reply"] and answer["handoff"] == "assistant" and answer["notice"] is None
    shown = llm.requests()[-1]["messages"]
    assert [(m["role"], m["content"]) for m in shown if m["role"] != "system"] == [
        ("user", "Hi"), ("assistant", "Echo: Hi"), ("assistant", "Your refund is on its way."),
        ("user", "When will it arrive?"),
    ]


def test_staff_are_emailed_at_most_once_an_hour_per_conversation(client, mailoutbox):
    mia = staff(email="mia@example.com")
    staff("jo", email="jo@example.com")
    User.objects.create_user("viewer", email="viewer@example.com", is_staff=True)  # may not answer
    _, body = post_chat(client, message="My parcel never came")

    post_handoff(client, sessionId=body["sessionId"])
    conversation = Conversation.objects.get()
    handoff.hand_back(conversation.pk, mia, "Mia")
    post_handoff(client, sessionId=body["sessionId"])  # again within the hour
    handoff.flush_email()

    assert len(mailoutbox) == 1
    email = mailoutbox[0]
    assert sorted(email.to) == ["jo@example.com", "mia@example.com"]
    assert conversation.reference in email.subject
    assert "My parcel never came" in email.body and f"/conversation/{conversation.pk}/change/" in email.body
    assert body["sessionId"] not in email.subject + email.body  # the id works like a password

    Conversation.objects.update(notified_at=timezone.now() - timedelta(hours=1, minutes=1))
    handoff.hand_back(conversation.pk, mia, "Mia")
    post_handoff(client, sessionId=body["sessionId"])
    handoff.flush_email()
    assert len(mailoutbox) == 2


def test_the_recipients_can_be_set_and_a_mail_failure_loses_nothing(client, settings, caplog, mailoutbox):
    settings.CHAT_HANDOFF_EMAILS = ["support@example.com"]
    status, _ = post_handoff(client)
    handoff.flush_email()
    assert status == 200 and mailoutbox[0].to == ["support@example.com"]

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 1  # nothing listens
    status, body = post_handoff(client)
    handoff.flush_email()

    assert status == 200 and body["handoff"] == "waiting"
    assert "the email to staff failed" in caplog.text


def test_a_database_failure_while_the_staff_email_is_prepared_is_a_warning_not_a_traceback(
        client, settings, caplog, mailoutbox, monkeypatch):
    from django.db import OperationalError

    def locked():
        raise OperationalError("canceling statement due to lock timeout")

    monkeypatch.setattr(handoff, "staff_emails", locked)
    status, body = post_handoff(client)
    handoff.flush_email()

    assert status == 200 and body["handoff"] == "waiting" and mailoutbox == []
    assert "the email to staff was not sent, the database failed" in caplog.text
    assert "Traceback" not in caplog.text


def test_two_staff_members_sending_the_same_reply_at_once_store_it_once(postgres):
    """The double submit, or one form open in two tabs: one row lock, one token, one reply."""
    conversation = Conversation.objects.create()
    handoff.request_person(conversation.pk)
    mia, jo = staff(), staff("jo")
    barrier = threading.Barrier(8)
    results = []

    def send(user, token, text):
        try:
            barrier.wait()
            results.append(handoff.staff_reply(conversation.pk, user, user.username, text, token)[1])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(mia, "same-form", "Mia's reply")) for _ in range(4)]
    threads += [threading.Thread(target=send, args=(jo, f"jo-{i}", f"Jo's reply {i}")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False, False, False, True, True, True, True, True]
    staff_messages = list(conversation.messages.filter(role="staff"))
    assert sorted(m.content for m in staff_messages) == ["Jo's reply 0", "Jo's reply 1", "Jo's reply 2",
                                                         "Jo's reply 3", "Mia's reply"]
    seqs = list(conversation.messages.values_list("seq", flat=True))
    assert seqs == list(range(len(seqs)))


def test_a_staff_reply_and_a_customer_question_at_once_both_keep_their_place(client, postgres):
    _, body = post_handoff(client)
    conversation = Conversation.objects.get()
    mia = staff()
    barrier = threading.Barrier(2)
    outcome = {}

    def customer():
        barrier.wait()
        outcome["customer"] = post_chat(client, message="Hello? Anyone?", sessionId=body["sessionId"])[0]

    def staff_member():
        try:
            barrier.wait()
            outcome["staff"] = handoff.staff_reply(conversation.pk, mia, "Mia", "Hi, Mia here.", "t1")[1]
        finally:
            connections.close_all()

    threads = [threading.Thread(target=customer), threading.Thread(target=staff_member)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcome["staff"] is True
    roles = sorted(conversation.messages.values_list("role", flat=True))
    # The customer's question is stored, or refused with 409 for the page to send again: never lost silently.
    assert (outcome["customer"], roles) in [(200, ["event", "staff", "user"]), (409, ["event", "staff"])]


def test_commands_show_staff_messages_with_their_author(client):
    _, body = post_chat(client, message="Where is my parcel?")
    conversation = Conversation.objects.get()
    handoff.request_person(conversation.pk)
    quiet = Conversation.objects.create()
    handoff.request_person(quiet.pk)
    Conversation.objects.filter(pk=quiet.pk).update(waiting_since=timezone.now() - timedelta(minutes=30))

    out = io.StringIO()
    call_command("chat_queue", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["REFERENCE", "STATE"]
    assert lines[1].startswith(quiet.reference) and "30\xa0minutes" in lines[1]
    assert lines[2].startswith(conversation.reference) and "Where is my parcel?" in lines[2]

    handoff.staff_reply(conversation.pk, staff(), "Mia", "Let me look.", "t1")
    out = io.StringIO()
    call_command("chat_queue", "--waiting", stdout=out)
    assert conversation.reference not in out.getvalue()

    out = io.StringIO()
    call_command("chat_show", conversation.reference, stdout=out)
    transcript = out.getvalue()
    assert "with a person" in transcript.splitlines()[1]
    assert "Staff (Mia):\n    Let me look." in transcript and "Notice:\n    You asked to talk" in transcript

    out = io.StringIO()
    call_command("chat_export", stdout=out)
    record = next(json.loads(line) for line in out.getvalue().splitlines()
                  if json.loads(line)["reference"] == body["sessionId"][:8])
    assert record["handoff"] == "staff"
    assert [(m["role"], m["author"]) for m in record["messages"]][2:] == [("event", None), ("staff", "Mia")]
    assert "mia.schmidt" not in out.getvalue()  # the name chosen, never the login

    call_command("chat_queue", stdout=io.StringIO())
    Conversation.objects.all().delete()
    out = io.StringIO()
    call_command("chat_queue", stdout=out)
    assert out.getvalue() == "Nobody is waiting for a person.\n"
