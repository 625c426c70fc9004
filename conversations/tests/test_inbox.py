"""The support inbox's staff side through Django's test client: the live view, its JSON endpoints
(who may use them, what junk gets), staff profiles, saved replies, the queue's filter, the summary."""

import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from conversations import handoff, limits, summary
from conversations.models import Conversation, Handoff, Message, SavedReply, StaffProfile
from conversations.shared_state import Gateway

from . import data

# The endpoints read in worker threads (conversations/db.py): what a test writes must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/admin/conversations/conversation/"
COUNT = f"{BASE}waiting-count/"
QUEUE = "/admin/conversations/waitingconversation/"
PROFILE = "/admin/conversations/staffprofile/mine/"


def live(conversation, part: str = "") -> str:
    return f"{BASE}{conversation.pk}/live/{part}"


def staff_client(*codenames: str, name: str = "", username: str = "support", is_staff: bool = True) -> Client:
    user = User.objects.create_user(username, password="a-long-test-password", is_staff=is_staff)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    if name:
        StaffProfile.set_name(user, name)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


def answering_staff(name: str = "Mia", username: str = "support") -> Client:
    return staff_client("view_conversation", "reply_conversation", name=name, username=username)


def waiting(minutes_ago: float = 0, turns: int = 1) -> Conversation:
    conversation = data.conversation(turns=turns)
    handoff.request_person(conversation.pk)
    Conversation.objects.filter(pk=conversation.pk).update(waiting_since=timezone.now() - timedelta(minutes=minutes_ago))
    conversation.refresh_from_db()
    return conversation


def csrf(client: Client, conversation) -> str:
    client.get(live(conversation))
    return client.cookies["csrftoken"].value


def send(client: Client, conversation, **fields) -> dict:
    response = client.post(live(conversation, "send/"), {"action": "reply", "token": "t1", **fields},
                           HTTP_X_CSRFTOKEN=csrf(client, conversation))
    return {"status": response.status_code, **response.json()}


def error_code(response) -> str:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]["code"]


# --- who may use the staff endpoints ----------------------------------------------


