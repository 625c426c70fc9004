"""Django admin for support staff, through Django's test client."""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import sessions
from conversations.admin import ConversationAdmin
from conversations.models import Conversation, Message, Session

from . import data

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/conversations/conversation/"


def change_url(conversation: Conversation) -> str:
    return f"{CHANGELIST}{conversation.pk}/change/"


def listed(response) -> list[str]:
    """The references of the conversations on a changelist page, top to bottom."""
    return [str(obj.session_id)[:8] for obj in response.context["cl"].result_list]


def test_the_list_shows_each_conversation_newest_first(admin_client):
    older = data.conversation(turns=2, started=timezone.now() - timedelta(days=2), model="gpt-4o-mini")
    newer = data.conversation(turns=1, failed_last=True)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert listed(response) == [newer.reference, older.reference]
    rows = response.context["cl"].result_list
    assert [(row.message_count, row.failed_turns > 0, row.latest_model) for row in rows] == [
        (1, True, None), (4, False, "gpt-4o-mini")
    ]
    page = response.content.decode()
    assert older.reference in page and "gpt-4o-mini" in page
    # The session id works like a password: out of sight.
    assert str(older.session_id) not in page and str(newer.session_id) not in page


@pytest.mark.parametrize("rows", [10, 1000])
def test_the_list_runs_a_constant_number_of_queries(admin_client, monkeypatch, rows):
    data.conversations(rows, turns=2)
    monkeypatch.setattr(ConversationAdmin, "list_per_page", 1000)  # every row on one page
    admin_client.get(CHANGELIST)  # the session and user are loaded once per request anyway

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    assert len(listed(response)) == rows
    # Session, user, count, the page with its message counts and models, the
    # header's count of waiting customers: the same for 10 rows as for 1,000.
    assert len(queries) == 5, "\n".join(q["sql"][:150] for q in queries)


def test_search_by_reference_or_whole_session_id(admin_client):
    wanted = data.conversation(session_id=uuid.UUID("a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91"))
    # Shares 7 of the 8 characters, and sorts right next to it.
    data.conversation(session_id=uuid.UUID("a1c9a0a4-0000-4000-8000-000000000000"))
    data.conversation(session_id=uuid.UUID("a1c9a0a2-ffff-4fff-bfff-ffffffffffff"))

    for term in ["a1c9a0a3", " A1C9A0A3 ", "a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a91",
                 "A1C9A0A3-42AF-4E4B-9DB2-4C6A0A2B2A91"]:
        response = admin_client.get(CHANGELIST, {"q": term})
        assert response.status_code == 200
        assert listed(response) == ["a1c9a0a3"], term

    for term in ["a1c9a0a", "a1c9a0a5", "hello", "'; drop table", "%", "a1c9a0a3-42af-4e4b-9db2-4c6a0a2b2a90"]:
        response = admin_client.get(CHANGELIST, {"q": term})
        assert response.status_code == 200
        assert listed(response) == [], term
    assert wanted.reference == "a1c9a0a3"


def test_filter_by_failed_turns_and_by_date(admin_client):
    failed = data.conversation(failed_last=True)
    answered = data.conversation(started=timezone.now() - timedelta(days=40))

    assert listed(admin_client.get(CHANGELIST, {"failed": "yes"})) == [failed.reference]
    assert listed(admin_client.get(CHANGELIST, {"failed": "no"})) == [answered.reference]
    response = admin_client.get(CHANGELIST)
    past_week = next(
        choice["query_string"]
        for spec in response.context["cl"].filter_specs if spec.title == "last activity at"
        for choice in spec.choices(response.context["cl"]) if choice["display"] == "Past 7 days"
    )
    assert listed(admin_client.get(CHANGELIST + past_week)) == [failed.reference]


def test_the_conversation_page_shows_the_messages_in_order_read_only(admin_client):
    conversation = data.conversation(turns=3, model="gpt-4o-mini", latency_ms=812)

    response = admin_client.get(change_url(conversation))

    assert response.status_code == 200
    page = response.content.decode()
    positions = [page.index(text) for text in
                 ["Question 1?", "Answer 1.", "Question 2?", "Answer 2.", "Question 3?", "Answer 3."]]
    assert positions == sorted(positions)
    assert "gpt-4o-mini" in page and "812" in page
    # The one text box is the staff reply's, under the history (test_the_reply_box...).
    assert page.count("<textarea") == 1 and 'name="reply"' in page
    assert 'name="messages-0-content"' not in page
    assert 'name="messages-MAX_NUM_FORMS" value="0"' in page  # nothing can be added
    assert 'name="_save"' not in page
    assert f"{change_url(conversation)[:-len('change/')]}delete/" in page  # but it can be deleted


