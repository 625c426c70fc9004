"""What staff tools must hold to whatever is in the database or typed on the command line:
text others wrote reaches a terminal escaped, a junk id or an odd permission set is
refused cleanly, out-of-range numbers are errors, and big exports and conversations
are read a piece at a time."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations.models import Conversation, Handoff, Message

from . import data

pytestmark = pytest.mark.django_db

# Starts a terminal escape, rewrites the window title, clears the screen, swaps
# the direction of text; a newline in a one-line field would start a fake line.
HOSTILE = "Mia\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\nAssistant: refund approved"
RAW_CONTROLS = ["\x1b", "\x07", "\x9b", "\u202e"]


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def raw_controls(text: str) -> list[str]:
    return [c for c in RAW_CONTROLS if c in text]


def hostile_conversation() -> Conversation:
    """A conversation where the customer, a staff member's display name, the model's
    name and a role from the database all hold control characters."""
    conversation = data.conversation()
    Conversation.objects.filter(pk=conversation.pk).update(
        handoff=Handoff.STAFF, waiting_since=timezone.now() - timedelta(minutes=3),
    )
    conversation.messages.create(seq=2, role=Message.Role.STAFF, author=HOSTILE, content="Hello")
    conversation.messages.create(seq=3, role=Message.Role.ASSISTANT, content="Hi", model=HOSTILE,
                                 latency_ms=5)
    conversation.messages.create(seq=4, role="x\x1b[2J\u202e\nStaff", content="?")  # 16 at most
    conversation.messages.create(seq=5, role=Message.Role.USER, content=HOSTILE)
    return conversation


# --- 1. terminals --------------------------------------------------------------

def test_chat_queue_shows_the_customers_message_escaped():
    hostile_conversation()

    out = run("chat_queue")

    assert not raw_controls(out), out
    assert "Mia\\x1b]0;pwned\\x07" in out
    assert "Assistant: refund approved" not in out.splitlines()  # not a line of its own


def test_chat_show_shows_names_models_and_roles_escaped_on_one_line():
    conversation = hostile_conversation()

    out = run("chat_show", conversation.reference)

    assert not raw_controls(out), out
    assert "Staff (Mia\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\x0aAssistant: refund approved):" in out
    assert "Assistant (Mia\\x1b]0;pwned\\x07" in out and "x\\x1b[2J\\u202e\\x0aStaff:" in out
    # Only a message's own text spans lines, indented under its heading.
    assert not [line for line in out.splitlines() if line.startswith("Assistant: refund approved")]


def test_chat_export_leaves_no_terminal_control_raw_and_loses_nothing():
    conversation = hostile_conversation()

    out = run("chat_export")

    assert not raw_controls(out), repr(out)
    assert "\\u001b]0;pwned\\u0007" in out and "\\u009b31m\\u202eevil" in out
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["reference"] == conversation.reference
    assert [m["content"] for m in record["messages"]][-1] == HOSTILE  # JSON escapes: nothing lost
    assert record["messages"][2]["author"] == HOSTILE


# --- 3. numbers and dates past what a datetime holds ------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["chat_purge", "--older-than", "3000000"], "at most 36500 days"),
    (["chat_purge", "--older-than", "36501", "--dry-run"], "at most 36500 days"),
    (["chat_purge", "--older-than", "99999999999999999999999"], "at most 36500 days"),
    (["chat_stats", "--days", "99999999"], "at most 36500 days"),
    (["chat_stats", "--days", "36501"], "at most 36500 days"),
    (["chat_export", "--until", "9999-12-31"], "--until 9999-12-31 is too far"),
    (["chat_export", "--since", "2026-01-01", "--until", "9999-12-31"], "--until 9999-12-31 is too far"),
])
def test_commands_refuse_days_and_dates_a_datetime_cannot_hold(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_chat_export_refuses_a_since_that_is_before_the_first_datetime_in_utc(settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # its midnight of 0001-01-01 is a day before, in UTC
    with pytest.raises(CommandError, match="--since 0001-01-01 is too far"):
        run("chat_export", "--since", "0001-01-01")
    assert run("chat_export", "--since", "0001-01-02") == ""


def test_chat_purge_refuses_a_retention_setting_a_datetime_cannot_hold(settings):
    settings.CHAT_RETENTION_DAYS = 3000000
    with pytest.raises(CommandError, match=r"CHAT_RETENTION_DAYS must be at least 1 and at most 36500 \(it is 3000000\)"):
        run("chat_purge", "--dry-run")


def test_the_longest_spans_still_work():
    data.conversation()
    assert run("chat_purge", "--older-than", "36500", "--dry-run").startswith("Would delete 0 conversations")
    assert len(run("chat_stats", "--days", "36500").splitlines()) == 36500 + 3
    assert len(run("chat_export", "--since", "1900-01-01", "--until", "9999-12-30").splitlines()) == 1


# --- 2. the admin's reply view: permissions first, junk ids are 404 ---------------

CHANGELIST = "/admin/conversations/conversation/"
JUNK_IDS = ["abc", "1.5", "%00", "1/2", "99999999999999999999999", "-1", "%20"]


def staff_with(client, django_user_model, *codenames):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("helper", password="pw-staff-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


def reply_form_data(**changes) -> dict:
    return {"author": "Mia", "reply": "Hello", "token": "t1", "seen": "-1", **changes}


def test_staff_without_permissions_get_403_for_any_id(client, django_user_model):
    staff_with(client, django_user_model)
    conversation = data.conversation()
    for junk in [*JUNK_IDS, str(conversation.pk)]:
        for method in (client.get, client.post):
            assert method(f"{CHANGELIST}{junk}/reply/", reply_form_data()).status_code == 403, junk


def test_a_junk_id_is_404_for_who_may_reply(admin_client):
    for junk in JUNK_IDS:
        for method in (admin_client.get, admin_client.post):
            assert method(f"{CHANGELIST}{junk}/reply/", reply_form_data()).status_code == 404, junk


@pytest.mark.parametrize(("codenames", "status"), [
    ((), 403),
    (("reply_conversation",), 403),  # cannot answer what they may not read
    (("view_conversation",), 403),
    (("view_conversation", "reply_conversation"), 302),
])
@pytest.mark.parametrize("action", ["reply", "hand_back", "close"])
def test_replying_needs_both_the_view_and_the_reply_permission(client, django_user_model, codenames, status,
                                                                action):
    conversation = data.conversation()
    staff_with(client, django_user_model, *codenames)
    url = f"{CHANGELIST}{conversation.pk}/reply/"

    response = client.post(url, reply_form_data(action=action))

    assert response.status_code == status
    if status == 403:
        assert not conversation.messages.filter(role__in=["staff", "event"]).exists()
    assert client.get(url).status_code == status
    if status == 403:  # nor is a reply box shown, where the page may be seen at all
        page = client.get(f"{CHANGELIST}{conversation.pk}/change/")
        assert page.status_code == 403 or page.context.get("reply_form") is None


def test_a_superuser_can_reply(admin_client):
    conversation = data.conversation()
    response = admin_client.post(f"{CHANGELIST}{conversation.pk}/reply/", reply_form_data())
    assert response.status_code == 302
    assert conversation.messages.get(role="staff").content == "Hello"


# --- 4. exports are streamed ----------------------------------------------------------

def export_selected(client, conversations):
    return client.post(CHANGELIST, {
        "action": "export_jsonl", "_selected_action": [c.pk for c in conversations],
    })


def test_the_export_action_streams_the_lines_as_they_are_read(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    chosen = data.conversations(3, turns=2)
    data.conversation()  # not selected

    with CaptureQueriesContext(connection) as queries:
        response = export_selected(admin_client, chosen)
        read_before_streaming = [q for q in queries if 'FROM "conversations_message"' in q["sql"]]
    assert response.status_code == 200 and response.streaming
    assert not read_before_streaming  # nothing is read until the response is sent
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [json.loads(line)["reference"] for line in lines] == [c.reference for c in chosen]
    assert len(json.loads(lines[0])["messages"]) == 4


def test_the_export_action_streams_asynchronously_under_asgi(admin_user, monkeypatch):
    """Under ASGI (production), a sync iterator would be read whole into a list by
    Django before the first byte went out: the action gives it an async one."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from conversations import admin

    monkeypatch.setattr(admin, "EXPORT_BATCH", 2)
    chosen = data.conversations(5, turns=1)
    client = AsyncClient()
    client.force_login(admin_user)

    async def export():
        response = await export_selected(client, chosen)
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = async_to_sync(export)()

    assert response.status_code == 200 and response.streaming and response.is_async
    assert len(chunks) == 3  # two lines, two lines, one line
    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line)["reference"] for line in lines] == [c.reference for c in chosen]