def test_the_staff_endpoints_answer_json_to_whoever_may_not_use_them(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    anonymous = Client()
    cannot_read = staff_client(username="no-perms")
    not_staff = staff_client("view_conversation", "reply_conversation", username="customer", is_staff=False)
    reader = staff_client("view_conversation", username="reader", name="Jo")

    for url in [COUNT, live(conversation, "updates/?after=-1")]:
        assert error_code(anonymous.get(url)) == "not_logged_in"
        assert anonymous.get(url).status_code == 401
        for client in (cannot_read, not_staff):
            response = client.get(url)
            assert (response.status_code, error_code(response)) == (403, "forbidden")
    # Sending needs "Can answer customers" too; the id is not even looked at first.
    for client in (anonymous, cannot_read, not_staff, reader):
        response = client.post(live(conversation, "send/"), {"action": "reply", "reply": "Hi", "token": "t1"})
        assert response.status_code in (401, 403) and error_code(response) in ("not_logged_in", "forbidden")
    assert reader.post(f"{BASE}999999/live/send/").status_code == 403
    # The page itself: admin's login for the anonymous, 403 without the view permission.
    assert anonymous.get(live(conversation)).status_code == 302
    assert cannot_read.get(live(conversation)).status_code == 403
    assert not conversation.messages.filter(role=Message.Role.STAFF).exists()


@pytest.mark.parametrize("query, code", [
    ("", "invalid_after"), ("?after=x", "invalid_after"), ("?after=-2", "invalid_after"),
    ("?after=99999999999", "invalid_after"), ("?after=0&state=nobody", "invalid_state"),
])
def test_junk_to_the_live_poll_is_a_json_error(query, code):
    conversation = data.conversation()
    response = staff_client("view_conversation").get(live(conversation, f"updates/{query}"))
    assert (response.status_code, error_code(response)) == (400, code)


@pytest.mark.parametrize("object_id", ["999999", "abc", "1.5", "-1", "1%2F2", "9" * 30])
def test_no_such_conversation_is_a_json_404(object_id):
    reader = answering_staff()
    response = reader.get(f"{BASE}{object_id}/live/updates/?after=-1")
    assert (response.status_code, error_code(response)) == (404, "not_found")
    client_csrf = csrf(reader, data.conversation())
    response = reader.post(f"{BASE}{object_id}/live/send/", {"action": "reply", "reply": "Hi", "token": "t1"},
                           HTTP_X_CSRFTOKEN=client_csrf)
    assert (response.status_code, error_code(response)) == (404, "not_found")


def test_the_count_of_waiting_customers(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    reader = staff_client("view_conversation")
    assert reader.get(COUNT).json() == {"waiting": 0, "oldestWaitingSince": None, "newest": None}
    oldest = waiting(minutes_ago=30)
    newest = waiting(minutes_ago=1)
    found = reader.get(COUNT).json()
    assert found["waiting"] == 2
    assert found["newest"]["id"] == newest.pk and found["newest"]["url"] == live(newest)
    assert found["oldestWaitingSince"] == oldest.waiting_since.isoformat()
    assert reader.post(COUNT).status_code == 405
    assert error_code(reader.post(live(oldest, "updates/?after=-1"))) == "method_not_allowed"
    # Every staff page shows it in the header, with "Your profile".
    page = reader.get("/admin/").content.decode()
    assert 'id="staff-waiting"' in page and 'class="staff-waiting-count" aria-live="polite">2<' in page
    assert PROFILE in page


# --- the live view and its poll --------------------------------------------------------


def test_the_live_view_reads_like_a_chat_with_the_summary_on_top(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting(turns=2)
    page = answering_staff().get(live(conversation)).content.decode()
    assert page.index('id="summary-title"') < page.index('id="transcript"') < page.index('id="reply-box"')
    assert page.count('class="msg msg-user"') == 2 and page.count('class="msg msg-assistant"') == 2
    assert 'class="msg msg-event"' in page  # the handoff's notice, told apart
    assert "Hand back to the assistant" in page and "Close the conversation" in page
    assert "Delete" not in page  # deleting is on the details page, far from these
    assert 'action="/admin/conversations/conversation/' in page and "<script>" not in page  # no inline script


def test_the_live_poll_answers_new_messages_and_state_at_once_and_waits_otherwise(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    settings.CHAT_UPDATES_WAIT = 0.5
    conversation = waiting()
    last = conversation.messages.order_by("-seq").first().seq
    reader = staff_client("view_conversation")

    found = reader.get(live(conversation, "updates/?after=0")).json()
    assert [m["seq"] for m in found["messages"]] == list(range(1, last + 1))
    assert found["handoff"] == Handoff.WAITING and found["summary"]["customer"] == ["Question 1?"]
    assert found["summary"]["answers"] == ["Answer 1."]

    started = time.monotonic()
    found = reader.get(live(conversation, f"updates/?after={last}&state=waiting")).json()
    assert found["messages"] == [] and time.monotonic() - started >= 0.4  # it waited
    found = reader.get(live(conversation, f"updates/?after={last}&state=staff")).json()
    assert found["handoff"] == "waiting"  # another state than the page's: at once


# --- sending from the live view ----------------------------------------------------------


def test_a_reply_is_signed_with_the_senders_profile_and_stored_once(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    mia = answering_staff("Mia")

    assert send(mia, conversation, reply="Hello, Mia here.")["sent"] is True
    assert send(mia, conversation, reply="Hello, Mia here.")["sent"] is False  # the same token
    replies = list(conversation.messages.filter(role=Message.Role.STAFF))
    assert [(r.author, r.content, r.sent_by) for r in replies] == [("Mia", "Hello, Mia here.", mia.user)]
    conversation.refresh_from_db()
    assert conversation.handoff == Handoff.STAFF and conversation.waiting_since is None


def test_no_name_is_carried_over_from_someone_elses_reply(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    assert send(answering_staff("Mia"), conversation, reply="Mia here.")["sent"]
    jo = answering_staff("", username="jo")
    found = send(jo, conversation, reply="Who am I?", token="t2")
    assert (found["status"], found["error"]["code"]) == (409, "no_display_name")
    assert 'choose your name for customers' in jo.get(live(conversation)).content.decode()
    StaffProfile.set_name(jo.user, "Jo")
    assert send(jo, conversation, reply="Jo here.", token="t3")["sent"]
    assert list(conversation.messages.filter(role="staff").values_list("author", flat=True)) == ["Mia", "Jo"]


@pytest.mark.parametrize("fields, code", [
    ({"action": "delete"}, "invalid_action"),
    ({"reply": "   "}, "empty_reply"),
    ({"reply": "x" * 4001}, "invalid_reply"),
    ({"reply": "a\x00b"}, "invalid_reply"),
    ({"reply": "Hi", "token": "not/a token"}, "invalid_token"),
    ({"reply": "Hi", "token": ""}, "invalid_token"),
])
def test_junk_to_send_is_a_json_error_and_stores_nothing(fields, code, settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    found = send(answering_staff(), conversation, **fields)
    assert (found["status"], found["error"]["code"]) == (400, code)
    assert not conversation.messages.filter(role=Message.Role.STAFF).exists()


def test_send_without_the_csrf_token_is_refused_in_json(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    response = answering_staff().post(live(conversation, "send/"), {"action": "reply", "reply": "Hi", "token": "t1"})
    assert (response.status_code, error_code(response)) == (403, "csrf_failed")
    assert not conversation.messages.filter(role=Message.Role.STAFF).exists()


def test_hand_back_and_close_from_the_live_view(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    mia = answering_staff()
    assert send(mia, conversation, action="hand_back")["changed"] is True
    assert send(mia, conversation, action="close")["changed"] is False  # the assistant has it already
    conversation.refresh_from_db()
    assert conversation.handoff == Handoff.ASSISTANT
    assert conversation.messages.order_by("-seq").first().content.startswith("Mia handed you back")


def test_a_busy_database_keeps_the_reply_unsent_with_a_json_answer(settings, monkeypatch):
    from django.db import OperationalError

    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()

    def busy(*args, **kwargs):
        raise OperationalError("canceling statement due to lock timeout")

    monkeypatch.setattr(handoff, "staff_reply", busy)
    found = send(answering_staff(), conversation, reply="Hi")
    assert (found["status"], found["error"]["code"]) == (503, "conversation_busy")


# --- profiles, saved replies, the queue ------------------------------------------------------


def test_each_staff_member_edits_their_own_profile():
    jo = staff_client("view_conversation", username="jo")
    token = jo.get(PROFILE).cookies["csrftoken"].value if "csrftoken" in jo.get(PROFILE).cookies else None
    token = token or jo.cookies["csrftoken"].value
    response = jo.post(PROFILE, {"display_name": "  "}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and "Choose the name customers see" in response.content.decode()
    response = jo.post(PROFILE, {"display_name": " Jo "}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302
    assert StaffProfile.name_of(jo.user) == "Jo"
    assert StaffProfile.objects.count() == 1


def test_saved_replies_are_offered_numbered_in_the_live_view(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    SavedReply.objects.create(title="Refund", text="We refund within 14 days.", position=1)
    SavedReply.objects.create(title="Apology", text="I'm sorry for the wait.", position=0)
    conversation = waiting()
    page = answering_staff().get(live(conversation)).content.decode()
    assert page.index("<kbd>Alt+1</kbd> Apology") < page.index("<kbd>Alt+2</kbd> Refund")
    assert 'id="saved-replies" type="application/json"' in page and "We refund within 14 days." in page
    # Who may only read gets no reply box and no saved replies.
    page = staff_client("view_conversation", username="reader").get(live(conversation)).content.decode()
    assert 'id="reply-box"' not in page and "We refund" not in page


def listed(response) -> list[str]:
    return [row.split("</a>")[0].rsplit(">", 1)[-1] for row in
            response.content.decode().split('<td class="field-conversation">')[1:]]


def test_the_queue_filters_waiting_answered_and_closed(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    recent, oldest = waiting(minutes_ago=1), waiting(minutes_ago=40)
    answered, closed = waiting(minutes_ago=5), waiting(minutes_ago=6)
    handoff.staff_reply(answered.pk, None, "Mia", "Hi", "t1")
    handoff.hand_back(closed.pk, None, "Mia", close=True)
    data.conversation()  # never asked for a person
    reader = staff_client("view_conversation")

    assert listed(reader.get(QUEUE)) == [oldest.reference, recent.reference, answered.reference]
    assert listed(reader.get(QUEUE, {"status": "waiting"})) == [oldest.reference, recent.reference]
    assert listed(reader.get(QUEUE, {"status": "answered"})) == [answered.reference]
    assert listed(reader.get(QUEUE, {"status": "closed"})) == [closed.reference]


# --- the summary ---------------------------------------------------------------------------


def test_the_summary_is_the_llms_once_per_waiting_episode_and_counts_against_the_site(llm, settings):
    settings.CHAT_HANDOFF_EMAILS = []
    llm.control("ok", reply="The customer wants a refund for a late parcel.")
    conversation = waiting(turns=2)
    summary.forget_asked()
    spent_before = site_tokens_spent()

    first = summary.for_staff(conversation)
    assert first.pending and first.text == "" and first.customer == ["Question 1?", "Question 2?"]
    summary.flush()
    conversation.refresh_from_db()
    assert conversation.staff_summary == "The customer wants a refund for a late parcel."
    assert conversation.staff_summary_for == conversation.waiting_since
    again = summary.for_staff(conversation)
    assert (again.text, again.pending) == ("The customer wants a refund for a late parcel.", False)
    assert len(llm.requests()) == 1  # once per episode

    # The customer writes again after a staff reply: a new episode, a new summary; the last one
    # stays on screen meanwhile.
    handoff.staff_reply(conversation.pk, None, "Mia", "Hi", "t1")
    Conversation.objects.filter(pk=conversation.pk).update(waiting_since=timezone.now())
    conversation.refresh_from_db()
    llm.control("ok", reply="Now they ask about the refund's date.")
    meanwhile = summary.for_staff(conversation)
    assert meanwhile.pending and meanwhile.text == "The customer wants a refund for a late parcel."
    summary.flush()
    assert summary.for_staff(Conversation.objects.get(pk=conversation.pk)).text == "Now they ask about the refund's date."
    asked = llm.requests()[0]["messages"][-1]["content"]
    assert "Customer: Question 2?" in asked and "Assistant: Answer 1." in asked
    # Its own instructions only: not the shop assistant's prompt and knowledge besides.
    assert [m["role"] for m in llm.requests()[0]["messages"]] == ["system", "user"]
    assert llm.requests()[0]["messages"][0]["content"] == summary.prompt("en")
    assert site_tokens_spent() > spent_before
    assert len(llm.requests()) == 2


def test_the_summary_is_plain_text_whatever_markup_the_llm_writes(llm, settings):
    """Staff read the summary as text: the model is asked for plain text, and the emphasis and
    heading or list marks it writes out of habit are taken out (a '*' inside a sentence stays)."""
    settings.CHAT_HANDOFF_EMAILS = []
    llm.control("ok", reply="## Summary\n- The customer wants a **refund** for order __1234__.\n* Open: 2*3 days late.")
    conversation = waiting(turns=1)
    summary.forget_asked()

    summary.for_staff(conversation)
    summary.flush()

    conversation.refresh_from_db()
    assert conversation.staff_summary == "Summary The customer wants a refund for order 1234. Open: 2*3 days late."
    assert any("Plain text: no Markdown" in message["content"]
               for asked in llm.requests() for message in asked["messages"])


def site_tokens_spent() -> int:
    [spent] = async_to_sync(Gateway().round_trip)(reads=[limits.budget_keys(None, "")[2]])
    return spent or 0


def test_no_llm_summary_over_the_sites_budget_or_when_it_fails(llm, settings):
    settings.CHAT_HANDOFF_EMAILS = []
    settings.CHAT_DAILY_TOKENS_SITE = 1
    limits.spend(data.conversation().session_id, 5)
    conversation = waiting()
    summary.forget_asked()
    summary.for_staff(conversation)
    summary.flush()
    assert llm.requests() == []

    settings.CHAT_DAILY_TOKENS_SITE = 0
    llm.control("status", status=500)
    summary.forget_asked()
    found = summary.for_staff(conversation)
    summary.flush()
    conversation.refresh_from_db()
    assert conversation.staff_summary == "" and found.customer == ["Question 1?"]


def test_without_an_llm_the_summary_is_the_customers_own_messages(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    settings.OPENAI_API_KEY = ""
    conversation = waiting(turns=3)
    found = summary.for_staff(conversation)
    assert (found.text, found.pending) == ("", False)
    assert found.customer == ["Question 1?", "Question 2?", "Question 3?"]
    assert found.answers == ["Answer 1.", "Answer 2.", "Answer 3."]


# --- dependencies failing ---------------------------------------------------------------------


def test_with_redis_stopped_the_live_view_still_follows_and_sends(own_redis, settings):
    settings.CHAT_HANDOFF_EMAILS = []
    settings.CHAT_UPDATES_WAIT = 10
    conversation = waiting()
    last = conversation.messages.order_by("-seq").first().seq
    own_redis.stop()
    reader = staff_client("view_conversation", username="reader")
    answered: dict = {}

    def poll():
        started = time.monotonic()
        answered["found"] = reader.get(live(conversation, f"updates/?after={last}&state=waiting")).json()
        answered["waited"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    assert send(answering_staff(), conversation, reply="Sent with Redis down.")["sent"]
    thread.join(20)
    assert [m["content"] for m in answered["found"]["messages"]] == ["Sent with Redis down."]
    assert answered["waited"] < 9  # woken through the database, not by the poll's end
    assert reader.get(COUNT).json()["waiting"] == 0


def test_a_database_that_does_not_answer_is_a_json_503(settings, monkeypatch):
    from django.db import OperationalError

    from conversations import db, models

    settings.CHAT_HANDOFF_EMAILS = []
    conversation = waiting()
    reader = staff_client("view_conversation")

    def fails(*args, **kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(models.ConversationQuerySet, "aggregate", fails)
    response = reader.get(COUNT)
    assert (response.status_code, error_code(response)) == (503, "database_unavailable")
    monkeypatch.setattr(db, "_run", fails)
    response = reader.get(live(conversation, "updates/?after=-1"))
    assert (response.status_code, error_code(response)) == (503, "database_unavailable")


def test_the_headers_count_costs_the_same_for_one_waiting_customer_as_for_fifty(settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.CHAT_HANDOFF_EMAILS = []
    reader = staff_client("view_conversation")
    counted = []
    for customers in (1, 50):
        while Conversation.objects.waiting().count() < customers:
            waiting()
        reader.get(COUNT)
        with CaptureQueriesContext(connection) as queries:
            assert reader.get(COUNT).json()["waiting"] == customers
        counted.append(len(queries))
    # Session, user, the user's and their groups' permissions, the count, the newest.
    assert counted == [6, 6], counted