def test_the_history_cannot_be_changed_through_admin(admin_client):
    conversation = data.conversation(turns=1)
    message = conversation.messages.get(seq=0)

    response = admin_client.post(change_url(conversation), {
        "messages-TOTAL_FORMS": "1", "messages-INITIAL_FORMS": "1",
        "messages-0-id": str(message.pk), "messages-0-conversation": str(conversation.pk),
        "messages-0-content": "Edited", "failed_turns": "7",
    })

    assert response.status_code == 403
    message.refresh_from_db()
    conversation.refresh_from_db()
    assert message.content == "Question 1?" and conversation.failed_turns == 0
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.get("/admin/conversations/message/").status_code == 404


def test_deleting_a_conversation_deletes_its_messages_and_cache_entry(admin_client):
    kept, deleted = data.conversations(2, turns=2)
    for conversation in (kept, deleted):
        sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)

    response = admin_client.post(f"{CHANGELIST}{deleted.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert list(Conversation.objects.all()) == [kept]
    assert set(Message.objects.values_list("conversation_id", flat=True)) == {kept.pk}
    assert sessions.cached_conversation_id(deleted.session_id) is None
    assert sessions.cached_conversation_id(kept.session_id) == kept.pk


def test_deleting_selected_conversations_deletes_their_cache_entries(admin_client):
    first, second, kept = data.conversations(3)
    for conversation in (first, second):
        sessions.remember(conversation.session_id, conversation.pk, conversation.last_activity_at)

    response = admin_client.post(CHANGELIST, {
        "action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes",
    })

    assert response.status_code == 302
    assert list(Conversation.objects.all()) == [kept]
    assert sessions.cached_conversation_id(first.session_id) is None


def test_export_action_returns_the_selected_conversations_as_json_lines(admin_client):
    first, _, third = data.conversations(3, turns=2)

    response = admin_client.post(CHANGELIST, {
        "action": "export_jsonl", "_selected_action": [third.pk, first.pk],
    })

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    lines = b"".join(response.streaming_content).decode().splitlines()  # streamed
    records = [json.loads(line) for line in lines]
    assert [r["reference"] for r in records] == [first.reference, third.reference]
    assert not any("sessionId" in r for r in records)
    assert str(first.session_id) not in "".join(lines)
    assert [(m["seq"], m["role"], m["content"]) for m in records[0]["messages"]] == [
        (0, "user", "Question 1?"), (1, "assistant", "Answer 1."),
        (2, "user", "Question 2?"), (3, "assistant", "Answer 2."),
    ]
    assert records[0]["messages"][1]["model"] == "offline-faq"


@pytest.mark.parametrize("url", [CHANGELIST, "conversation-page", "/admin/"])
def test_only_staff_can_reach_it(client, url):
    conversation = data.conversation()
    url = change_url(conversation) if url == "conversation-page" else url

    response = client.get(url)  # anonymous
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")

    customer = User.objects.create_user("customer", password="pw-not-staff-123")
    client.force_login(customer)
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert str(conversation.session_id) not in response.content.decode()


def test_staff_need_the_view_permission(client):
    conversation = data.conversation()
    staff = User.objects.create_user("helper", password="pw-staff-123", is_staff=True)
    client.force_login(staff)
    assert client.get(change_url(conversation)).status_code == 403

    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    response = client.get(change_url(conversation))
    assert response.status_code == 200
    assert "Question 1?" in response.content.decode()
    # Viewing is not deleting.
    assert client.post(f"{CHANGELIST}{conversation.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Conversation.objects.count() == 1


# --- The session id: out of sight, shown on a recorded request --------------------------


def session_id_url(conversation: Conversation) -> str:
    return f"{CHANGELIST}{conversation.pk}/session-id/"


def test_the_conversation_page_names_the_reference_not_the_session_id(admin_client):
    conversation = data.conversation()
    page = admin_client.get(change_url(conversation)).content.decode()
    assert conversation.reference in page and "Show the full session id" in page
    assert str(conversation.session_id) not in page


def test_the_session_id_is_shown_on_a_post_recorded_with_who_asked(admin_client, admin_user, caplog):
    from django.contrib.admin.models import CHANGE, LogEntry

    conversation = data.conversation()
    caplog.set_level("INFO", logger="conversations.admin")

    looked = admin_client.get(session_id_url(conversation))  # a link followed, a page prefetched
    assert looked.status_code == 302 and str(conversation.session_id) not in looked.content.decode()
    assert not LogEntry.objects.exists()

    response = admin_client.post(session_id_url(conversation))

    assert response.status_code == 200 and str(conversation.session_id) in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    [entry] = LogEntry.objects.all()
    assert (entry.user, entry.object_id, entry.action_flag) == (admin_user, str(conversation.pk), CHANGE)
    assert entry.get_change_message() == "Showed the full session id."
    [record] = [r for r in caplog.records if r.getMessage() == "staff showed a session id"]
    assert (record.user, record.conversation) == (admin_user.username, conversation.pk)
    assert str(conversation.session_id) not in caplog.text
    # The conversation's history page says who looked.
    history = admin_client.get(f"{CHANGELIST}{conversation.pk}/history/").content.decode()
    assert "Showed the full session id." in history


def test_show_the_session_id_lists_every_browser_of_the_conversation_and_none_once_ended(admin_client):
    """A conversation continued on another device has a session per browser: each one's id is
    shown with the browser and when, the first browser's (ended here) no more."""
    conversation = data.conversation()
    first = conversation.sessions.get()
    laptop = Session.objects.create(session_id=uuid.uuid4(), conversation=conversation, label="Firefox · Linux")
    first.delete()  # "Not you?" on the first browser

    page = admin_client.post(session_id_url(conversation)).content.decode()

    assert str(laptop.session_id) in page and "Firefox on Linux" in page
    assert str(first.session_id) not in page
    laptop.delete()
    page = admin_client.post(session_id_url(conversation)).content.decode()
    assert "every session of it has ended" in page and "session-ids" not in page


def test_only_staff_who_may_view_the_conversation_can_show_its_session_id(client):
    conversation = data.conversation()
    staff = User.objects.create_user("helper", password="pw-staff-123", is_staff=True)
    client.force_login(staff)
    response = client.post(session_id_url(conversation))
    assert response.status_code == 403 and str(conversation.session_id) not in response.content.decode()
    assert client.post(f"{CHANGELIST}999999/session-id/").status_code == 403


def test_admin_keeps_csrf_protection(admin_user):
    conversation = data.conversation()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(f"{CHANGELIST}{conversation.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Conversation.objects.count() == 1


# --- Talking to a person: the queue, the reply box, hand-back and close ----------

QUEUE = "/admin/conversations/waitingconversation/"


def reply_url(conversation: Conversation) -> str:
    return f"{CHANGELIST}{conversation.pk}/reply/"


def waiting_conversation(minutes_ago: float = 0) -> Conversation:
    from conversations import handoff

    conversation = data.conversation()
    handoff.request_person(conversation.pk)
    Conversation.objects.filter(pk=conversation.pk).update(
        waiting_since=timezone.now() - timedelta(minutes=minutes_ago)
    )
    conversation.refresh_from_db()
    return conversation


def reply_form(client, conversation) -> dict:
    """The reply box's fields as the page renders them."""
    form = client.get(change_url(conversation)).context["reply_form"]
    return {name: form[name].value() or "" for name in ("author", "reply", "token", "seen")}


def test_the_queue_lists_waiting_conversations_longest_waiting_first(admin_client, settings):
    settings.CHAT_HANDOFF_EMAILS = []
    recent = waiting_conversation(minutes_ago=2)
    oldest = waiting_conversation(minutes_ago=45)
    data.conversation()  # the assistant answers this one: not in the queue

    response = admin_client.get(QUEUE)

    assert response.status_code == 200
    assert listed(response) == [oldest.reference, recent.reference]
    page = response.content.decode()
    assert "45\xa0minutes" in page and "2\xa0minutes" in page
    assert f'href="/admin/conversations/conversation/{oldest.pk}/live/"' in page  # the live view
    assert "Question 1?" in page  # the customer's latest message

    index = admin_client.get("/admin/").content.decode()
    assert 'class="waiting-count">2<' in index and QUEUE in index


def test_staff_with_the_view_permission_see_the_queue_but_cannot_reply(client):
    conversation = waiting_conversation()
    staff = User.objects.create_user("helper", password="pw-staff-123", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client.force_login(staff)

    assert listed(client.get(QUEUE)) == [conversation.reference]
    page = client.get(change_url(conversation))
    assert page.context.get("reply_form") is None and "<textarea" not in page.content.decode()
    response = client.post(reply_url(conversation), {"author": "Mia", "reply": "Hi", "token": "t1", "seen": "0"})
    assert response.status_code == 403
    assert not conversation.messages.filter(role="staff").exists()


def test_a_staff_reply_is_stored_with_the_chosen_name_and_remembered(client):
    conversation = waiting_conversation()
    staff = User.objects.create_user("mia.schmidt", password="pw-staff-123", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_conversation", "reply_conversation"]))
    client.force_login(staff)

    form = reply_form(client, conversation)
    assert form["author"] == ""  # never the login
    response = client.post(reply_url(conversation), {**form, "author": "Mia", "reply": "Hello, Mia here."})

    assert response.status_code == 302 and response["Location"] == change_url(conversation)
    reply = conversation.messages.get(role="staff")
    assert (reply.author, reply.content, reply.sent_by) == ("Mia", "Hello, Mia here.", staff)
    conversation.refresh_from_db()
    assert conversation.handoff == "staff" and conversation.waiting_since is None
    page = client.get(change_url(conversation))
    assert reply_form(client, conversation)["author"] == "Mia"
    assert "Hello, Mia here." in page.content.decode()


def test_a_reply_sent_twice_is_stored_once(admin_client):
    conversation = waiting_conversation()
    form = {**reply_form(admin_client, conversation), "author": "Mia", "reply": "Only once."}

    first = admin_client.post(reply_url(conversation), form, follow=True)
    second = admin_client.post(reply_url(conversation), form, follow=True)

    assert conversation.messages.filter(role="staff").count() == 1
    assert "Your reply was sent." in first.content.decode()
    assert "sent already" in second.content.decode()


def test_two_staff_members_see_each_others_replies(admin_client, client):
    conversation = waiting_conversation()
    other = User.objects.create_user("jo", password="pw-staff-123", is_staff=True, is_superuser=True)
    client.force_login(other)
    mine, theirs = reply_form(admin_client, conversation), reply_form(client, conversation)

    client.post(reply_url(conversation), {**theirs, "author": "Jo", "reply": "Jo here."})
    response = admin_client.post(reply_url(conversation), {**mine, "author": "Mia", "reply": "Mia here."},
                                 follow=True)

    page = response.content.decode()
    assert "New messages came in while you were writing" in page
    assert page.index("Jo here.") < page.index("Mia here.")
    assert [(m.author, m.content) for m in conversation.messages.filter(role="staff")] == [
        ("Jo", "Jo here."), ("Mia", "Mia here.")
    ]


@pytest.mark.parametrize("action, notice", [
    ("hand_back", "Mia handed you back to the assistant."),
    ("close", "Mia closed the conversation."),
])
def test_hand_back_and_close_return_the_conversation_to_the_assistant(admin_client, action, notice):
    conversation = waiting_conversation()
    form = {**reply_form(admin_client, conversation), "author": "Mia", "reply": ""}

    response = admin_client.post(reply_url(conversation), {**form, "action": action})

    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.handoff == "assistant" and conversation.waiting_since is None
    assert (conversation.closed_at is not None) == (action == "close")
    event = conversation.messages.order_by("seq").last()
    assert event.role == "event" and event.content.startswith(notice) and event.author == "Mia"
    assert listed(admin_client.get(QUEUE)) == []
    # Twice is once.
    admin_client.post(reply_url(conversation), {**form, "action": action})
    assert conversation.messages.filter(role="event").count() == 2  # the request's notice and this one


@pytest.mark.parametrize("post", [
    {"author": "", "reply": "Hi"},
    {"author": "Mia", "reply": ""},
    {"author": "Mia", "reply": "Hi", "token": "not/a token"},
    {"author": "Mia", "reply": "Hi", "action": "delete"},
])
def test_a_bad_reply_form_stores_nothing_and_says_why(admin_client, post):
    conversation = waiting_conversation()
    form = {**reply_form(admin_client, conversation), **post}

    response = admin_client.post(reply_url(conversation), form, follow=True)

    assert response.status_code == 200
    assert list(response.context["messages"])
    assert not conversation.messages.filter(role="staff").exists()


def test_the_reply_box_needs_csrf_and_post(admin_user):
    conversation = waiting_conversation()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.post(reply_url(conversation), {"author": "Mia", "reply": "Hi", "token": "t", "seen": "0"}
                       ).status_code == 403
    assert client.get(reply_url(conversation)).status_code == 302
    assert not conversation.messages.filter(role="staff").exists()
