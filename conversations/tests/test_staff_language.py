"""Staff and the customer's language: shown in the queue, the conversation list, the live view and
chat_queue; the LLM's summary for staff written in the staff member's admin language."""

import io

import pytest
from django.core.management import call_command

from conversations import summary
from conversations.models import Conversation

from .test_inbox import QUEUE, answering_staff, live, waiting

pytestmark = pytest.mark.django_db(transaction=True)


def german_waiting(**kwargs) -> Conversation:
    conversation = waiting(**kwargs)
    Conversation.objects.filter(pk=conversation.pk).update(language="de")
    conversation.refresh_from_db()
    return conversation


def test_staff_see_the_customers_language_in_the_queue_and_the_conversation_list(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    german_waiting()
    staff = answering_staff()
    for page in (QUEUE, "/admin/conversations/conversation/"):
        html = staff.get(page).content.decode()
        assert '<span class="language-badge" lang="de" title="German">DE</span>' in html, page
    filtered = staff.get("/admin/conversations/conversation/?language=fr").content.decode()
    assert 'lang="de"' not in filtered
    # Named in the staff member's own admin language.
    html = staff.get(QUEUE, headers={"Accept-Language": "de"}).content.decode()
    assert 'title="Deutsch">DE</span>' in html


def test_the_live_view_says_which_language_to_write_in_and_that_replies_are_not_translated(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    settings.OPENAI_API_KEY = ""
    conversation = german_waiting()
    page = answering_staff().get(live(conversation)).content.decode()
    assert 'data-language="de"' in page
    assert "Writes in <strong>German</strong>: your replies are sent as you write them, not translated." in page
    found = answering_staff(username="other").get(live(conversation, "updates/") + "?after=99&wait=0").json()
    assert (found["language"], found["languageName"]) == ("de", "German")


def test_the_llms_summary_is_written_in_the_staff_members_admin_language(llm, settings):
    settings.CHAT_HANDOFF_EMAILS = []
    llm.control("ok", reply="Der Kunde möchte eine Erstattung.")
    conversation = Conversation.objects.get(pk=waiting(turns=2).pk)  # the customer wrote in English
    summary.forget_asked()

    answering_staff().get(live(conversation), headers={"Accept-Language": "de"})  # a German admin
    summary.flush()

    asked = " ".join(m["content"] for m in llm.requests()[-1]["messages"] if m["role"] == "system")
    assert "Write it in German, whatever language the customer writes in." in asked
    conversation.refresh_from_db()
    assert (conversation.staff_summary, conversation.staff_summary_language) == ("Der Kunde möchte eine Erstattung.", "de")

    # A colleague whose admin is in English gets it written again in English.
    llm.control("ok", reply="The customer wants a refund.")
    answering_staff(username="colleague").get(live(conversation), headers={"Accept-Language": "en"})
    summary.flush()
    asked = " ".join(m["content"] for m in llm.requests()[-1]["messages"] if m["role"] == "system")
    assert "Write it in English" in asked
    conversation.refresh_from_db()
    assert (conversation.staff_summary, conversation.staff_summary_language) == ("The customer wants a refund.", "en")


def test_chat_queue_and_chat_show_name_the_language(settings):
    settings.CHAT_HANDOFF_EMAILS = []
    conversation = german_waiting()
    out = io.StringIO()
    call_command("chat_queue", stdout=out)
    header, row = out.getvalue().splitlines()[:2]
    column = header.index("LANGUAGE")
    assert header.split()[:5] == ["REFERENCE", "STATE", "WAITING", "FOR", "LANGUAGE"]
    assert row.startswith(conversation.reference) and row[column:].split()[0] == "de"
    out = io.StringIO()
    call_command("chat_show", conversation.reference, stdout=out)
    assert out.getvalue().splitlines()[2] == "The customer writes in German (de)"


def test_handing_back_and_closing_tell_the_customer_in_their_language_not_the_staffs(settings):
    from django.contrib.auth.models import User

    from conversations import handoff

    settings.CHAT_HANDOFF_EMAILS = []
    conversation = german_waiting()
    mia = User.objects.create_user("mia-de", is_staff=True)
    handoff.staff_reply(conversation.pk, mia, "Mia", "Hallo!", "t1")

    handed_back = handoff.hand_back(conversation.pk, mia, "Mia")  # from an English admin

    assert handed_back.content == "Mia hat Sie wieder an den Assistenten übergeben. Der Assistent antwortet wieder."
    handoff.request_person(conversation.pk)
    closed = handoff.hand_back(conversation.pk, mia, "Mia", close=True)
    assert closed.content == "Mia hat die Unterhaltung geschlossen. Der Assistent antwortet wieder."
