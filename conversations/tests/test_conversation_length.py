"""A conversation's maximum length (CHAT_CONVERSATION_MAX_MESSAGES, turns.full): the customer's next
message once it is reached starts a new conversation, for JSON and streamed turns and the handoff
button alike; against the site served the Procfile's way on PostgreSQL, at the default of 1,000."""

import pytest
from django.conf import settings

from conversations.models import Conversation, Handoff

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