def test_chat_export_writes_each_line_as_soon_as_it_is_made(monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.management.commands import chat_export

    monkeypatch.setattr(chat_export, "CHUNK_SIZE", 1)
    data.conversations(3)

    class Out(io.StringIO):
        """Notes, at each line written, how many chunks of messages had been read."""
        def write(self, text):
            chunks_read.append(sum('FROM "conversations_message"' in q["sql"] for q in queries))
            return super().write(text)

    chunks_read: list[int] = []
    with CaptureQueriesContext(connection) as queries:
        call_command("chat_export", stdout=Out(), stderr=io.StringIO())

    assert chunks_read == [1, 2, 3]


# --- 5. a long conversation's admin page shows a page of its messages -------------------

def long_conversation(messages: int) -> Conversation:
    conversation = data.conversation(turns=0)
    Message.objects.bulk_create(
        Message(conversation=conversation, seq=seq, role=Message.Role.USER, content=f"Message number {seq}.")
        for seq in range(messages)
    )
    return conversation


def shown(response) -> list[int]:
    (formset,) = [f for f in response.context["inline_admin_formsets"] if f.opts.model is Message]
    return [form.instance.seq for form in formset.formset.forms]


def test_the_conversation_page_shows_a_page_of_messages_in_constant_queries(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.admin import MESSAGES_PER_PAGE

    queries_for = {}
    for messages in (10, 1000):
        conversation = long_conversation(messages)
        url = f"{CHANGELIST}{conversation.pk}/change/"
        admin_client.get(url)  # the session and user are loaded once per request anyway

        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(url)

        assert response.status_code == 200
        assert shown(response) == list(range(max(0, messages - MESSAGES_PER_PAGE), messages))
        assert f"Message number {messages - 1}." in response.content.decode()
        queries_for[messages] = len(queries)
        assert len(queries) <= 16, "\n".join(q["sql"][:150] for q in queries)
    # The same queries for 10 messages as for 1,000.
    assert queries_for[10] == queries_for[1000], queries_for


def test_older_messages_are_a_link_away(admin_client):
    conversation = long_conversation(450)
    url = f"{CHANGELIST}{conversation.pk}/change/"

    newest = admin_client.get(url)
    assert "Message number 249." not in newest.content.decode()
    assert "Messages 251–450 of 450 (the newest)." in newest.content.decode()
    assert 'href="?messages=2"' in newest.content.decode()

    older = admin_client.get(url, {"messages": 2})
    assert shown(older) == list(range(50, 250))
    assert "Messages 51–250 of 450." in older.content.decode()
    oldest = admin_client.get(url, {"messages": 3})
    assert shown(oldest) == list(range(50))
    assert 'href="?messages=2"' in oldest.content.decode() and 'href="?messages=1"' in oldest.content.decode()
    assert shown(admin_client.get(url, {"messages": "junk"})) == list(range(250, 450))
    assert shown(admin_client.get(url, {"messages": "99"})) == list(range(50))
    # The reply box still knows the newest message, whichever page is shown.
    assert older.context["reply_form"]["seen"].value() == 449
