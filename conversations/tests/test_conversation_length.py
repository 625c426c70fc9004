"""A conversation's maximum length (CHAT_CONVERSATION_MAX_MESSAGES, turns.full): the customer's next
message once it is reached starts a new conversation, for JSON and streamed turns and the handoff
button alike; against the site served the Procfile's way on PostgreSQL, at the default of 1,000."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from conversations.models import Conversation, Handoff, Message

from . import data
from .client import SiteClient

pytestmark = pytest.mark.django_db(transaction=True)

MAX = 1000


@pytest.fixture
def nearly_full(live_site):
    """A conversation with room for exactly one more question and its reply."""
    assert settings.CHAT_CONVERSATION_MAX_MESSAGES == MAX  # what the served site runs with too
    return data.long_conversation(MAX - 2, question_chars=50, reply_chars=50)


def test_the_last_question_that_fits_is_answered_then_the_next_starts_a_new_conversation(live_site, nearly_full):
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)

    last = api.chat("One more question", old, "last-one").ok()
    assert (last["sessionId"], last["newSession"], last["previousConversationFull"]) == (old, False, False)

    following = api.chat("And another", old, "after-full").ok()

    assert following["newSession"] is True and following["previousConversationFull"] is True
    assert following["sessionId"] != old and isinstance(following["reply"], str)
    assert nearly_full.messages.count() == MAX  # kept as it was, for staff
    assert nearly_full.messages.order_by("-seq").first().seq == MAX - 1
    new = Conversation.objects.get(session_id=following["sessionId"])
    assert [m.content for m in new.messages.all()] == ["And another", following["reply"]]
    # The new id is the customer's now: it continues the new conversation.
    assert api.chat("Thanks", following["sessionId"]).ok()["newSession"] is False
    # The question that filled it, sent again (its answer lost), still gets its stored reply.
    again = api.chat("One more question", old, "last-one").ok()
    assert (again["sessionId"], again["reply"]) == (old, last["reply"])


def test_a_streamed_turn_says_so_in_its_first_and_last_event(live_site, nearly_full):
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)
    api.chat("One more question", old).ok()

    events = api.chat("And another", old, stream=True).events()

    (first, session), (last, done) = events[0], events[-1]
    assert first == "session" and session["previousConversationFull"] is True and session["newSession"] is True
    assert last == "done" and done["previousConversationFull"] is True and done["sessionId"] == session["sessionId"]
    assert session["sessionId"] != old
    assert nearly_full.messages.count() == MAX


def test_asking_for_a_person_in_a_full_conversation_waits_in_a_new_one(live_site, nearly_full):
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)
    api.chat("One more question", old).ok()

    asked = api.handoff_request(old).ok()

    assert asked["newSession"] is True and asked["previousConversationFull"] is True
    assert asked["sessionId"] != old and asked["handoff"] == Handoff.WAITING
    assert nearly_full.messages.count() == MAX
    assert Conversation.objects.get(session_id=old).handoff == Handoff.ASSISTANT


def test_messages_for_staff_in_a_full_conversation_start_a_new_one_too(live_site, nearly_full):
    """A person on the conversation does not lift the cap: what the customer writes to staff
    counts as much as a question to the assistant (one position each, no reply slot)."""
    Conversation.objects.filter(pk=nearly_full.pk).update(handoff=Handoff.STAFF)
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)

    kept = api.chat("Hello, anyone?", old).ok()
    moved = api.chat("Still there?", old).ok()

    assert (kept["sessionId"], kept["reply"]) == (old, None) and kept["handoff"] != Handoff.ASSISTANT
    assert moved["newSession"] is True and moved["previousConversationFull"] is True
    assert moved["sessionId"] != old and isinstance(moved["reply"], str)
    assert nearly_full.messages.count() == MAX - 1


def test_a_question_sent_ten_times_at_once_into_a_full_conversation_starts_one(live_site, nearly_full, llm):
    """The same question (one clientMessageId, not a UUID: an API client's own ids) sent at once
    by ten requests of the session whose conversation is full: one new conversation, one question
    stored, every answer naming the same new session. Before, each request started its own."""
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)
    api.chat("One more question", old).ok()
    llm.control("ok", delay=0.5)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: api.chat("Only once", old, "order-7"), range(10)))

    assert {r.status for r in results} <= {200, 409}, [(r.status, r.body) for r in results]
    answered = [r.body for r in results if r.status == 200]
    assert answered and {body["sessionId"] for body in answered} == {answered[0]["sessionId"]}
    assert all(body["previousConversationFull"] for body in answered)
    assert Message.objects.filter(content="Only once").count() == 1
    assert Conversation.objects.count() == 2
    for refused in (r for r in results if r.status == 409):
        assert refused.body["error"]["code"] == "turn_in_progress"


def test_the_question_that_started_a_new_conversation_sent_again_gets_its_reply(live_site, nearly_full, llm):
    """Its answer, with the new session's id, lost on the way: the client sends it again under the
    full conversation's id and gets the same answer, from the conversation it started."""
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)
    api.chat("One more question", old).ok()
    first = api.chat("Where is my parcel?", old, "parcel").ok()
    calls = len(llm.requests())

    again = api.chat("Where is my parcel?", old, "parcel").ok()

    assert (again["sessionId"], again["reply"]) == (first["sessionId"], first["reply"])
    assert again["newSession"] is True and again["previousConversationFull"] is True
    assert len(llm.requests()) == calls  # the stored reply, not a second answer
    assert Message.objects.filter(content="Where is my parcel?").count() == 1
    # Another device of the full conversation, the same id: its own new conversation, not this one.
    other = nearly_full.sessions.create(session_id=uuid.uuid4(), label="phone").session_id
    elsewhere = api.chat("Where is my parcel?", str(other), "parcel").ok()
    assert elsewhere["sessionId"] not in (old, first["sessionId"], str(other))


def test_the_button_pressed_again_in_a_full_conversation_waits_in_one_new_one(live_site, nearly_full):
    api = SiteClient(live_site)
    old = str(nearly_full.session_id)
    api.chat("One more question", old).ok()

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: api.handoff_request(old), range(5)))

    assert {r.status for r in results} == {200}, [(r.status, r.body) for r in results]
    assert len({r.body["sessionId"] for r in results}) == 1
    assert Conversation.objects.filter(handoff=Handoff.WAITING).count() == 1
