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
from conversations.models import Conversation, Message

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
    assert str(older.session_id) in page and "gpt-4o-mini" in page


@pytest.mark.parametrize("rows", [10, 1000])
def test_the_list_runs_a_constant_number_of_queries(admin_client, monkeypatch, rows):
    data.conversations(rows, turns=2)
    monkeypatch.setattr(ConversationAdmin, "list_per_page", 1000)  # every row on one page
    admin_client.get(CHANGELIST)  # the session and user are loaded once per request anyway

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(CHANGELIST)

    assert len(listed(response)) == rows
    # Session, user, count, the page with its message counts and models: the
    # same for 10 rows as for 1,000.
    assert len(queries) == 4, "\n".join(q["sql"][:150] for q in queries)


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
    assert "<textarea" not in page and 'name="messages-0-content"' not in page
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
    lines = response.content.decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["sessionId"] for r in records] == [str(first.session_id), str(third.session_id)]
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


def test_admin_keeps_csrf_protection(admin_user):
    conversation = data.conversation()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    response = client.post(f"{CHANGELIST}{conversation.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Conversation.objects.count() == 1
